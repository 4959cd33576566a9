"""The batched executor: continuous batching of many runs' requests on one llama.cpp context.

At every tick, the next token of every active request and prompt chunks of newly admitted
ones go into one decode (``_tick``), up to ``max_batch`` requests and ``tick_tokens``
tokens: one pass over the weights serves them all. Each request is the same task as on the
serial path (``kernel/decoding.py``); here its needs wait for the next tick, and their
logits rows come back from the batch. Sampling and constrained decoding happen per request.

The scheduler (``kernel/scheduler.py``) decides admission and who yields: ``fifo`` runs
each admitted request to its end; under ``rr``, when requests are waiting for a place in a
full batch, one that has generated ``quantum`` tokens leaves the batch for the queue. It
keeps its sequence (its KV cache) unless that is given to another run, in which case its
task evaluates its tokens again when it comes back (``ContextPool.acquire``, ``refill``).

Each run keeps its sequence between steps, so a step's prompt costs only its new tokens.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowengine.kernel.backends.llamacpp import Feed, LlamaCppBackend
from flowengine.kernel.context import ContextPool
from flowengine.kernel.decoding import Decoder, LocalExecutor, Logits, Need, Score, Stay
from flowengine.kernel.llm_request import LLMRequest, SliceRecord, TickRecord
from flowengine.kernel.sampling import log_prob
from flowengine.kernel.scheduler import ReadyQueue


@dataclass
class SequencePlace:
    """One sequence id of the shared context: a place in the context pool."""

    id: int
    backend: LlamaCppBackend = field(repr=False)

    def truncate(self, length: int) -> None:
        self.backend.forget(self.id, length)


class Resident(Stay[SequencePlace]):
    """A request in the batch: its need is fed over one or more ticks."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.fed = 0
        """Tokens of the need decoded so far."""
        self.rows: list[np.ndarray] = []
        """The logits rows they gave, as the need wants them."""

    @property
    def pending(self) -> int:
        return len(self.need.tokens) - self.fed if self.need is not None else 0


class BatchedExecutor(LocalExecutor[SequencePlace]):
    """Serves every LLM request of a kernel on a batched backend, one worker thread."""

    stay_type = Resident

    def __init__(
        self,
        backend: LlamaCppBackend,
        decoder: Decoder,
        queue: ReadyQueue,
        record_slice: Callable[[SliceRecord], None],
        record_tick: Callable[[TickRecord], None],
        finish: Callable[[LLMRequest], None],
        reuse_prefix: bool = True,
    ) -> None:
        ids = itertools.count()
        pool: ContextPool[SequencePlace] = ContextPool(
            lambda: SequencePlace(next(ids), backend), backend.sequences, reuse_prefix, chunks=False
        )
        super().__init__(decoder, queue, pool, record_slice, finish, "kernel-batch")
        self._backend = backend
        self._record_tick = record_tick
        self.max_batch = backend.max_batch
        self.tick_tokens = backend.tick_tokens
        self._active: list[Resident] = []
        self.ticks = 0
        self._worker.start()

    # -- the worker ---------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            room = self.max_batch - len(self._active)
            admitted = self.queue.take_upto(room, wait=not self._active)
            if admitted is None and not self._active:
                return
            for request in admitted or ():
                try:
                    self._admit(request)
                except Exception as exc:  # fails this request only, never hangs it
                    self._fail_unadmitted(request, exc)
            try:
                if self._active:
                    self._tick()
            except Exception as exc:  # a bug here must fail the requests, not hang them
                for resident in list(self._active):
                    try:
                        self._fail(resident, exc)
                    except Exception as again:
                        self._fail_unadmitted(resident.request, again)

    def _fail_unadmitted(self, request: LLMRequest, exc: Exception) -> None:
        """A request whose admission (or failure) itself failed: it leaves the batch if it
        entered it, and its run gets it back with the error."""
        self._active[:] = [stay for stay in self._active if stay.request is not request]
        request.error = request.error or f"{type(exc).__name__}: {exc}"
        request.finished = True
        self._finish(request)

    def _enter(self, stay: Stay[SequencePlace]) -> None:
        self._active.append(stay)  # type: ignore[arg-type]

    def _advance(self, stay: Stay[SequencePlace], answer: Any) -> None:
        super()._advance(stay, answer)
        if not stay.left:
            assert isinstance(stay, Resident) and stay.need is not None
            # The sequence holds nothing beyond where the need starts.
            stay.holder.truncate(stay.need.start)
            stay.fed, stay.rows = 0, []

    def _leave(self, stay: Stay[SequencePlace], preempted: bool) -> None:
        self._active.remove(stay)  # type: ignore[arg-type]
        super()._leave(stay, preempted)

    def _tick(self) -> None:
        """One decode: every active request's pending tokens, as many as fit."""
        room = self.tick_tokens
        plan: list[tuple[Resident, int]] = []
        # The next token of every generating request first, so decoding never waits
        # behind a long prompt; prompt chunks fill what is left.
        for resident in sorted(self._active, key=lambda r: r.pending > 1):
            take = min(resident.pending, room)
            if take > 0:
                plan.append((resident, take))
                room -= take
        if not plan:
            return
        feeds = []
        for resident, take in plan:
            need = resident.need
            assert need is not None and resident.holder.place is not None
            complete = resident.fed + take == len(need.tokens)
            scoring = isinstance(need, Score)
            feeds.append(
                Feed(
                    resident.holder.place.id,
                    need.tokens[resident.fed : resident.fed + take],
                    need.start + resident.fed,
                    "all" if scoring else "last" if complete else "none",
                )
            )
        started = time.time()
        try:
            rows = self._backend.decode_batch(feeds)
        except Exception as exc:
            for resident, _ in plan:
                self._fail(resident, exc)
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
            need = resident.need
            assert need is not None
            resident.holder.record(feed.start, feed.tokens)
            resident.fed += take
            resident.evaluated += take
            if got.size:
                resident.rows.append(got)
            if resident.fed == len(need.tokens):
                self._advance(resident, self._answer(need, resident.rows))
        for resident in self.queue.yielders(
            self._active, free_places=self.max_batch - len(self._active)
        ):
            self._leave(resident, preempted=True)

    @staticmethod
    def _answer(need: Need, rows: list[np.ndarray]) -> Any:
        if isinstance(need, Score):
            every = np.concatenate(rows)
            return [log_prob(row, t) for row, t in zip(every, need.targets, strict=True)]
        return Logits(rows[-1][-1])
