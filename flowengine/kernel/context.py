"""The context manager: which KV cache a request runs on, and how a lost cache is rebuilt.

A run keeps one KV cache from step to step, so each step's prompt, which extends the
previous one, costs only its new tokens. A small pool of caches (weights shared) serves
all runs; when every cache is taken, the least recently used one that is not running is
given up. Each run's cache keeps an evaluation log: the chunks of tokens it evaluated, at
the positions it evaluated them, in order. llama.cpp's numbers depend on how tokens were
batched, so a cache is rebuilt by replaying that log exactly (not by evaluating the tokens
in one go): greedy output is then the same whether a run ran alone or among others, under
``fifo`` or ``rr``, and with or without evictions. This is where a preempted or evicted
request resumes: ``ContextPool.acquire``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowengine.errors import ContextOverflow
from flowengine.kernel import defaults
from flowengine.kernel.backends.base import CachingBackend, KVCache
from flowengine.kernel.llm_request import LLMRequest


@dataclass
class Chunk:
    """Tokens evaluated in one call, the first of them at position ``start``."""

    start: int
    tokens: list[int]

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclass
class EvaluationLog:
    """What a cache holds and how it got there; enough to rebuild it bit for bit."""

    tokens: list[int] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)

    def record(self, start: int, evaluated: Sequence[int]) -> None:
        # Chunks that began at or after ``start`` computed nothing the cache still holds.
        while self.chunks and self.chunks[-1].start >= start:
            self.chunks.pop()
        self.chunks.append(Chunk(start, list(evaluated)))
        self.tokens = self.tokens[:start] + list(evaluated)


class RunCache:
    """One run's (or one request's) view of a KV cache: prefix reuse plus the log."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.log = EvaluationLog()
        self.cache: KVCache | None = None
        self.last_used = time.monotonic()
        self.busy_with: str | None = None
        """The id of the unfinished request running on this cache, if any."""

    @property
    def tokens(self) -> list[int]:
        return self.log.tokens

    def feed(self, tokens: Sequence[int]) -> int:
        """Make the cache hold exactly ``tokens``, evaluating only what is new.

        At least the last token is evaluated, so the logits are those after ``tokens``.
        Returns how many tokens were evaluated."""
        assert self.cache is not None
        tokens = list(tokens)
        held = self.log.tokens
        if tokens == held:
            return 0
        shared = 0
        limit = min(len(held), len(tokens) - 1)
        while shared < limit and held[shared] == tokens[shared]:
            shared += 1
        evaluated = tokens[shared:]
        self.cache.truncate(shared)
        self.cache.evaluate(evaluated)
        self.log.record(shared, evaluated)
        return len(evaluated)

    def next_token(self, allowed: Any = None) -> int:
        assert self.cache is not None
        return self.cache.next_token(allowed)

    def log_prob(self, token: int) -> float:
        assert self.cache is not None
        return self.cache.log_prob(token)

    def replay(self, cache: KVCache) -> int:
        """Rebuild this log on ``cache`` (emptied first); returns tokens evaluated."""
        cache.truncate(0)
        evaluated = 0
        for chunk in self.log.chunks:
            cache.truncate(chunk.start)
            cache.evaluate(chunk.tokens)
            evaluated += len(chunk.tokens)
        cache.truncate(len(self.log.tokens))
        self.cache = cache
        return evaluated


class ContextPool:
    """Hands KV caches to runs; only the kernel's worker thread calls it."""

    def __init__(
        self, backend: CachingBackend, size: int = defaults.POOL_SIZE, reuse_prefix: bool = True
    ) -> None:
        if size < 1:
            raise ValueError("the context pool needs at least one context")
        self._backend = backend
        self.size = size
        self.reuse_prefix = reuse_prefix
        self._caches: list[KVCache] = []
        self._holders: dict[str, RunCache] = {}
        """Every run cache with a log, whether or not it holds a KV cache now."""
        self._ended: deque[str] = deque()
        self.evictions = 0
        self.replayed_tokens = 0

    def acquire(self, request: LLMRequest) -> tuple[RunCache, int]:
        """The cache ``request`` runs on, and how many tokens were evaluated to rebuild it
        from its log because its KV cache had been given to another run (0: none)."""
        self._drop_ended()
        holder = self._holder_for(request)
        holder.busy_with = request.id
        holder.last_used = time.monotonic()
        if holder.cache is not None:
            return holder, 0
        replayed = holder.replay(self._free_cache(holder))
        self.replayed_tokens += replayed
        return holder, replayed

    def release(self, request: LLMRequest) -> None:
        """The request is done; its run keeps its cache (and log) for the next step."""
        holder = self._holders.get(self._key(request))
        if holder is None or holder.busy_with != request.id:
            holder = self._holders.get(request.id)
        if holder is None:
            return
        holder.busy_with = None
        if holder.key == request.id or not self.reuse_prefix:
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
        """Create caches now rather than on first use (benchmarks time the steady state)."""
        while len(self._caches) < min(count or self.size, self.size):
            self._caches.append(self._backend.new_cache())

    def _key(self, request: LLMRequest) -> str:
        return request.run_id if self.reuse_prefix else request.id

    def _holder_for(self, request: LLMRequest) -> RunCache:
        key = self._key(request)
        holder = self._holders.get(key)
        if holder is not None and holder.busy_with not in (None, request.id):
            key = request.id  # the run has another request in flight: use a cache of its own
            holder = self._holders.get(key)
        if holder is None:
            holder = self._holders[key] = RunCache(key)
        return holder

    def _drop(self, holder: RunCache) -> None:
        self._holders.pop(holder.key, None)
        holder.cache = None  # its KV cache stays in self._caches for the next run

    def _free_cache(self, holder: RunCache) -> KVCache:
        taken = {id(h.cache) for h in self._holders.values() if h.cache is not None}
        for cache in self._caches:
            if id(cache) not in taken:
                return cache
        if len(self._caches) < self.size:
            self._caches.append(self._backend.new_cache())
            return self._caches[-1]
        # Every cache is held: take it from the run that used it least recently, preferring
        # runs between steps to a preempted request.
        owners = [h for h in self._holders.values() if h.cache is not None and h is not holder]
        victim = min(owners, key=lambda h: (h.busy_with is not None, h.last_used))
        taken_cache, victim.cache = victim.cache, None
        assert taken_cache is not None
        self.evictions += 1
        return taken_cache


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
