"""Tools agents can call: what a tool is (base), which exist (catalog: built-ins and
plugins), calling them (registry), and the tools that ship with flowengine."""
