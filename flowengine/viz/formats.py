"""One entry point for every diagram format; SVG, PNG and HTML run Graphviz ``dot``."""

from __future__ import annotations

import json
import shutil
import subprocess

import networkx as nx

from flowengine.errors import RenderError
from flowengine.viz.dot import to_dot
from flowengine.viz.mermaid import to_mermaid
from flowengine.viz.page import html_page

FORMATS = ("mermaid", "dot", "svg", "png", "html", "json")
TEXT_FORMATS = frozenset({"mermaid", "dot", "svg", "html", "json"})
DOT_TIMEOUT_SECONDS = 60


class GraphvizError(RenderError):
    """``dot`` is missing, failed or took too long; the message says what to do."""


def draw(graph: nx.DiGraph, fmt: str, problems: frozenset[str] = frozenset()) -> bytes:
    """The graph drawn in ``fmt`` (one of FORMATS), as bytes ready to write."""
    if fmt == "mermaid":
        return to_mermaid(graph, problems).encode()
    if fmt == "dot":
        return to_dot(graph, problems).encode()
    if fmt == "json":
        data = nx.node_link_data(graph, edges="edges")
        return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    if fmt in ("svg", "png"):
        return run_dot(to_dot(graph, problems), fmt)
    if fmt == "html":
        return html_page(graph, run_dot(to_dot(graph, problems), "svg").decode()).encode()
    raise ValueError(f"unknown format {fmt!r}")


def run_dot(source: str, fmt: str) -> bytes:
    """Lay out and render DOT text with Graphviz."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizError(
            "Graphviz 'dot' is needed for svg, png and html; install it "
            "(Debian/Ubuntu: apt-get install graphviz, macOS: brew install graphviz; "
            "'make setup' does it on Debian) or use --format mermaid, dot or json"
        )
    args = [dot, f"-T{fmt}"] + (["-Gdpi=110"] if fmt == "png" else [])
    try:
        done = subprocess.run(
            args, input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise GraphvizError(
            f"Graphviz took longer than {DOT_TIMEOUT_SECONDS} s to lay out this graph; "
            "use --format mermaid, dot or json for very large agents"
        ) from None
    if done.returncode != 0:
        raise GraphvizError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
