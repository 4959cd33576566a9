"""Graph layer: compile an agent into a networkx DiGraph and check it."""

from flowengine.graph.compile import compile_agent, successor
from flowengine.graph.validate import Validated, validate_file, validate_text

__all__ = ["Validated", "compile_agent", "successor", "validate_file", "validate_text"]
