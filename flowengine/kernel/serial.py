"""The serial executor: the ready queue is served one slice at a time, each request on a
KV cache of its run (ctransformers, the scripted backend; neither is thread-safe, so one
thread at a time holds the model and every cache).

A worker thread serves the queue. A run that asks while the model is free and nobody is
waiting serves its own request on its own thread (``serve_now``): the same slice, without
handing the request to the worker and the answer back, which is most of an instant
step's cost. It holds the model as the worker would, and yields to waiting requests the
same way.

It drives the requests' tasks (``kernel/decoding.py``), answering each need at once on the
request's cache. Under ``rr`` a request that has generated a quantum of tokens yields
before its next token is evaluated, if another is waiting; it resumes from its tokens when
it is next admitted, on its own cache or on one rebuilt by replaying its evaluation log
(``ContextPool.acquire``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from flowengine.kernel.backends.base import CachingBackend, KVCache
from flowengine.kernel.context import ContextPool, RunCache, replay
from flowengine.kernel.decoding import Decoder, LocalExecutor, Score, Stay
from flowengine.kernel.llm_request import LLMRequest, SliceRecord
from flowengine.kernel.scheduler import ReadyQueue


class CacheDistribution:
    """The distribution a KV cache holds after its last evaluation. The cache samples
    itself: ctransformers keeps its own recent tokens for the repetition penalty."""

    def __init__(self, cache: KVCache) -> None:
        self._cache = cache

    def next_token(self, recent: Sequence[int], allowed: Any) -> int:
        return self._cache.next_token(allowed)

    def log_prob(self, token: int) -> float:
        return self._cache.log_prob(token)


def evaluate(holder: RunCache[KVCache], start: int, tokens: Sequence[int]) -> KVCache:
    """Evaluate ``tokens`` on the holder's cache from position ``start``, in one call."""
    cache = holder.place
    assert cache is not None
    holder.truncate(start)
    cache.evaluate(tokens)
    holder.record(start, tokens)
    return cache


class SerialExecutor(LocalExecutor[KVCache]):
    """Serves every LLM request of a kernel on a backend of KV caches, one at a time."""

    def __init__(
        self,
        backend: CachingBackend,
        decoder: Decoder,
        queue: ReadyQueue,
        record_slice: Callable[[SliceRecord], None],
        finish: Callable[[LLMRequest], None],
        pool_size: int,
        reuse_prefix: bool = True,
    ) -> None:
        pool: ContextPool[KVCache] = ContextPool(
            backend.new_cache, pool_size, reuse_prefix, rebuild=replay
        )
        super().__init__(decoder, queue, pool, record_slice, finish, "kernel-llm")
        self._model = threading.Lock()
        """Held by the thread serving the model: the worker, or a run in ``serve_now``."""
        self._closed = False
        self._worker.start()

    def serve_now(self, request: LLMRequest) -> bool:
        """Serve ``request`` on this thread if the model is free and nobody waits; False
        (nothing done) otherwise. Under ``rr`` it may yield and go to the queue."""
        if not self._model.acquire(blocking=False):
            return False
        try:
            if len(self.queue) or self._closed:
                return False  # those waiting go first
            self.queue.admitted(request.run_id)  # rr counts this turn as the worker's
            self._run(request)
            return True
        finally:
            self._model.release()

    def close(self) -> None:
        """Serve what is queued, stop the worker, and wait for a run serving itself."""
        super().close()
        with self._model:
            self._closed = True

    def _serve(self) -> None:
        while self.queue.wait():
            with self._model:
                taken = self.queue.take_upto(1, wait=False)
                if taken:
                    self._run(taken[0])

    def _run(self, request: LLMRequest) -> None:
        """One slice of ``request``: to its end, or until it yields."""
        stay = self._admit(request)
        while stay is not None and not stay.left:
            if self.queue.yielders([stay]):
                self._leave(stay, preempted=True)
                break
            try:
                answer = self._answer(stay)
            except Exception as exc:  # one bad request must not stop the kernel
                self._fail(stay, exc)
                break
            self._advance(stay, answer)

    def _answer(self, stay: Stay[KVCache]) -> Any:
        need = stay.need
        assert need is not None
        stay.evaluated += len(need.tokens)
        if isinstance(need, Score):
            # A KV cache gives the distribution after its last token only: one at a time.
            scores = []
            for index, (token, target) in enumerate(zip(need.tokens, need.targets, strict=True)):
                cache = evaluate(stay.holder, need.start + index, [token])
                scores.append(cache.log_prob(target))
            return scores
        return CacheDistribution(evaluate(stay.holder, need.start, need.tokens))
