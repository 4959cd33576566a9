"""Agent diagrams for the pages: Graphviz SVG drawn on the server, the run's path over it.

The SVG is served as its own resource and shown with ``<img>``: a browser never runs
scripts inside an image, so nothing in an agent file can act in the page. Drawings are
cached, since a live run's page asks for the same one every few seconds.
"""

from __future__ import annotations

import html
from functools import lru_cache

from flowengine.errors import RenderError


@lru_cache(maxsize=64)
def agent_svg(
    source: str, file: str, path: tuple[str, ...] | None = None, title: str = ""
) -> bytes:
    """The agent in ``source`` drawn as SVG; with ``path``, the steps a run took in blue."""
    from flowengine.graph import validate_text
    from flowengine.viz import draw
    from flowengine.viz.overlay import with_run_path

    validated = validate_text(source, file)
    if validated.graph is None:
        return message_svg("This agent file has errors that stop it being drawn; see below.")
    graph = validated.graph
    if path is not None:
        graph = with_run_path(graph, path, title)
    try:
        return draw(graph, "svg", validated.steps_with_errors())
    except RenderError as exc:
        return message_svg(str(exc))


def message_svg(text: str) -> bytes:
    """A small picture that says why there is no diagram."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="40" viewBox="0 0 760 40">'
        f'<text x="8" y="24" font-family="sans-serif" font-size="13" fill="#d93025">'
        f"{html.escape(text)}</text></svg>"
    ).encode()
