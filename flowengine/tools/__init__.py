"""Tools agents can call: the registry and the tools that ship with flowengine."""
