"""Mocked model replies and tool results: a kernel that answers some requests itself.

``MockingKernel`` wraps a real kernel and offers the runtime the same narrow API
(``run_request``, ``call_tool``, ``fit_prompt``...). A request of a step with a mocked
reply, or a tool call of a step with a mocked result, is answered here and stored as the
real kernel stores one (``llm_requests`` with backend ``mock``'s timings of zero,
``tool_calls``, ``errors``); everything else goes to the real kernel and its backend. The
kernel's own modules are not touched: this sits above them, beside the runtime.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowengine.kernel.access import AccessDenied
from flowengine.kernel.backends.base import Message
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.memory import RunMemory
from flowengine.storage.rows import LLMRequestRow, RunRow, StepRow
from flowengine.tools.base import ToolResult


@dataclass
class ToolReply:
    """A mocked tool call's outcome: its result, or the error it fails with."""

    result: Any = None
    error: str | None = None


@dataclass
class Mocks:
    """What a case mocks: step id -> replies per visit, tool outcomes per call (the last
    of each list repeats)."""

    replies: dict[str, list[Any]] = field(default_factory=dict)
    tools: dict[str, list[ToolReply]] = field(default_factory=dict)
    only_mocks: bool = False
    """No real model: a request with no mocked reply fails, saying which step needs one."""


@dataclass
class Seen:
    """What the runs of one case did, as the mocking kernel saw it."""

    requests: list[LLMRequest] = field(default_factory=list)
    tool_calls: list[tuple[str, str, dict[str, Any], ToolResult]] = field(default_factory=list)
    """(step id, tool, args, result), in call order."""
    steps: list[StepRow] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    """The run's saved variables when it ended."""
    mocked_steps: set[str] = field(default_factory=set)


class StopAfterStep(BaseException):
    """Raised after the first step is stored when only one step is to run
    (``flowengine test step``): a BaseException, so the run's own handlers let it pass."""


