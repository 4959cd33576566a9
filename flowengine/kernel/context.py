"""The context manager: which KV cache a request runs on, and prompts that fit the window.

A small pool of model contexts (weights shared, one KV cache each) lets a preempted
request keep its cache while others run. When every context is taken, the least
recently used one not running is given up: its request keeps a token snapshot (prompt
plus tokens generated so far) and re-evaluates it when it next runs. Prefixes are not
shared between requests: llama.cpp's numbers depend on how tokens were batched, so the
kernel rebuilds a request's cache the same way every time to keep greedy output
independent of the schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flowengine.errors import ContextOverflow
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import Backend, ModelContext
from flowengine.kernel.requests import LLMRequest


@dataclass
class _Slot:
    context: ModelContext
    owner: str | None = None
    last_used: float = field(default_factory=time.monotonic)


class ContextPool:
    """Hands KV caches to requests; only the kernel's worker thread calls it."""

    def __init__(self, backend: Backend, size: int = defaults.POOL_SIZE) -> None:
        if size < 1:
            raise ValueError("the context pool needs at least one context")
        self._backend = backend
        self.size = size
        self._slots: list[_Slot] = []
        self.evictions = 0

    def acquire(self, request: LLMRequest) -> tuple[ModelContext, bool]:
        """The context ``request`` runs on, and whether it had to be rebuilt from a
        snapshot because its own cache was given to another request."""
        for slot in self._slots:
            if slot.owner == request.id:
                slot.last_used = time.monotonic()
                return slot.context, False
        slot = self._free_slot(request)
        slot.owner = request.id
        slot.last_used = time.monotonic()
        return slot.context, request.slices > 0

    def prewarm(self, count: int | None = None) -> None:
        """Create contexts now rather than on first use (benchmarks time the steady state)."""
        while len(self._slots) < min(count or self.size, self.size):
            self._slots.append(_Slot(self._backend.new_context()))

    def release(self, request: LLMRequest) -> None:
        """The request is done; its context is free for the next."""
        for slot in self._slots:
            if slot.owner == request.id:
                slot.owner = None

    def _free_slot(self, request: LLMRequest) -> _Slot:
        free = [slot for slot in self._slots if slot.owner is None]
        if free:
            return min(free, key=lambda slot: slot.last_used)
        if len(self._slots) < self.size:
            slot = _Slot(self._backend.new_context())
            self._slots.append(slot)
            return slot
        victim = min(self._slots, key=lambda slot: slot.last_used)
        victim.owner = None
        self.evictions += 1
        return victim


def fit_prompt(
    render: Callable[[int], str],
    encode: Callable[[str], list[int]],
    budget: int,
    entries: int,
) -> tuple[str, list[int], int]:
    """The prompt with the fewest oldest progress entries dropped that fits ``budget``.

    ``render(k)`` builds the prompt without the ``k`` oldest of ``entries`` entries.
    Returns the text, its tokens and ``k``; raises ContextOverflow if even ``k = entries``
    is too long.
    """
    text = render(0)
    tokens = encode(text)
    if len(tokens) <= budget:
        return text, tokens, 0
    low, high = 1, entries
    best: tuple[str, list[int], int] | None = None
    while low <= high:
        middle = (low + high) // 2
        candidate = render(middle)
        candidate_tokens = encode(candidate)
        if len(candidate_tokens) <= budget:
            best = (candidate, candidate_tokens, middle)
            high = middle - 1
        else:
            low = middle + 1
    if best is None:
        shortest = len(encode(render(entries)))
        raise ContextOverflow(
            f"the prompt needs {shortest} tokens without any progress log, and the model's "
            f"window leaves {budget}; shorten the instruction or the inputs, or use a model "
            "with a longer context"
        )
    return best
