"""The batched executor: continuous batching of many runs' requests on one llama.cpp context.

At every tick, the next token of every active request and prompt chunks of newly admitted
ones go into one decode (``_tick``), up to ``max_batch`` requests and ``tick_tokens``
tokens: one pass over the weights serves them all. Each request is a small task
(``_generate``, ``_choose``) that asks for tokens to be evaluated and gets their logits
back; sampling and #8's constrained decoding happen per request.

The scheduler decides admission and priority: ``fifo`` admits in arrival order and runs
each admitted request to its end; ``rr`` also admits in arrival order, but when requests
are waiting for a place in a full batch, one that has generated ``quantum`` tokens leaves
the batch for the back of the queue. It keeps its sequence (its KV cache) unless that is
given to another run, in which case it is rebuilt when the request comes back. This is
where a preempted request resumes on this backend: ``_admit``.

Each run keeps its sequence between steps, so a step's prompt costs only its new tokens.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowengine.kernel.backends.llamacpp import Feed, LlamaCppBackend
from flowengine.kernel.llm_request import ContentFreeScores, LLMRequest, SliceRecord, TickRecord
from flowengine.kernel.sampling import RECENT_TOKENS, greedy, log_prob
from flowengine.kernel.scheduler import SchedulerConfig


@dataclass
class Need:
    """Tokens a task wants evaluated on its sequence from position ``start`` on, and the
    logits rows it wants back (``last`` or ``all``)."""

    tokens: list[int]
    start: int
    logits: str = "last"


@dataclass
class SequenceSlot:
    """One sequence id of the shared context and what its KV cache holds."""

    id: int
    owner: str | None = None
    """The run (or, for a run's second request in flight, the request) it belongs to."""
    tokens: list[int] = field(default_factory=list)
    running: str | None = None
    """The id of the request in the batch on it, if any."""
    last_used: float = 0.0


@dataclass
class Resident:
    """A request admitted to the batch, from admission until it leaves it."""

    request: LLMRequest
    slot: SequenceSlot
    task: Generator[Need, np.ndarray, None]
    need: Need | None = None
    fed: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    produced: int = 0
    evaluated: int = 0
    restored: bool = False


Task = Generator[Need, np.ndarray, None]


class BatchedExecutor:
    """Serves every LLM request of a kernel on a batched backend, one worker thread."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        scheduler: SchedulerConfig,
        record_slice: Callable[[SliceRecord], None],
        record_tick: Callable[[TickRecord], None],
        finish: Callable[[LLMRequest], None],
        constraint_for: Callable[[LLMRequest], Any],
        content_free_scores: ContentFreeScores,
        reuse_prefix: bool = True,
    ) -> None:
        self._backend = backend
        self._scheduler = scheduler
        self._record_slice = record_slice
        self._record_tick = record_tick
        self._finish = finish
        self._constraint_for = constraint_for
        self._content_free_scores = content_free_scores
        self.reuse_prefix = reuse_prefix
        self.max_batch = backend.max_batch
        self.tick_tokens = backend.tick_tokens
        self._slots = [SequenceSlot(i) for i in range(backend.sequences)]
        self._waiting: deque[LLMRequest] = deque()
        self._ended: deque[str] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._active: list[Resident] = []
        self.ticks = 0
        self.evictions = 0
        self._worker = threading.Thread(target=self._serve, name="kernel-batch", daemon=True)
        self._worker.start()

    # -- the queue (any thread) ---------------------------------------------------------

    def put(self, request: LLMRequest) -> None:
        with self._ready:
            self._waiting.append(request)
            self._ready.notify()

    def put_all(self, requests: list[LLMRequest]) -> None:
        with self._ready:
            self._waiting.extend(requests)
            self._ready.notify()

    def decode(self, tokens: Sequence[int]) -> str:
        """Generated tokens as text, in the backend's vocabulary."""
        return self._backend.decode(tokens)

    def forget(self, run_id: str) -> None:
        """A run ended: its sequence is free once the worker next admits."""
        with self._ready:
            self._ended.append(run_id)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._worker.join()

    # -- the worker ---------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._active and not self._closed:
                    self._ready.wait()
                if self._closed and not self._waiting and not self._active:
                    return
                self._free_ended()
                admitted = self._take_admissions()
            try:
                for request in admitted:
                    self._admit(request)
                if self._active:
                    self._tick()
            except Exception as exc:  # a bug here must fail the requests, not hang them
                for resident in list(self._active):
                    self._fail(resident, f"{type(exc).__name__}: {exc}")

    def _free_ended(self) -> None:
        while self._ended:
            key = self._ended.popleft()
            for slot in self._slots:
                if slot.owner == key and slot.running is None:
                    self._clear(slot)

    def _take_admissions(self) -> list[LLMRequest]:
        """Requests that get a place in the batch now, in order (the queue is locked)."""
        taken: list[LLMRequest] = []
        while self._waiting and len(self._active) + len(taken) < self.max_batch:
            taken.append(self._waiting.popleft())
        return taken

    def _admit(self, request: LLMRequest) -> None:
        """Give ``request`` a sequence and start (or resume) its task."""
        slot, rebuilt = self._slot_for(request)
        resident = Resident(request, slot, self._task_for(request))
        if request.first_start is None:
            request.first_start = resident.started
        if rebuilt and request.slices > 0:
            # A preempted request whose KV cache went to another run: rebuilt now.
            resident.restored = True
            request.restores += 1
        slot.running = request.id
        slot.last_used = time.monotonic()
        self._active.append(resident)
        self._advance(resident, None)

    def _slot_for(self, request: LLMRequest) -> tuple[SequenceSlot, bool]:
        """The run's own sequence if it has one free, else a free or least recently used
        one (emptied); and whether it had to be taken from elsewhere."""
        key = request.run_id if self.reuse_prefix else request.id
        own = next((s for s in self._slots if s.owner == key), None)
        if own is not None and own.running is None:
            return own, False
        if own is not None:
            key = request.id  # the run has another request in the batch
        idle = [s for s in self._slots if s.running is None]
        free = [s for s in idle if s.owner is None]
        if free:
            slot = free[0]
        else:
            slot = min(idle, key=lambda s: s.last_used)
            self.evictions += 1
            self._clear(slot)
        slot.owner = key
        return slot, True

    def _clear(self, slot: SequenceSlot) -> None:
        if slot.tokens:
            self._backend.forget(slot.id)
        slot.tokens = []
        slot.owner = None

    def _tick(self) -> None:
        """One decode: every active request's pending tokens, as many as fit."""
        room = self.tick_tokens
        plan: list[tuple[Resident, int]] = []
        # The next token of every generating request first, so decoding never waits
        # behind a long prompt; prompt chunks fill what is left.
        for resident in sorted(self._active, key=lambda r: self._pending(r) > 1):
            take = min(self._pending(resident), room)
            if take > 0:
                plan.append((resident, take))
                room -= take
        if not plan:
            return
        feeds = []
        for resident, take in plan:
            need = resident.need
            assert need is not None
            complete = resident.fed + take == len(need.tokens)
            wanted = need.logits if complete or need.logits == "all" else "none"
            feeds.append(
                Feed(
                    resident.slot.id,
                    need.tokens[resident.fed : resident.fed + take],
                    need.start + resident.fed,
                    wanted,
                )
            )
        started = time.time()
        try:
            rows = self._backend.decode_batch(feeds)
        except Exception as exc:
            for resident, _ in plan:
                self._fail(resident, f"{type(exc).__name__}: {exc}")
            return
        ended = time.time()
        self.ticks += 1
        self._record_tick(
            TickRecord(
                index=self.ticks,
                start=started,
                end=ended,
                sequences=len(feeds),
                tokens=sum(len(f.tokens) for f in feeds),
                prompt_tokens=sum(len(f.tokens) for f in feeds if len(f.tokens) > 1),
                request_ids=[resident.request.id for resident, _ in plan],
            )
        )
        for (resident, take), feed, got in zip(plan, feeds, rows, strict=True):
            assert resident.need is not None
            resident.slot.tokens.extend(feed.tokens)
            resident.fed += take
            resident.evaluated += take
            if got.size:
                resident.rows.append(got)
            if resident.fed == len(resident.need.tokens):
                answer = np.concatenate(resident.rows) if resident.rows else got
                self._advance(resident, answer)
        self._preempt()

    def _pending(self, resident: Resident) -> int:
        return len(resident.need.tokens) - resident.fed if resident.need else 0

    def _advance(self, resident: Resident, answer: np.ndarray | None) -> None:
        """Give the task its logits; it asks for more tokens or is done."""
        try:
            need = resident.task.send(answer) if answer is not None else next(resident.task)
        except StopIteration:
            self._leave(resident, preempted=False)
            return
        except Exception as exc:  # one bad request must not stop the others
            self._fail(resident, f"{type(exc).__name__}: {exc}")
            return
        slot = resident.slot
        if len(slot.tokens) > need.start:
            self._backend.forget(slot.id, need.start)
            del slot.tokens[need.start :]
        resident.need, resident.fed, resident.rows = need, 0, []

    def _preempt(self) -> None:
        """``rr``: with requests waiting for a full batch, those that used their quantum
        leave it (keeping their sequence) for the back of the queue."""
        if self._scheduler.policy != "rr":
            return
        with self._ready:
            # Only those that cannot get a free place count.
            waiting = len(self._waiting) - (self.max_batch - len(self._active))
        for resident in list(self._active):
            if waiting <= 0:
                break
            if resident.request.kind == "generate" and resident.produced >= self._scheduler.quantum:
                self._leave(resident, preempted=True)
                waiting -= 1

    def _leave(self, resident: Resident, preempted: bool) -> None:
        request = resident.request
        ended = time.time()
        self._active.remove(resident)
        request.service += ended - resident.started
        request.evaluated_tokens += resident.evaluated
        record = SliceRecord(
            request.id,
            request.run_id,
            request.slices,
            resident.started,
            ended,
            resident.produced,
            resident.evaluated,
            resident.restored,
            preempted,
        )
        request.slices += 1
        slot = resident.slot
        slot.running = None
        slot.last_used = time.monotonic()
        if slot.owner == request.id and not preempted:
            self._clear(slot)  # a sequence of its own for one request: not kept
        resident.task.close()
        self._record_slice(record)
        if preempted:
            request.preemptions += 1
            self.put(request)
        else:
            request.finished = True
            self._finish(request)

    def _fail(self, resident: Resident, message: str) -> None:
        resident.request.error = message
        self._clear(resident.slot)
        self._leave(resident, preempted=False)

    # -- the tasks ----------------------------------------------------------------------

    def _task_for(self, request: LLMRequest) -> Task:
        if request.kind == "choose":
            return self._choose(request)
        return self._generate(request)

    def _prepare(
        self, request: LLMRequest, tokens: Sequence[int], first: bool = False
    ) -> Generator[Need, Any, Any]:
        """Make the request's sequence hold ``tokens``, evaluating only what it lacks
        (at least the last token, whose logits come back). ``first``: this is the
        request's prompt at its first admission, whose reuse is recorded."""
        if not tokens:
            raise ValueError("an empty prompt has nothing to continue")
        slot = next(s for s in self._slots if s.running == request.id)
        held = slot.tokens
        limit = min(len(held), len(tokens) - 1)
        shared = 0
        while shared < limit and held[shared] == tokens[shared]:
            shared += 1
        if first and request.slices == 0:
            request.reused_tokens = shared
        rows = yield Need(list(tokens[shared:]), shared)
        return rows[-1]

    def _generate(self, request: LLMRequest) -> Task:
        logits = yield from self._prepare(request, request.tokens, first=True)
        constraint = self._constraint_for(request)
        resident = next(r for r in self._active if r.request is request)
        while len(request.output_tokens) < request.max_tokens and not (
            constraint is not None and constraint.finished
        ):
            allowed = constraint.allowed() if constraint is not None else None
            token = greedy(logits, request.tokens[-RECENT_TOKENS:], allowed)
            if self._backend.is_end(token):
                return
            if constraint is not None:
                constraint.consume(token)
            request.output_tokens.append(token)
            resident.produced += 1
            if len(request.output_tokens) >= request.max_tokens or (
                constraint is not None and constraint.finished
            ):
                return  # the last token need not be evaluated
            rows = yield Need([token], len(request.tokens) - 1)
            logits = rows[-1]

    def _choose(self, request: LLMRequest) -> Task:
        raw = yield from self._label_scores(request, request.prompt_tokens, first=True)
        baseline = None
        if request.content_free_tokens:
            baseline = self._content_free_scores.get(request)
            if baseline is None:
                baseline = yield from self._label_scores(request, request.content_free_tokens)
                self._content_free_scores.put(request, baseline)
        request.settle_choice(raw, baseline)

    def _label_scores(
        self, request: LLMRequest, prompt: list[int], first: bool = False
    ) -> Generator[Need, Any, dict[str, float]]:
        """Each label's total log-probability as the reply to ``prompt``."""
        logits = yield from self._prepare(request, prompt, first)
        scores: dict[str, float] = {}
        for label, tokens in zip(request.labels, request.label_tokens, strict=True):
            total = log_prob(logits, tokens[0])
            if len(tokens) > 1:
                rows = yield Need(list(tokens[:-1]), len(prompt), "all")
                total += sum(log_prob(row, t) for row, t in zip(rows, tokens[1:], strict=True))
            scores[label] = total
        return scores
