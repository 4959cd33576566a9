"""What runs ask of the kernel, and what the kernel records about each request."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flowengine.kernel.backends.base import Backend, Message

RequestKind = Literal["generate", "choose"]

_arrival = itertools.count()


@dataclass
class LLMRequest:
    """One LLM call: generate text, or choose one of ``labels``.

    The scheduler fills in the timing fields; times are ``time.time()`` seconds.
    """

    run_id: str
    agent: str
    step_id: str
    step_seq: int
    kind: RequestKind
    prompt: str
    prompt_tokens: list[int]
    max_tokens: int = 128
    labels: list[str] = field(default_factory=list)
    label_tokens: list[list[int]] = field(default_factory=list)
    content_free_tokens: list[int] = field(default_factory=list)
    """For ``choose``: the same prompt with its content (task, question) replaced by "N/A".
    The labels are scored after it too, and those scores subtracted from the real ones
    (contextual calibration), so that a label the model prefers whatever the question does
    not win by that alone. Empty: the raw scores decide."""
    prefill: str = ""
    schema: dict[str, Any] | None = None
    """For ``generate``: the JSON Schema the reply is constrained to, when the backend can."""
    progress_dropped: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    arrival: int = field(default_factory=lambda: next(_arrival))
    created: float = field(default_factory=time.time)
    first_start: float | None = None
    end: float | None = None
    service: float = 0.0
    slices: int = 0
    preemptions: int = 0
    restores: int = 0
    evaluated_tokens: int = 0
    reused_tokens: int = 0
    """Prompt tokens the run's KV cache already held, so the model did not read them again."""
    output_tokens: list[int] = field(default_factory=list)
    response: str = ""
    label_scores: dict[str, float] = field(default_factory=dict)
    """The scores the choice was made on: calibrated when there is a content-free prompt."""
    label_raw_scores: dict[str, float] = field(default_factory=dict)
    label_content_free_scores: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    error: str | None = None
    error_code: str = "llm-failed"
    """The run-time code a failure is stored under (``errors.RUN_CODES``)."""
    counted_prompt_tokens: int | None = None
    counted_output_tokens: int | None = None
    """Token counts a model server reported (its tokenizer's); None for the local model."""
    constraint: Any = None
    """The grammar state while a constrained reply is generated (kernel/constrain.py)."""

    @classmethod
    def for_messages(
        cls,
        backend: Backend,
        messages: Sequence[Message],
        *,
        run_id: str,
        agent: str,
        max_tokens: int,
        labels: Sequence[str] = (),
        step_id: str = "s",
        content_free: Sequence[Message] = (),
    ) -> LLMRequest:
        """One chat outside an agent's steps (benchmarks, tests), rendered and tokenized
        by ``backend``; with ``labels`` it is a choice among them, calibrated against the
        ``content_free`` chat when one is given."""
        prompt = backend.chat_prompt(messages)
        return cls(
            run_id=run_id,
            agent=agent,
            step_id=step_id,
            step_seq=0,
            kind="choose" if labels else "generate",
            prompt=prompt,
            prompt_tokens=backend.encode(prompt),
            max_tokens=max_tokens,
            labels=list(labels),
            label_tokens=[backend.label_tokens(label) for label in labels],
            content_free_tokens=(
                backend.encode(backend.chat_prompt(content_free)) if content_free else []
            ),
        )

    def retry(self) -> LLMRequest:
        """The same ask as a new request, for a retry after this one failed."""
        return LLMRequest(
            run_id=self.run_id,
            agent=self.agent,
            step_id=self.step_id,
            step_seq=self.step_seq,
            kind=self.kind,
            prompt=self.prompt,
            prompt_tokens=list(self.prompt_tokens),
            max_tokens=self.max_tokens,
            labels=list(self.labels),
            label_tokens=[list(t) for t in self.label_tokens],
            content_free_tokens=list(self.content_free_tokens),
            prefill=self.prefill,
            schema=self.schema,
            progress_dropped=self.progress_dropped,
        )

    def settle_choice(
        self, raw: dict[str, float], content_free: dict[str, float] | None = None
    ) -> None:
        """Choose the label with the best score: the raw log-probability, less the score
        after the content-free prompt when there is one (contextual calibration)."""
        self.label_raw_scores = raw
        self.label_scores = dict(raw)
        if content_free is not None:
            self.label_content_free_scores = dict(content_free)
            self.label_scores = {label: raw[label] - content_free[label] for label in raw}
        self.response = max(self.labels, key=lambda label: self.label_scores[label])

    def scores_to_store(self) -> dict[str, dict[str, float]] | None:
        """Each label's scores for the ``label_scores`` column: ``raw``, and with
        calibration also ``content_free`` and ``calibrated`` (the one the choice used)."""
        if not self.label_raw_scores:
            return None
        stored: dict[str, dict[str, float]] = {}
        for label, raw in self.label_raw_scores.items():
            stored[label] = {"raw": round(raw, 4)}
            if label in self.label_content_free_scores:
                stored[label]["content_free"] = round(self.label_content_free_scores[label], 4)
                stored[label]["calibrated"] = round(self.label_scores[label], 4)
        return stored

    @property
    def tokens(self) -> list[int]:
        """Prompt and generated tokens: the snapshot a preempted request resumes from."""
        return self.prompt_tokens + self.output_tokens

    @property
    def turnaround(self) -> float:
        return (self.end or time.time()) - self.created

    @property
    def waiting(self) -> float:
        """Time spent ready but not running."""
        return self.turnaround - self.service


