"""Graph layer: compile an agent into a networkx DiGraph and check it."""

from flowengine.graph.build import build_graph, successor
from flowengine.graph.validate import Validated, validate_file, validate_text

__all__ = ["Validated", "build_graph", "successor", "validate_file", "validate_text"]
