"""Mermaid flowchart text: boxes for process steps, diamonds for decisions, stadiums for ends."""

from __future__ import annotations

import networkx as nx

from flowengine.viz.labels import footnote, wrapped_text

_SHAPES = {"process": ('["', '"]'), "decision": ('{"', '"}'), "terminal": ('(["', '"])')}


def to_mermaid(graph: nx.DiGraph, problems: frozenset[str] = frozenset()) -> str:
    """The graph as a Mermaid ``flowchart TD``; steps in ``problems`` are outlined in red."""
    ids = {node: f"s{i}" for i, node in enumerate(graph.nodes)}
    lines = [
        "---",
        f"title: {_escape(graph.graph.get('name') or 'agent')}"
        + (f" ({_escape(graph.graph['run'])})" if graph.graph.get("run") else ""),
        "---",
        "flowchart TD",
        "  classDef process fill:#e8f0fe,stroke:#4a6fa5",
        "  classDef decision fill:#fff4d6,stroke:#c9a227",
        "  classDef terminal fill:#e3f4e1,stroke:#3c8d40",
        "  classDef problem stroke:#d93025,stroke-width:3px,stroke-dasharray:5 3",
        "  classDef visited stroke:#1a73e8,stroke-width:3px",
        "  start((start)):::terminal",
    ]
    for node, attrs in graph.nodes(data=True):
        kind = attrs.get("kind", "process")
        left, right = _SHAPES.get(kind, _SHAPES["process"])
        body = [f"<b>{_escape(str(node))}</b>", *map(_escape, wrapped_text(attrs))]
        note = footnote(attrs)
        if note:
            body.append(f"<i>{_escape(note)}</i>")
        classes = kind if kind in _SHAPES else "process"
        if node in problems:
            classes += ",problem"
        if attrs.get("visits"):
            classes += ",visited"
        lines.append(f"  {ids[node]}{left}{'<br/>'.join(body)}{right}:::{classes}")
    start = graph.graph.get("start")
    links = 0
    if start in ids:
        lines.append(f"  start --> {ids[start]}")
        links += 1
    traversed = []
    for source, target, attrs in graph.edges(data=True):
        kind = graph.nodes[source].get("kind")
        label = attrs.get("label", "")
        arrow = f"-->|{_escape(label)}|" if kind == "decision" and label else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
        if attrs.get("traversals"):
            traversed.append(str(links))
        links += 1
    if traversed:
        lines.append(f"  linkStyle {','.join(traversed)} stroke:#1a73e8,stroke-width:3px")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    """Mermaid entity codes, so quotes, brackets and pipes cannot end a label early."""
    for char, code in (
        ("&", "#amp;"),
        ('"', "#quot;"),
        ("<", "#lt;"),
        (">", "#gt;"),
        ("|", "#124;"),
        ("[", "#91;"),
        ("]", "#93;"),
        ("{", "#123;"),
        ("}", "#125;"),
    ):
        text = text.replace(char, code)
    return text
