"""Graphviz DOT text with HTML-like labels: the source of the SVG, PNG and HTML drawings."""

from __future__ import annotations

import html

import networkx as nx

from flowengine.steps.registry import kind_of
from flowengine.viz.labels import edge_caption, footnote, one_line, wrapped_text

_UNKNOWN = 'shape=box, style="filled,dashed", fillcolor="#f1f3f4", color="#5f6368"'
"""A step without a known type: grey and dashed (the checks report it)."""
_PROBLEM = 'color="#d93025", penwidth=2.5'
_VISITED = 'color="#1a73e8", penwidth=3'
_NOT_VISITED = 'fontcolor="#9aa0a6", color="#bdc1c6"'
_ERROR_EDGE = 'style=dashed, color="#d93025", fontcolor="#d93025"'


def to_dot(graph: nx.DiGraph, problems: frozenset[str] = frozenset()) -> str:
    """The graph as a DOT digraph; steps in ``problems`` get a red outline."""
    name = one_line(graph.graph.get("name") or "agent")
    run = one_line(graph.graph.get("run") or "")
    title = f"<B>{_html(name)}</B>" + (f"<BR/>{_html(run)}" if run else "")
    out = [
        f"digraph {_quote(name)} {{",
        f'  graph [rankdir=TB, labelloc=t, fontsize=20, fontname="DejaVu Sans", '
        f"nodesep=0.35, ranksep=0.45, pad=0.3, label=<{title}>];",
        '  node [fontname="DejaVu Sans", fontsize=11, margin="0.15,0.08"];',
        '  edge [fontname="DejaVu Sans", fontsize=10, color="#5f6368", arrowsize=0.8];',
        '  "__start__" [shape=circle, label="", width=0.22, style=filled, fillcolor=black];',
    ]
    for node, attrs in graph.nodes(data=True):
        kind = kind_of(attrs.get("kind", "unknown"))
        style = kind.drawing.dot if kind else _UNKNOWN
        if node in problems:
            style += ", " + _PROBLEM
        if graph.graph.get("run") is not None:
            style += ", " + (_VISITED if attrs.get("visits") else _NOT_VISITED)
        out.append(f"  {_quote(node)} [{style}, label=<{_label(str(node), attrs)}>];")
    start = graph.graph.get("start")
    if start in graph:
        out.append(f'  "__start__" -> {_quote(start)};')
    for source, target, attrs in graph.edges(data=True):
        caption = edge_caption(graph, source, target)
        settings = []
        if caption.on_error_only:
            settings += [_ERROR_EDGE, f"label=<<I>{_html(caption.text)}</I>>"]
        elif caption.text:
            settings += [f"label=<<B>{_html(caption.text)}</B>>", 'fontcolor="#7a5c00"']
        taken = attrs.get("traversals", 0)
        if taken:
            settings += ['color="#1a73e8"', "penwidth=2.5"]
            if taken > 1:
                settings.append(f'xlabel="×{taken}"')  # noqa: RUF001
        extra = f" [{', '.join(settings)}]" if settings else ""
        out.append(f"  {_quote(source)} -> {_quote(target)}{extra};")
    out.append("}")
    return "\n".join(out) + "\n"


def _label(node: str, attrs: dict) -> str:
    parts = [f"<B>{_html(one_line(node))}</B>", *(_html(line) for line in wrapped_text(attrs))]
    note = "<BR/>".join(_html(line) for line in footnote(attrs))
    if note:
        parts.append(f'<FONT POINT-SIZE="9" COLOR="#5f6368"><I>{note}</I></FONT>')
    return "<BR/>".join(parts)


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _html(text: str) -> str:
    return html.escape(text, quote=True)
