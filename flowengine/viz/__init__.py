"""Drawing agent graphs: Mermaid, Graphviz DOT, node-link JSON, and SVG/PNG/HTML via dot."""

from flowengine.viz.formats import FORMATS, TEXT_FORMATS, GraphvizError, draw

__all__ = ["FORMATS", "TEXT_FORMATS", "GraphvizError", "draw"]
