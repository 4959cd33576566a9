"""The ready queue: first-come-first-served, or round-robin time slices counted in tokens."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from flowengine.kernel import defaults
from flowengine.kernel.llm_request import LLMRequest

Policy = Literal["fifo", "rr"]
POLICIES: tuple[str, ...] = ("fifo", "rr")


@dataclass(frozen=True)
class SchedulerConfig:
    policy: Policy = defaults.SCHEDULER  # type: ignore[assignment]
    quantum: int = defaults.QUANTUM
    """Tokens a request may generate before it yields to a waiting one (``rr`` only)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduler {self.policy!r}; use fifo or rr")
        if self.quantum < 1:
            raise ValueError("the quantum must be at least 1 token")


class ReadyQueue:
    """Requests waiting for the model, in the order they will get it.

    ``fifo`` runs each request to its end. ``rr`` gives each a slice of ``quantum``
    generated tokens and sends a preempted request to the back of the queue; a request
    alone in the queue keeps running without a context switch.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._queue: deque[LLMRequest] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, request: LLMRequest) -> None:
        with self._ready:
            self._queue.append(request)
            self._ready.notify()

    def put_all(self, requests: list[LLMRequest]) -> None:
        """Enqueue several at once, so none starts before all are waiting."""
        with self._ready:
            self._queue.extend(requests)
            self._ready.notify()

    def take(self) -> LLMRequest | None:
        """The next request to run; None once closed and empty."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            return self._queue.popleft() if self._queue else None

    def slice_budget(self) -> int | None:
        """Tokens the request now taking the model may generate; None for no limit."""
        return self.config.quantum if self.config.policy == "rr" else None

    def others_waiting(self) -> bool:
        with self._ready:
            return bool(self._queue)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._queue)
