"""One decode path: what a request does on a local model, written once for every executor.

Each request is a small task (a generator, ``Decoder.task_for``). It says what its place
must hold next and consumes the answer:

- ``Evaluate(tokens, start)``: hold these tokens from position ``start`` on; the answer is
  the next-token ``Distribution`` after the last of them;
- ``Score(tokens, start, targets)``: the same, and the answer is the log-probability of
  ``targets[i]`` after ``tokens[i]``, for each ``i``.

The task does everything else: prefix matching against what the place holds (only the
rest is evaluated), generation (greedy, stopping at ``max_tokens``, the end of the reply
or the end of the JSON grammar; the last token is never evaluated, nothing needs its
distribution), the JSON grammar, label scoring and contextual calibration with
content-free scores computed once per prompt and labels.

Two executors drive the tasks. The serial one (``kernel/serial.py``: ctransformers, the
scripted backend) answers each need at once on a KV cache of its own; the batched one
(``kernel/batching.py``: llama.cpp) gathers the needs of many requests into one decode.
``LocalExecutor`` is what the two share: a request's stay on the model, from the place it
gets (``ContextPool``) to the slice it leaves behind, and the yield to a waiting request
that the scheduler decides (``ReadyQueue.yielders``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol

import numpy as np

from flowengine.kernel.constrain import JsonConstraint
from flowengine.kernel.context import ContextPool, P, RunCache
from flowengine.kernel.llm_request import ContentFreeScores, LLMRequest, Slice, SliceRecord
from flowengine.kernel.sampling import RECENT_TOKENS, greedy, log_prob
from flowengine.kernel.scheduler import ReadyQueue


@dataclass
class Evaluate:
    """Hold ``tokens`` from position ``start`` on; answered with the distribution after
    the last of them."""

    tokens: list[int]
    start: int


@dataclass
class Score:
    """Hold ``tokens`` from position ``start`` on; answered with the log-probability of
    ``targets[i]`` after ``tokens[i]``, for each ``i``."""

    tokens: list[int]
    start: int
    targets: list[int]


Need = Evaluate | Score
Task = Generator[Need, Any, None]


class Distribution(Protocol):
    """The model's next-token distribution; valid until its place evaluates again."""

    def next_token(self, recent: Sequence[int], allowed: Any) -> int:
        """The greedy choice after the repetition penalty over ``recent``, among
        ``allowed`` (a boolean array over the vocabulary) when given."""
        ...

    def log_prob(self, token: int) -> float: ...


@dataclass
class Logits:
    """A distribution given as a row of logits (the batched executor's)."""

    row: np.ndarray

    def next_token(self, recent: Sequence[int], allowed: Any) -> int:
        return greedy(self.row, recent, allowed)

    def log_prob(self, token: int) -> float:
        return log_prob(self.row, token)


class Held(Protocol):
    """What a request's place holds, as its task sees it."""

    @property
    def tokens(self) -> list[int]: ...


