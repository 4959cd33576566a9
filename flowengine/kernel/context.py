"""The context manager: which place (a KV cache, or a sequence of a shared context) a
request runs on, and how a place lost to another run is rebuilt.

A run keeps one place from step to step, so each step's prompt, which extends the
previous one, costs only its new tokens. A pool of places serves all runs; when every
place is taken, the least recently used one that is not running is given up, preferring
runs between steps to preempted requests. The same pool serves the serial executor
(ctransformers: KV caches) and the batched one (llama.cpp: sequence ids of one context).

On the serial path each run's place keeps an evaluation log: the chunks of tokens it
evaluated, at the positions it evaluated them, in order. llama.cpp's numbers depend on how
tokens were batched, so a cache is rebuilt by replaying that log exactly (not by
evaluating the tokens in one go): greedy output is then the same whether a run ran alone
or among others, under ``fifo`` or ``rr``, and with or without evictions. This is where a
preempted or evicted request gets its place back: ``ContextPool.acquire``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from flowengine.errors import ContextOverflow
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import KVCache
from flowengine.kernel.llm_request import LLMRequest


class Place(Protocol):
    """Where a run's tokens are held: it can at least forget what follows a position."""

    def truncate(self, length: int) -> None: ...


P = TypeVar("P", bound=Place)


@dataclass
class Chunk:
    """Tokens evaluated in one call, the first of them at position ``start``."""

    start: int
    tokens: list[int]

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


class EvaluationLog:
    """What a place holds and, with ``chunks``, how it got there: enough to rebuild it
    bit for bit."""

    def __init__(self, chunks: bool = True) -> None:
        self.tokens: list[int] = []
        self.chunks: list[Chunk] | None = [] if chunks else None

    def truncate(self, length: int) -> None:
        del self.tokens[length:]
        # Chunks that began at or after ``length`` computed nothing the place still holds.
        while self.chunks and self.chunks[-1].start >= length:
            self.chunks.pop()

    def record(self, start: int, evaluated: Sequence[int]) -> None:
        self.truncate(start)
        self.tokens.extend(evaluated)
        if self.chunks is not None:
            self.chunks.append(Chunk(start, list(evaluated)))


class RunCache(Generic[P]):
    """One run's (or one request's) hold on a place: what it holds, and its log."""

    def __init__(self, key: str, chunks: bool = True) -> None:
        self.key = key
        self.log = EvaluationLog(chunks)
        self.place: P | None = None
        self.last_used = time.monotonic()
        self.busy_with: str | None = None
        """The id of the unfinished request on this cache, if any (running or preempted)."""
        self.running = False
        """Whether that request is on the model now (its place cannot be taken)."""

    @property
    def tokens(self) -> list[int]:
        return self.log.tokens

    def truncate(self, length: int) -> None:
        """Forget what follows the first ``length`` tokens, in the place and the log."""
        if len(self.log.tokens) > length:
            assert self.place is not None
            self.place.truncate(length)
            self.log.truncate(length)

    def record(self, start: int, evaluated: Sequence[int]) -> None:
        """``evaluated`` now stands in the place from position ``start`` on."""
        self.log.record(start, evaluated)


def replay(holder: RunCache[KVCache], cache: KVCache) -> int:
    """Rebuild ``holder``'s log on ``cache`` (emptied first); returns tokens evaluated."""
    cache.truncate(0)
    evaluated = 0
    for chunk in holder.log.chunks or ():
        cache.truncate(chunk.start)
        cache.evaluate(chunk.tokens)
        evaluated += len(chunk.tokens)
    cache.truncate(len(holder.tokens))
    return evaluated


def refill(holder: RunCache[P], place: P) -> int:
    """Empty ``place`` and ``holder``: the request's task evaluates again what it lacks."""
    place.truncate(0)
    holder.log.truncate(0)
    return 0


