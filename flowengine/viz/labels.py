"""What a node says in a diagram: its id, its text wrapped to a readable width, its settings."""

from __future__ import annotations

import textwrap
from typing import Any

WRAP = {"process": 30, "decision": 24, "terminal": 30}
MAX_LINES = 6


def wrapped_text(attrs: dict[str, Any]) -> list[str]:
    """The node's text as short lines; very long text ends in an ellipsis."""
    text = " ".join(str(attrs.get("text") or "").split())
    width = WRAP.get(attrs.get("kind", ""), 30)
    return textwrap.wrap(text, width, max_lines=MAX_LINES, placeholder=" ...")


def footnote(attrs: dict[str, Any]) -> str:
    """Settings worth seeing in the diagram: saved variable, loop guard, output format."""
    notes = []
    if attrs.get("save_as"):
        notes.append(f"saves {attrs['save_as']}")
    if attrs.get("max_visits"):
        notes.append(f"at most {attrs['max_visits']} visits")
    if attrs.get("deterministic"):
        notes.append("decided by when:")
    if attrs.get("format") == "json":
        notes.append("JSON output")
    if attrs.get("visits"):
        notes.append(f"ran {attrs['visits']}×")  # noqa: RUF001
    return " · ".join(notes)