@dataclass(frozen=True)
class SliceRecord:
    """One time slice a request ran for, kept so interleaving can be seen afterwards."""

    request_id: str
    run_id: str
    index: int
    start: float
    end: float
    tokens: int
    evaluated: int
    restored: bool
    preempted: bool


class Slice:
    """One slice of a request on the model, from the moment it gets it: the one place a
    ``SliceRecord`` is made, and the request's service time, slices and preemptions
    counted, on every executor."""

    def __init__(self, request: LLMRequest, restored: bool = False) -> None:
        self.request = request
        self.started = time.time()
        self.restored = restored
        if request.first_start is None:
            request.first_start = self.started
        if restored:
            request.restores += 1

    def close(self, tokens: int, evaluated: int, preempted: bool = False) -> SliceRecord:
        """The slice ends now, having generated ``tokens`` and evaluated ``evaluated``; the
        next one (a streamed reply recorded in pieces) starts where it ends."""
        request = self.request
        ended = time.time()
        request.service += ended - self.started
        record = SliceRecord(
            request.id,
            request.run_id,
            request.slices,
            self.started,
            ended,
            tokens,
            evaluated,
            self.restored,
            preempted,
        )
        request.slices += 1
        if preempted:
            request.preemptions += 1
        self.started, self.restored = ended, False
        return record

    def discard(self) -> None:
        """The request leaves the model with nothing since the last record to show: no
        record, but the time still counts as service."""
        self.request.service += time.time() - self.started


class ContentFreeScores:
    """Label scores after content-free prompts (contextual calibration), kept per prompt
    and labels: they depend on nothing else, so each is computed once per kernel. The
    oldest goes first beyond ``size``."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._scores: dict[tuple[tuple[int, ...], ...], dict[str, float]] = {}

    @staticmethod
    def _key(request: LLMRequest) -> tuple[tuple[int, ...], ...]:
        return (tuple(request.content_free_tokens), *map(tuple, request.label_tokens))

    def get(self, request: LLMRequest) -> dict[str, float] | None:
        return self._scores.get(self._key(request))

    def put(self, request: LLMRequest, scores: dict[str, float]) -> None:
        if len(self._scores) >= self.size:
            del self._scores[next(iter(self._scores))]
        self._scores[self._key(request)] = scores

    def __len__(self) -> int:
        return len(self._scores)


@dataclass(frozen=True)
class TickRecord:
    """One decode of the batched executor: how many requests shared it, and how many
    tokens it evaluated (``prompt_tokens`` of them in prompt chunks)."""

    index: int
    start: float
    end: float
    sequences: int
    tokens: int
    prompt_tokens: int
    request_ids: list[str]