class MockingKernel:
    """The kernel API a run uses, answering mocked steps itself."""

    def __init__(self, kernel: Kernel, mocks: Mocks, one_step: bool = False) -> None:
        self.kernel = kernel
        self.mocks = mocks
        self.seen = Seen()
        self.one_step = one_step
        self._visits: dict[str, list[int]] = {}
        """Step id -> the step_seqs its requests came from (a retry keeps its visit)."""
        self._calls: dict[str, int] = {}
        self._memories: dict[str, RunMemory] = {}
        self._lock = threading.Lock()

    # -- passed through -----------------------------------------------------------------

    @property
    def scheduler(self) -> Any:
        return self.kernel.scheduler

    @property
    def model_info(self) -> tuple[str, str]:
        return self.kernel.model_info

    @property
    def constrains_json(self) -> bool:
        # Mocked JSON replies are checked after the fact, as on the scripted backend; a
        # real request keeps the backend's constraint.
        return self.kernel.constrains_json

    def label_tokens(self, labels: Sequence[str]) -> list[list[int]]:
        return self.kernel.label_tokens(labels)

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        return self.kernel.chat_tokens(messages)

    def fit_prompt(
        self,
        messages: Callable[[int], Sequence[Message]],
        suffix: str,
        reserve: int,
        entries: int,
        start: int = 0,
    ) -> tuple[str, list[int], int]:
        return self.kernel.fit_prompt(messages, suffix, reserve, entries, start)

    def register_run(self, run_id: str, agent: str, tools: list[str]) -> RunMemory:
        memory = self.kernel.register_run(run_id, agent, tools)
        self._memories[run_id] = memory
        return memory

    def end_run(self, run_id: str) -> None:
        memory = self._memories.pop(run_id, None)
        if memory is not None:
            self.seen.variables = json.loads(json.dumps(memory.variables, default=str))
        self.kernel.end_run(run_id)

    def record_run(self, row: RunRow) -> None:
        self.kernel.record_run(row)

    def record_step(self, row: StepRow) -> None:
        self.kernel.record_step(row)
        self.seen.steps.append(row)
        if self.one_step:
            raise StopAfterStep()

    def record_error(
        self, run_id: str, step_id: str, step_seq: int, code: str, message: str
    ) -> None:
        self.kernel.record_error(run_id, step_id, step_seq, code, message)

    # -- the model ----------------------------------------------------------------------

    def run_request(self, request: LLMRequest) -> LLMRequest:
        replies = self.mocks.replies.get(request.step_id)
        if replies is None and not self.mocks.only_mocks:
            done = self.kernel.run_request(request)
            self.seen.requests.append(done)
            return done
        request.first_start = request.created
        if replies is None:
            request.error = (
                f"no mocked reply for step '{request.step_id}' and no model to ask; add one "
                f"under mocks.model, or run with a real --backend"
            )
        else:
            request.response = _reply_text(replies[self._visit(request)])
            if request.kind == "choose":
                request.label_raw_scores = {
                    label: 0.0 if label == request.response else float("-inf")
                    for label in request.labels
                }
                request.label_scores = dict(request.label_raw_scores)
            request.output_tokens = list(self._encode(request.response))
            self.seen.mocked_steps.add(request.step_id)
        request.end = time.time()
        request.finished = True
        self._store_request(request)
        self.seen.requests.append(request)
        return request

    def _encode(self, text: str) -> list[int]:
        # The kernel's backend tokenizes; a chat of one assistant turn is not what the
        # model would write, so count the reply's own tokens through label_tokens.
        return self.kernel.label_tokens([text])[0] if text else []

    def _visit(self, request: LLMRequest) -> int:
        with self._lock:
            seqs = self._visits.setdefault(request.step_id, [])
            if request.step_seq not in seqs:
                seqs.append(request.step_seq)
            index = seqs.index(request.step_seq)
        replies = self.mocks.replies[request.step_id]
        return min(index, len(replies) - 1)

    def _store_request(self, request: LLMRequest) -> None:
        storage = self.kernel.storage
        if storage is None:
            return
        end = request.end or time.time()
        storage.record_request(
            LLMRequestRow(
                request_id=request.id,
                run_id=request.run_id,
                agent=request.agent,
                step_id=request.step_id,
                step_seq=request.step_seq,
                kind=request.kind,
                scheduler="mock",
                prompt=request.prompt,
                response=request.response,
                prompt_tokens=len(request.prompt_tokens),
                output_tokens=len(request.output_tokens),
                evaluated_tokens=0,
                progress_dropped=request.progress_dropped,
                label_scores=None,
                created=request.created,
                first_start=request.created,
                ended=end,
                waiting_s=0.0,
                turnaround_s=end - request.created,
                service_s=0.0,
                slices=0,
                preemptions=0,
                restores=0,
                error=request.error,
                reused_tokens=0,
            )
        )

    # -- tools --------------------------------------------------------------------------

    def call_tool(
        self, run_id: str, step_id: str, step_seq: int, name: str, args: Mapping[str, Any]
    ) -> ToolResult:
        outcomes = self.mocks.tools.get(step_id)
        if outcomes is None:
            result = self.kernel.call_tool(run_id, step_id, step_seq, name, args)
            self.seen.tool_calls.append((step_id, name, dict(args), result))
            return result
        # The run may call only its agent's tools, mocked or not.
        try:
            self.kernel.access.check_tool(run_id, name)
        except AccessDenied as exc:
            self.kernel.record_error(run_id, step_id, step_seq, "tool-denied", str(exc))
            raise
        with self._lock:
            index = self._calls.get(step_id, 0)
            self._calls[step_id] = index + 1
        outcome = outcomes[min(index, len(outcomes) - 1)]
        result = ToolResult(call_id=uuid.uuid4().hex[:16], tool=name, args=dict(args), ok=False)
        result.started = time.time()
        if outcome.error is not None:
            result.error = outcome.error
        else:
            result.value, result.ok = outcome.result, True
        self.kernel.record_tool_call(run_id, step_id, step_seq, result)
        self.seen.tool_calls.append((step_id, name, dict(args), result))
        self.seen.mocked_steps.add(step_id)
        return result


def _reply_text(reply: Any) -> str:
    """A mocked reply as the model's text: text as is, other values as JSON."""
    return reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
