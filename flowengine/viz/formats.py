"""One entry point for every diagram format; SVG, PNG and HTML run Graphviz ``dot``."""

from __future__ import annotations

import html
import json
import shutil
import subprocess

import networkx as nx

from flowengine.errors import RenderError
from flowengine.viz.dot import to_dot
from flowengine.viz.mermaid import to_mermaid

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
        return _html_page(graph, run_dot(to_dot(graph, problems), "svg").decode()).encode()
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


def _html_page(graph: nx.DiGraph, svg: str) -> str:
    """A self-contained page: the drawing, the agent's description and a table of steps."""
    name = html.escape(graph.graph.get("name") or "agent")
    rows = []
    for node, attrs in graph.nodes(data=True):
        exits = ", ".join(
            f"{html.escape(d.get('label', ''))} → {html.escape(str(t))}"
            if attrs.get("kind") == "decision"
            else html.escape(str(t))
            for _, t, d in graph.out_edges(node, data=True)
        )
        rows.append(
            f"<tr><td>{html.escape(str(node))}</td><td>{html.escape(attrs.get('kind', ''))}</td>"
            f"<td>{html.escape(attrs.get('text') or '')}</td><td>{exits}</td>"
            f"<td>{attrs.get('line', '')}</td></tr>"
        )
    svg_body = svg[svg.find("<svg") :] if "<svg" in svg else svg
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: flow</title>
<style>
body {{ font-family: "DejaVu Sans", system-ui, sans-serif; margin: 2rem; color: #202124; }}
.drawing svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin-top: 2rem; font-size: 0.9rem; }}
td, th {{ border: 1px solid #dadce0; padding: 0.3rem 0.6rem; text-align: left; }}
td {{ vertical-align: top; }}
th {{ background: #f1f3f4; }}
</style></head><body>
<h1>{name}</h1>
<p>{html.escape(graph.graph.get("description") or "")}</p>
<div class="drawing">{svg_body}</div>
<table><tr><th>step</th><th>type</th><th>text</th><th>goes to</th><th>line</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
