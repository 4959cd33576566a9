"""Mermaid flowchart text: boxes for process steps, diamonds for decisions, parallelograms
for input steps (a person answers), stadiums for ends.

Every piece of user text (names, step ids, labels) is escaped so that Mermaid reads it as
text: the title is a quoted YAML string in the front matter; labels use Mermaid's ``#code;``
entities, ``#`` itself included so that literal ``#...;`` text is not decoded.
"""

from __future__ import annotations

import json

import networkx as nx

from flowengine.steps.registry import kind_of, kinds
from flowengine.viz.labels import edge_caption, footnote, one_line, wrapped_text

MAX_TEXT_SIZE = 50_000
"""Mermaid's default ``maxTextSize``: longer diagrams are refused by Mermaid itself."""
MAX_EDGES = 500
"""Mermaid's default ``maxEdges``."""
WRAPPING_WIDTH = 400
"""Pixels before Mermaid wraps a label line; wider than our own wrapped lines, so that
labels are wrapped once (by us), not twice."""

_MARKS = (
    # Defined after the kinds so that their stroke wins and the fill of the kind stays.
    "  classDef problem stroke:#d93025,stroke-width:3px,stroke-dasharray:5 3",
    "  classDef visited stroke:#1a73e8,stroke-width:3px",
)


def _classes() -> list[str]:
    """One ``classDef`` per step kind (each kind says its colours), then the marks."""
    own = [f"  classDef {name} {kind.drawing.mermaid_style}" for name, kind in kinds().items()]
    return [*own, *_MARKS]


_ERROR_EDGE = "stroke:#d93025,color:#d93025"
_TAKEN_EDGE = "stroke:#1a73e8,stroke-width:3px"


def to_mermaid(graph: nx.DiGraph, problems: frozenset[str] = frozenset()) -> str:
    """The graph as a Mermaid ``flowchart TD``; steps in ``problems`` are outlined in red,
    error routes are dotted red arrows, and a run's path is drawn in blue."""
    ids = {node: f"s{i}" for i, node in enumerate(graph.nodes)}
    lines = [
        "---",
        f"title: {json.dumps(mermaid_title(graph), ensure_ascii=False)}",
        "config:",
        "  flowchart:",
        f"    wrappingWidth: {WRAPPING_WIDTH}",
        "---",
        "flowchart TD",
        *_classes(),
        "  start((start)):::terminal",
    ]
    for node, attrs in graph.nodes(data=True):
        # A step without a known type is drawn as a process step (the checks report it).
        kind = kind_of(attrs.get("kind", "process")) or kinds()["process"]
        left, right = kind.drawing.mermaid
        body = [f"<b>{escape(str(node))}</b>", *map(escape, wrapped_text(attrs))]
        body += [f"<i>{escape(line)}</i>" for line in footnote(attrs)]
        kind_class = kind.name
        lines.append(f"  {ids[node]}{left}{'<br/>'.join(body)}{right}:::{kind_class}")
    for name, members in (
        ("problem", [ids[n] for n in graph.nodes if n in problems]),
        ("visited", [ids[n] for n, visits in graph.nodes(data="visits") if visits]),
    ):
        if members:
            lines.append(f"  class {','.join(members)} {name}")
    start = graph.graph.get("start")
    links = 0
    if start in ids:
        lines.append(f"  start --> {ids[start]}")
        links += 1
    taken, errors = [], []
    for source, target, attrs in graph.edges(data=True):
        caption = edge_caption(graph, source, target)
        arrow = "-.->" if caption.on_error_only else "-->"
        label = f"|{escape(caption.text)}|" if caption.text else ""
        lines.append(f"  {ids[source]} {arrow}{label} {ids[target]}")
        if attrs.get("traversals"):
            taken.append(str(links))
        elif caption.on_error_only:
            errors.append(str(links))
        links += 1
    if errors:
        lines.append(f"  linkStyle {','.join(errors)} {_ERROR_EDGE}")
    if taken:
        lines.append(f"  linkStyle {','.join(taken)} {_TAKEN_EDGE}")
    return "\n".join(lines) + "\n"


def mermaid_warnings(text: str, graph: nx.DiGraph) -> list[str]:
    """Why Mermaid with its default settings would refuse ``text``, in words."""
    found = []
    if len(text) > MAX_TEXT_SIZE:
        found.append(
            f"the diagram is {len(text):,} characters, over Mermaid's default limit of "
            f"{MAX_TEXT_SIZE:,} (maxTextSize); raise maxTextSize in the Mermaid set-up "
            "that shows it, or draw with --format svg or html"
        )
    edges = graph.number_of_edges() + (1 if graph.graph.get("start") in graph else 0)
    if edges > MAX_EDGES:
        found.append(
            f"the diagram has {edges} arrows, over Mermaid's default limit of {MAX_EDGES} "
            "(maxEdges); raise maxEdges in the Mermaid set-up that shows it, or draw with "
            "--format svg or html"
        )
    return found


def mermaid_title(graph: nx.DiGraph) -> str:
    """The diagram's title: the agent's name, and the run's when one is drawn.

    It goes into the front matter as a quoted YAML string (no Mermaid entities there).
    Mermaid reads titles as HTML, so '<' and '>' are shown as single angle quotation marks
    (U+2039, U+203A).
    """
    title = one_line(graph.graph.get("name") or "agent")
    if graph.graph.get("run"):
        title += f" ({one_line(graph.graph['run'])})"
    return title.replace("<", "‹").replace(">", "›")  # noqa: RUF001


_PLAIN = frozenset(" .,'?!/_+*=")
"""Punctuation Mermaid reads as text inside a label; everything else but letters and digits
is written as a numeric entity. A whitelist, because the list of characters with a meaning
somewhere in Mermaid keeps growing ('@' became edge-id syntax in Mermaid 11); '#' is
escaped too, so that literal '#name;' text is not decoded, and ':' because Mermaid drops the
last ';' of a line matching 'style...:...#...;', which would break an entity."""


def escape(text: str) -> str:
    """Label text on one line, as Mermaid reads it: letters, digits, spaces and plain
    punctuation as they are, every other character as a ``#code;`` entity."""
    return "".join(
        char if char.isalnum() or char in _PLAIN else f"#{ord(char)};" for char in one_line(text)
    )
