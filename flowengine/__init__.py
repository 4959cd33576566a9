"""flowengine: declarative LLM agents as YAML state machines.

Layers, each importing only the ones before it:
spec (load, schema, diagnostics) -> graph (compile, checks) -> viz / importers -> cli.
"""

__version__ = "0.1.0"