class ContextPool(Generic[P]):
    """Hands places to runs; only the executor's worker thread calls it (but ``forget``).

    ``new_place`` makes one (up to ``size``); ``rebuild`` makes a place taken from another
    run hold what the run had (``replay``), or empties it (``refill``), and says how many
    tokens that evaluated."""

    def __init__(
        self,
        new_place: Callable[[], P],
        size: int = defaults.POOL_SIZE,
        reuse_prefix: bool = True,
        rebuild: Callable[[RunCache[P], P], int] = refill,
        chunks: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("the context pool needs at least one context")
        self._new_place = new_place
        self.size = size
        self.reuse_prefix = reuse_prefix
        self._rebuild = rebuild
        self._chunks = chunks
        self._places: list[P] = []
        self._holders: dict[str, RunCache[P]] = {}
        """Every run cache with a log, whether or not it holds a place now."""
        self._ended: deque[str] = deque()
        self.evictions = 0
        self.replayed_tokens = 0

    def acquire(self, request: LLMRequest) -> tuple[RunCache[P], int, bool]:
        """The run cache ``request`` runs on; how many tokens were evaluated to rebuild it
        because its place had been given to another run; and whether it had held anything
        (then the request is restored, not started afresh)."""
        self._drop_ended()
        holder = self._holder_for(request)
        holder.busy_with = request.id
        holder.running = True
        holder.last_used = time.monotonic()
        if holder.place is not None:
            return holder, 0, False
        restored = bool(holder.tokens)
        holder.place = self._free_place(holder)
        rebuilt = self._rebuild(holder, holder.place)
        self.replayed_tokens += rebuilt
        return holder, rebuilt, restored

    def release(self, request: LLMRequest, preempted: bool = False, failed: bool = False) -> None:
        """The request leaves the model. Preempted, it keeps its cache unless another run
        needs it; done, its run keeps the cache (and log) for the next step; failed, what
        the cache holds is not trusted and it is dropped."""
        holder = self._holders.get(self._key(request))
        if holder is None or holder.busy_with != request.id:
            holder = self._holders.get(request.id)
        if holder is None:
            return
        holder.running = False
        holder.last_used = time.monotonic()
        if preempted:
            return
        holder.busy_with = None
        if failed or holder.key == request.id or not self.reuse_prefix:
            self._drop(holder)

    def forget(self, key: str) -> None:
        """A run ended: free its cache and its log. Any thread may call this; the worker
        acts on it before it next hands out a cache."""
        self._ended.append(key)

    def _drop_ended(self) -> None:
        while self._ended:
            holder = self._holders.get(self._ended.popleft())
            if holder is not None and holder.busy_with is None:
                self._drop(holder)

    def prewarm(self, count: int | None = None) -> None:
        """Create places now rather than on first use (benchmarks time the steady state)."""
        while len(self._places) < min(count or self.size, self.size):
            self._places.append(self._new_place())

    def _key(self, request: LLMRequest) -> str:
        return request.run_id if self.reuse_prefix else request.id

    def _holder_for(self, request: LLMRequest) -> RunCache[P]:
        key = self._key(request)
        holder = self._holders.get(key)
        if holder is not None and holder.busy_with not in (None, request.id):
            key = request.id  # the run has another request in flight: use a cache of its own
            holder = self._holders.get(key)
        if holder is None:
            holder = self._holders[key] = RunCache(key, self._chunks)
        return holder

    def _drop(self, holder: RunCache[P]) -> None:
        self._holders.pop(holder.key, None)
        holder.place = None  # the place stays in the pool for the next run

    def _free_place(self, holder: RunCache[P]) -> P:
        taken = {id(h.place) for h in self._holders.values() if h.place is not None}
        for place in self._places:
            if id(place) not in taken:
                return place
        if len(self._places) < self.size:
            self._places.append(self._new_place())
            return self._places[-1]
        # Every place is held: take it from the run that used it least recently, preferring
        # runs between steps to a preempted request; never from a request running now.
        owners = [
            h
            for h in self._holders.values()
            if h.place is not None and not h.running and h is not holder
        ]
        victim = min(owners, key=lambda h: (h.busy_with is not None, h.last_used))
        taken_place, victim.place = victim.place, None
        assert taken_place is not None
        self.evictions += 1
        return taken_place


def fit_prompt(
    render: Callable[[int], str],
    encode: Callable[[str], list[int]],
    budget: int,
    entries: int,
    start: int = 0,
) -> tuple[str, list[int], int]:
    """The prompt that fits ``budget`` tokens, leaving out the oldest progress entries.

    ``render(k)`` builds the prompt without the ``k`` oldest of ``entries`` entries.
    ``start`` entries are already left out. If that no longer fits, half of the entries
    that would still fit are left out too, at once: the beginning of the prompt then stays
    the same for many steps, and the run's KV cache keeps serving it. Returns the text, its
    tokens and how many entries are left out; raises ContextOverflow if even leaving out
    all of them is too long.
    """
    start = min(start, entries)
    text = render(start)
    tokens = encode(text)
    if len(tokens) <= budget:
        return text, tokens, start
    low, high = start + 1, entries
    least: int | None = None
    while low <= high:
        middle = (low + high) // 2
        if len(encode(render(middle))) <= budget:
            least, high = middle, middle - 1
        else:
            low = middle + 1
    if least is None:
        shortest = len(encode(render(entries)))
        raise ContextOverflow(
            f"the prompt needs {shortest} tokens without any progress log, and the model's "
            f"window leaves {budget}; shorten the instruction or the inputs, or use a model "
            "with a longer context"
        )
    dropped = least + (entries - least) // 2
    text = render(dropped)
    return text, encode(text), dropped
