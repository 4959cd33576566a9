"""What a node and an edge say in a diagram: text wrapped once, settings, branch conditions."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import networkx as nx

from flowengine.steps.registry import kind_of

MAX_LINES = 6
FOOTNOTE_WIDTH = 36
"""A footnote's settings are grouped into lines this long, so no font widens a line past
the renderer's wrapping width (Mermaid's is 400 px; 36 characters of 16 px DejaVu Sans,
the widest common default, take about 330)."""
CONDITION_WIDTH = 40
"""Longer ``when`` conditions are cut in edge labels; the HTML table shows them whole."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def wrapped_text(attrs: dict[str, Any]) -> list[str]:
    """The node's text as short lines; very long text ends in an ellipsis.

    This is the only place labels are wrapped: the renderers are told not to wrap again.
    """
    text = one_line(attrs.get("text") or "")
    kind = kind_of(attrs.get("kind", ""))
    width = kind.drawing.wrap if kind else 30
    return textwrap.wrap(text, width, max_lines=MAX_LINES, placeholder=" ...")


def footnote(attrs: dict[str, Any]) -> list[str]:
    """Settings worth seeing in the diagram (saved variable, loop guard, output format),
    as lines of whole settings joined by ``·``; none when there is nothing to say."""
    notes = []
    if attrs.get("save_as"):
        notes.append(f"saves {attrs['save_as']}")
    if attrs.get("sets"):
        notes.append("sets " + ", ".join(attrs["sets"]))
    if attrs.get("max_visits"):
        notes.append(f"at most {attrs['max_visits']} visits")
    if attrs.get("deterministic"):
        notes.append("decided by its when conditions")
    if attrs.get("retry"):
        notes.append(f"retries {attrs['retry']}×")  # noqa: RUF001
    if attrs.get("format") == "json":
        notes.append("JSON output")
    kind = kind_of(attrs.get("kind", ""))
    if kind is not None:
        notes += kind.footnote(attrs)
    if attrs.get("visits"):
        notes.append(f"ran {attrs['visits']}×")  # noqa: RUF001
    lines: list[str] = []
    for note in notes:
        if lines and len(lines[-1]) + 3 + len(note) <= FOOTNOTE_WIDTH:
            lines[-1] += " · " + note
        else:
            lines.append(note)
    return lines


@dataclass(frozen=True)
class EdgeCaption:
    """What an edge says, and whether it is taken only when the step fails."""

    text: str
    on_error_only: bool


def edge_caption(graph: nx.DiGraph, source: str, target: str) -> EdgeCaption:
    """The edge's label: branch labels with their ``when`` condition or ``(default)``,
    and ``on error`` for the step's error route; a plain ``next`` says nothing."""
    attrs = graph.edges[source, target]
    node = graph.nodes[source]
    labels = attrs.get("labels") or [attrs.get("label", "")]
    parts = []
    for label in labels:
        if label == "on_error":
            parts.append("on error")
        elif _branches_by_label(node):
            parts.append(branch_caption(node, label, CONDITION_WIDTH))
        elif label != "next":
            parts.append(one_line(label))
    return EdgeCaption(" / ".join(p for p in parts if p), labels == ["on_error"])


def _branches_by_label(node: dict[str, Any]) -> bool:
    kind = kind_of(node.get("kind", ""))
    return kind is not None and kind.branches_by_label


def branch_caption(node: dict[str, Any], label: str, width: int | None = None) -> str:
    """A branch label with what chooses it: ``big: size > 10`` or ``small (default)``."""
    condition = (node.get("when") or {}).get(label)
    if condition is not None:
        shown = one_line(condition)
        if width is not None:
            shown = textwrap.shorten(shown, width, placeholder=" ...")
        return f"{one_line(label)}: {shown}"
    if node.get("default") == label:
        return f"{one_line(label)} (default)"
    return one_line(label)