def shared_prefix(held: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading ``tokens`` ``held`` already holds, leaving at least the last one to
    evaluate (its distribution is what comes back)."""
    limit = min(len(held), len(tokens) - 1)
    # Halving by slice comparisons (in C) rather than a token at a time: a run's prompts
    # grow into thousands of tokens, and most of each is what the place holds.
    low, high = 0, limit
    while high - low > 16:
        middle = (low + high) // 2
        if held[low:middle] == tokens[low:middle]:
            low = middle
        else:
            high = middle
    while low < high and held[low] == tokens[low]:
        low += 1
    return low


class Decoder:
    """Makes each request's task; keeps what tasks share (the content-free scores).
    Only the thread serving the model uses it."""

    def __init__(self, grammar_tokenizer: Callable[[], Any], is_end: Callable[[int], bool]):
        self._grammar_tokenizer = grammar_tokenizer
        self.is_end = is_end
        """Whether a token ends the reply (the backend's end of turn or of text)."""
        self.content_free_scores = ContentFreeScores()

    def task_for(self, request: LLMRequest, held: Held) -> Task:
        if request.kind == "choose":
            return self._choose(request, held)
        return self._generate(request, held)

    def constraint_for(self, request: LLMRequest) -> JsonConstraint | None:
        """The request's grammar state, made at its first slice and kept on the request
        across slices (a preempted request resumes it; a rebuilt cache leaves it alone)."""
        if request.schema is None or request.constraint is not None:
            return request.constraint
        tokenizer = self._grammar_tokenizer()
        if tokenizer is not None:
            request.constraint = JsonConstraint(tokenizer, request.schema)
        return request.constraint

    def _prepare(
        self, request: LLMRequest, held: Held, tokens: Sequence[int], first: bool = False
    ) -> Generator[Need, Any, Distribution]:
        """Make the place hold ``tokens``, evaluating only what it lacks. ``first``: the
        request's prompt at its first slice, whose reuse is recorded."""
        if not tokens:
            raise ValueError("an empty prompt has nothing to continue")
        shared = shared_prefix(held.tokens, tokens)
        if first and request.slices == 0:
            request.reused_tokens = shared
        distribution: Distribution = yield Evaluate(list(tokens[shared:]), shared)
        return distribution

    def _generate(self, request: LLMRequest, held: Held) -> Task:
        """Generate from where the request is (its prompt, or where it was preempted)."""
        distribution = yield from self._prepare(request, held, request.tokens, first=True)
        constraint = self.constraint_for(request)

        def done() -> bool:
            return len(request.output_tokens) >= request.max_tokens or (
                constraint is not None and constraint.finished
            )

        while not done():
            allowed = constraint.allowed() if constraint is not None else None
            token = distribution.next_token(request.tokens[-RECENT_TOKENS:], allowed)
            if self.is_end(token):
                return
            if constraint is not None:
                constraint.consume(token)
            request.output_tokens.append(token)
            if done():
                return  # the last token need not be evaluated
            distribution = yield Evaluate([token], len(request.tokens) - 1)

    def _choose(self, request: LLMRequest, held: Held) -> Task:
        """Score each label as the reply, always choosing one of them.

        A label's score is the total log-probability of its tokens. With a content-free
        prompt (contextual calibration, Zhao et al. 2021), the label's score after that
        prompt is subtracted: what is left is how much this request's content moved the
        model towards the label. The content-free scores depend only on that prompt and
        the labels, so they are computed once per kernel and kept."""
        raw = yield from self._label_scores(request, held, request.prompt_tokens, first=True)
        baseline = None
        if request.content_free_tokens:
            baseline = self.content_free_scores.get(request)
            if baseline is None:
                baseline = yield from self._label_scores(request, held, request.content_free_tokens)
                self.content_free_scores.put(request, baseline)
        request.settle_choice(raw, baseline)

    def _label_scores(
        self, request: LLMRequest, held: Held, prompt: list[int], first: bool = False
    ) -> Generator[Need, Any, dict[str, float]]:
        """Each label's total log-probability as the reply to ``prompt``."""
        distribution = yield from self._prepare(request, held, prompt, first)
        # Every label's first token now: the distribution lasts until the place moves on.
        totals = [distribution.log_prob(t[0]) if t else 0.0 for t in request.label_tokens]
        scores: dict[str, float] = {}
        labels = zip(request.labels, request.label_tokens, totals, strict=True)
        for label, tokens, total in labels:
            if len(tokens) > 1:
                rest: list[float] = yield Score(list(tokens[:-1]), len(prompt), list(tokens[1:]))
                for score in rest:
                    total += score
            scores[label] = total
        return scores


class Stay(Generic[P]):
    """A request on the model for one slice: its task, its place and what it did."""

    def __init__(
        self, request: LLMRequest, holder: RunCache[P], task: Task, restored: bool, rebuilt: int
    ) -> None:
        self.request = request
        self.holder = holder
        self.task = task
        self.slice = Slice(request, restored)
        self.evaluated = rebuilt
        self.need: Need | None = None
        self.left = False
        """Whether the request has left the model (done, failed or preempted)."""
        self._output_before = len(request.output_tokens)

    @property
    def produced(self) -> int:
        """Tokens generated in this slice."""
        return len(self.request.output_tokens) - self._output_before

    def advance(self, answer: Any) -> bool:
        """Give the task its answer (None to start it); False once it is done."""
        try:
            self.need = self.task.send(answer)
        except StopIteration:
            self.need = None
        return self.need is not None


class LocalExecutor(Generic[P]):
    """What the serial and the batched executors share: the queue they serve, the pool of
    places, and a request's stay from admission (``_admit``) to leaving (``_leave``)."""

    stay_type: type[Stay[Any]] = Stay

    def __init__(
        self,
        decoder: Decoder,
        queue: ReadyQueue,
        pool: ContextPool[P],
        record_slice: Callable[[SliceRecord], None],
        finish: Callable[[LLMRequest], None],
        name: str,
    ) -> None:
        self.decoder = decoder
        self.queue = queue
        self.pool = pool
        self._record_slice = record_slice
        self._finish = finish
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)

    def forget(self, run_id: str) -> None:
        """A run ended: its place is free once the worker next admits."""
        self.pool.forget(run_id)
        self.queue.forget(run_id)

    def close(self) -> None:
        """Serve what is queued, then stop the worker."""
        self.queue.close()
        if self._worker.is_alive():
            self._worker.join()

    def _serve(self) -> None:
        raise NotImplementedError

    def _admit(self, request: LLMRequest) -> Stay[P] | None:
        """Give ``request`` its place and start (or resume) its task; None if it failed."""
        try:
            holder, rebuilt, restored = self.pool.acquire(request)
        except Exception as exc:  # one bad request must not stop the executor
            request.error = f"{type(exc).__name__}: {exc}"
            self.pool.release(request, failed=True)
            request.finished = True
            self._finish(request)
            return None
        task = self.decoder.task_for(request, holder)
        stay: Stay[P] = self.stay_type(request, holder, task, restored, rebuilt)
        self._enter(stay)
        self._advance(stay, None)
        return stay

    def _enter(self, stay: Stay[P]) -> None:
        """The request is on the model (the batched executor counts it in its batch)."""

    def _advance(self, stay: Stay[P], answer: Any) -> None:
        """Give the task its answer; it needs more, or it is done and leaves."""
        try:
            more = stay.advance(answer)
        except Exception as exc:  # one bad request must not stop the others
            self._fail(stay, exc)
            return
        if not more:
            self._leave(stay, preempted=False)

    def _leave(self, stay: Stay[P], preempted: bool) -> None:
        """The request leaves the model: its slice is recorded, and it goes back to the
        queue (preempted) or is finished."""
        request = stay.request
        stay.left = True
        stay.task.close()
        request.evaluated_tokens += stay.evaluated
        self.pool.release(request, preempted, failed=request.error is not None)
        try:
            self._record_slice(stay.slice.close(stay.produced, stay.evaluated, preempted))
        except Exception as exc:  # a slice that cannot be recorded fails its request only
            request.error = request.error or f"{type(exc).__name__}: {exc}"
            preempted = False
        if preempted:
            self.queue.put(request)
        else:
            request.finished = True
            self._finish(request)

    def _fail(self, stay: Stay[P], exc: Exception) -> None:
        stay.request.error = f"{type(exc).__name__}: {exc}"
        self._leave(stay, preempted=False)
