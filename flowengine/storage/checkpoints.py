"""A run's memory from its step rows: each step stores what it changed, not everything.

A step row's ``state`` once held the run's whole memory after the step (every variable,
every progress entry, the path), so a run of n steps stored n²/2 progress entries. Now it
holds only what the step changed beyond its own row::

    {"set": {"name": value}, "progress_dropped": 3}

``set`` is the variable the step saved (``save_as``), if any; ``progress_dropped`` the
oldest progress entries left out of prompts so far. The rest follows from the row itself:
the step's ``step_id`` is its path entry and visit, and ``{"step": step_id, "result":
result}`` its progress entry. Folding the rows in ``seq`` order rebuilds the memory after
any step. Rows written before (their ``state`` has a ``path``) hold the whole memory and
replace what was folded so far, so old files, and runs begun before and resumed after,
read the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def step_change(saved: dict[str, Any], progress_dropped: int) -> dict[str, Any]:
    """A step row's ``state``: the variables the step set and the entries left out."""
    return {"set": saved, "progress_dropped": progress_dropped}


def _parsed(value: Any) -> Any:
    """A JSON column's value (DuckDB gives JSON as text; the journal as text too)."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class MemoryFold:
    """The run's memory after the steps added so far, in ``seq`` order."""

    variables: dict[str, Any] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)
    visits: dict[str, int] = field(default_factory=dict)
    progress_dropped: int = 0
    path: list[str] = field(default_factory=list)

    def add(self, step_id: str, result: Any, state: Any) -> None:
        """Fold in one step row (``result`` and ``state`` as stored: JSON text or data)."""
        state = _parsed(state) or {}
        if "path" in state:  # written before steps stored changes: the whole memory
            self.variables = dict(state.get("variables", {}))
            self.progress = list(state.get("progress", []))
            self.visits = dict(state.get("visits", {}))
            self.progress_dropped = int(state.get("progress_dropped", 0))
            self.path = list(state["path"])
            return
        self.variables.update(state.get("set", {}))
        self.progress.append({"step": step_id, "result": _parsed(result)})
        self.visits[step_id] = self.visits.get(step_id, 0) + 1
        self.progress_dropped = int(state.get("progress_dropped", self.progress_dropped))
        self.path.append(step_id)

    def snapshot(self) -> dict[str, Any]:
        """The memory as ``RunMemory.restore`` takes it, with the path."""
        return {
            "variables": dict(self.variables),
            "progress": list(self.progress),
            "visits": dict(self.visits),
            "progress_dropped": self.progress_dropped,
            "path": list(self.path),
        }


def fold(rows: Iterable[tuple[str, Any, Any]]) -> dict[str, Any]:
    """The memory after the last of these ``(step_id, result, state)`` rows, in seq order."""
    memory = MemoryFold()
    for step_id, result, state in rows:
        memory.add(step_id, result, state)
    return memory.snapshot()
