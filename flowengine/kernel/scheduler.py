"""The ready queue and the scheduling policy, one for every executor: who is admitted
next (``fifo``, or ``rr`` round-robin over runs) and who yields to a waiting request."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

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


class Running(Protocol):
    """A request on the model, with the tokens it has generated in its slice."""

    request: LLMRequest

    @property
    def produced(self) -> int: ...


R = TypeVar("R", bound=Running)


class ReadyQueue:
    """Requests waiting for the model, and the policy that orders them.

    ``fifo`` admits in the order requests were put and runs each to its end. ``rr`` admits
    round-robin over runs (the request of the run admitted longest ago goes first, so one
    run's burst does not hold back the others) and makes a request that has generated
    ``quantum`` tokens yield when another is waiting (``yielders``); a request alone keeps
    running without a switch. Any thread may put; executors' workers take.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._queue: list[LLMRequest] = []
        self._ready = threading.Condition()
        self._closed = False
        self._admissions = itertools.count()
        self._last_admitted: dict[str, int] = {}

    def put(self, request: LLMRequest) -> None:
        with self._ready:
            self._queue.append(request)
            self._ready.notify()

    def put_all(self, requests: list[LLMRequest]) -> None:
        """Enqueue several at once, so none starts before all are waiting."""
        with self._ready:
            self._queue.extend(requests)
            self._ready.notify_all()

    def wait(self) -> bool:
        """Wait until a request is waiting: True, or False once closed and empty."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            return bool(self._queue)

    def take(self) -> LLMRequest | None:
        """The next request to run, waiting for one; None once closed and empty."""
        taken = self.take_upto(1, wait=True)
        return taken[0] if taken else None

    def take_upto(self, count: int, wait: bool) -> list[LLMRequest] | None:
        """Up to ``count`` requests in admission order; with ``wait``, at least one (it
        waits for it). None once closed with nothing waiting."""
        with self._ready:
            while wait and not self._queue and not self._closed:
                self._ready.wait()
            if self._closed and not self._queue:
                return None
            taken: list[LLMRequest] = []
            while self._queue and len(taken) < count:
                taken.append(self._next())
            return taken

    def admitted(self, run_id: str) -> None:
        """A run's request went to the model without the queue (``serve_now``): under
        ``rr`` it has had its turn, as if the queue had admitted it."""
        with self._ready:
            self._last_admitted[run_id] = next(self._admissions)

    def _next(self) -> LLMRequest:
        """The next to admit (the queue is locked and not empty)."""
        if self.config.policy == "rr":
            request = min(self._queue, key=lambda r: self._last_admitted.get(r.run_id, -1))
            self._queue.remove(request)
        else:
            request = self._queue.pop(0)
        self._last_admitted[request.run_id] = next(self._admissions)
        return request

    def slice_budget(self) -> int | None:
        """Tokens a request may generate before it may have to yield; None for no limit."""
        return self.config.quantum if self.config.policy == "rr" else None

    def yielders(self, running: Sequence[R], free_places: int = 0) -> list[R]:
        """Under ``rr``, which of the ``running`` requests give way now: those that have
        generated their quantum in this slice, one for each request waiting beyond the
        ``free_places`` that need no one to yield. Under ``fifo``, none. This is the one
        place that decides who yields, on every executor that preempts."""
        budget = self.slice_budget()
        if budget is None:
            return []
        spent = [r for r in running if r.request.kind == "generate" and r.produced >= budget]
        if not spent:
            return []
        with self._ready:
            waiting = len(self._queue) - free_places
        return spent[: max(waiting, 0)]

    def forget(self, run_id: str) -> None:
        """A run ended: its place in the round-robin is not kept."""
        with self._ready:
            self._last_admitted.pop(run_id, None)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._queue)
