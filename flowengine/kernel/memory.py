"""The memory manager: each run's short-term memory (variables, progress), with a quota."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flowengine.errors import MemoryQuotaExceeded
from flowengine.kernel import defaults
from flowengine.kernel.access import AccessManager


@dataclass
class RunMemory:
    """What a run remembers between steps. Plain JSON data, so it can be checkpointed."""

    owner: str
    quota: int = defaults.MEMORY_QUOTA_BYTES
    variables: dict[str, Any] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)
    visits: dict[str, int] = field(default_factory=dict)
    progress_dropped: int = 0
    """Oldest progress entries left out of prompts to fit the window; only ever grows."""

    _counted: tuple[int, int, int] = field(default=(0, 0, 0), repr=False, compare=False)
    """(id of the progress list, entries counted, their JSON length with separators)."""

    def size(self) -> int:
        """The JSON length of ``[variables, progress]``. Progress only grows, an entry at
        a time and never changed, so only the entries new since the last call are
        encoded: a quota check costs the same at the 2,000th step as at the first."""
        listed, count, length = self._counted
        if listed != id(self.progress) or count > len(self.progress):
            count, length = 0, 0
        for entry in self.progress[count:]:
            length += len(json.dumps(entry, default=str)) + 2  # and ", " (or "[]")
        self._counted = (id(self.progress), len(self.progress), length)
        progress = max(length, 2)  # "[a, b]" is as long as a + b + 2 separators
        return len(json.dumps(self.variables, default=str)) + progress + 4

    def check_quota(self) -> None:
        used = self.size()
        if used > self.quota:
            raise MemoryQuotaExceeded(
                f"run {self.owner} holds {used} bytes of variables and progress, over its "
                f"quota of {self.quota}; save less with save_as, or lower --max-tokens"
            )

    def snapshot(self) -> dict[str, Any]:
        return {
            "variables": self.variables,
            "progress": self.progress,
            "visits": self.visits,
            "progress_dropped": self.progress_dropped,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.variables = dict(snapshot.get("variables", {}))
        self.progress = list(snapshot.get("progress", []))
        self.visits = dict(snapshot.get("visits", {}))
        self.progress_dropped = int(snapshot.get("progress_dropped", 0))


class MemoryManager:
    def __init__(self, access: AccessManager, quota: int = defaults.MEMORY_QUOTA_BYTES) -> None:
        self._access = access
        self._quota = quota
        self._memories: dict[str, RunMemory] = {}

    def open(self, run_id: str) -> RunMemory:
        memory = RunMemory(owner=run_id, quota=self._quota)
        self._memories[run_id] = memory
        return memory

    def read(self, run_id: str, owner: str) -> RunMemory:
        """``owner``'s memory, if ``run_id`` is its owner."""
        self._access.check_memory(run_id, owner)
        return self._memories[owner]

    def release(self, run_id: str) -> None:
        self._memories.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._memories)
