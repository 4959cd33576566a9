"""The pieces an AIOS config is converted into, and where they were in the JSON file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from flowengine.agentfile.diagnostics import Position


@dataclass
class AiosTool:
    """A tool the agent declares; ``parameters`` is its JSON Schema when the config has it."""

    name: str
    note: str
    """How the config describes it, kept as a comment in the YAML."""
    parameters: dict[str, Any] | None = None


@dataclass
class AiosStep:
    """One step to write: a converted AIOS flow or workflow entry."""

    id: str
    kind: str
    """process, decision or terminal; anything else is an unknown AIOS type, as written."""
    text: str
    transitions: list[tuple[str, str]] = field(default_factory=list)
    position: Position = field(default_factory=Position)
    tool: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    """A terminal step's output template (then ``text`` is not used)."""
    notes: list[str] = field(default_factory=list)
    """Comments written above the step: what differs from the AIOS original."""


def tool_name(text: str) -> str:
    """A declared tool name from free text: ``wolfram alpha`` -> ``wolfram_alpha``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


class Locator:
    """Finds where a JSON key or string value starts, so diagnostics point into the file.

    Values are searched for after their section's key (``flow``, ``tools``...), each
    one after the previous one found in that section, so that equal texts in different
    entries get their own lines.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.after: dict[str, int] = {}

    def key(self, key: str) -> Position:
        return self._at(self.text.find(json.dumps(key)))

    def value(self, value: object, section: str) -> Position:
        """Where a text, number, true/false or null in ``section`` is; else the section."""
        if not isinstance(value, str | int | float | bool) and value is not None:
            return self.key(section)
        start = self.after.get(section)
        if start is None:
            start = max(self.text.find(json.dumps(section)), 0)
        found = -1
        for needle in (json.dumps(value, ensure_ascii=False), json.dumps(value)):
            found = self.text.find(needle[:40], start)
            if found != -1:
                break
        if found == -1:
            return self.key(section)
        self.after[section] = found + 1
        return self._at(found)

    def _at(self, offset: int) -> Position:
        if offset < 0:
            return Position()
        line_start = self.text.rfind("\n", 0, offset) + 1
        return Position(self.text.count("\n", 0, offset) + 1, offset - line_start + 1)
