"""The kernel: one per process; every run's LLM and tool calls go through it.

Requests wait in one ready queue (``kernel/scheduler.py``: the ``fifo``/``rr`` policy)
and are served by the one executor the backend's capabilities call for: the serial
executor (``kernel/serial.py``: a worker thread that owns the KV caches; ctransformers is
not thread-safe), the batched executor (``kernel/batching.py``: llama.cpp, many sequences
per decode) or the remote executor (``kernel/server_executor.py``: a model server, many
requests in flight). The first two drive the same request tasks (``kernel/decoding.py``).
Runs call ``run_request`` (or ``submit``) with an ``LLMRequest`` to generate or choose,
and ``call_tool``, from their own threads, and block until the answer is ready.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from flowengine.kernel import defaults
from flowengine.kernel.access import AccessDenied, AccessManager, Grant
from flowengine.kernel.backends.base import (
    Backend,
    BackendError,
    CachingBackend,
    Capability,
    Message,
)
from flowengine.kernel.context import ContextPool, fit_prompt
from flowengine.kernel.decoding import Decoder, LocalExecutor
from flowengine.kernel.llm_request import ContentFreeScores, LLMRequest, SliceRecord, TickRecord
from flowengine.kernel.memory import MemoryManager, RunMemory
from flowengine.kernel.scheduler import ReadyQueue, SchedulerConfig
from flowengine.kernel.serial import SerialExecutor
from flowengine.storage.rows import (
    ErrorRow,
    LLMRequestRow,
    RunRow,
    SliceRow,
    StepRow,
    TickRow,
    ToolCallRow,
)
from flowengine.storage.writer import Storage
from flowengine.tools.base import ToolResult
from flowengine.tools.catalog import available_tools
from flowengine.tools.registry import ToolRegistry


class Executor(Protocol):
    """What the kernel asks of an executor, which takes its requests from the kernel's
    ready queue: to forget an ended run, and to stop once the queue is served."""

    def forget(self, run_id: str) -> None: ...

    def close(self) -> None: ...


class Kernel:
    def __init__(
        self,
        backend: Backend,
        scheduler: SchedulerConfig | None = None,
        storage: Storage | None = None,
        tools: ToolRegistry | None = None,
        pool_size: int = defaults.POOL_SIZE,
        memory_quota: int = defaults.MEMORY_QUOTA_BYTES,
        reuse_prefix: bool = True,
    ) -> None:
        self.backend = backend
        self._closed = False
        self.scheduler = scheduler or SchedulerConfig()
        self.storage = storage
        self.tools = tools or ToolRegistry(list(available_tools().values()))
        self.access = AccessManager()
        self.memory = MemoryManager(self.access, memory_quota)
        self._queue = ReadyQueue(self.scheduler)
        self.contexts: ContextPool[Any] | None = None
        """The local executors' pool of KV caches or sequences."""
        self._text: Callable[[Sequence[int]], str] | None = None
        """Generated tokens to text, on the paths that generate locally."""
        self._content_free_scores: ContentFreeScores | None = None
        # Every slice and decode is stored as it happens (``llm_slices``, ``batch_ticks``);
        # only the newest are kept here, so that memory does not grow with a process's life.
        self.recent_slices: deque[SliceRecord] = deque(maxlen=defaults.RECENT_RECORDS)
        self.recent_ticks: deque[TickRecord] = deque(maxlen=defaults.RECENT_RECORDS)
        """The batched executor's newest decodes (llama-cpp backend only)."""
        self.on_slice: Callable[[SliceRecord], None] | None = None
        self._futures: dict[str, concurrent.futures.Future[LLMRequest]] = {}
        self._serve_now: Callable[[LLMRequest], bool] | None = None
        """The serial executor's: serve a request on the calling thread if the model is free."""
        self._executor: Executor = self._executor_for(backend, pool_size, reuse_prefix)
        """Where requests go: the model server, the batched or the serial executor."""

    def _executor_for(self, backend: Backend, pool_size: int, reuse_prefix: bool) -> Executor:
        """The executor the backend's capabilities call for; it starts serving at once."""
        if Capability.SERVER in backend.capabilities:
            from flowengine.kernel.server_executor import RemoteExecutor

            return RemoteExecutor(
                backend,  # type: ignore[arg-type]
                self._queue,
                self._record_slice,
                self._finish,
                lambda r, code, message: self.record_error(
                    r.run_id, r.step_id, r.step_seq, code, message
                ),
            )
        local: LocalExecutor[Any]
        if Capability.BATCHING in backend.capabilities:
            from flowengine.kernel.batching import BatchedExecutor

            batched: Any = backend
            local = BatchedExecutor(
                batched,
                Decoder(backend.grammar_tokenizer, batched.is_end),
                self._queue,
                self._record_slice,
                self._record_tick,
                self._finish,
                reuse_prefix,
            )
            self._text = batched.decode
        else:
            # Neither a server nor batched: served from a pool of KV caches it must make.
            if not isinstance(backend, CachingBackend):
                raise BackendError(
                    f"backend '{backend.name}' is neither a model server nor batched, and "
                    "has no decode()/new_cache() for the kernel's own KV caches"
                )
            eos = backend.eos_token_id
            local = SerialExecutor(
                backend,
                Decoder(backend.grammar_tokenizer, lambda token: token == eos),
                self._queue,
                self._record_slice,
                self._finish,
                pool_size,
                reuse_prefix,
            )
            self._serve_now = local.serve_now
            self._text = backend.decode
        self.contexts = local.pool
        self._content_free_scores = local.decoder.content_free_scores
        return local

    # -- runs -------------------------------------------------------------------------

    def register_run(self, run_id: str, agent: str, tools: list[str]) -> RunMemory:
        """Grant a run its agent's tools and give it a fresh memory."""
        self.access.register(Grant(run_id, agent, frozenset(tools)))
        return self.memory.open(run_id)

    def end_run(self, run_id: str) -> None:
        self._executor.forget(run_id)
        self.memory.release(run_id)
        self.access.forget(run_id)

    # -- what runs ask of the model, before a request -----------------------------------
    # Runs never reach the backend or storage themselves (tests/test_layers.py checks):
    # the kernel answers for the model it serves and keeps the records.

    @property
    def model_info(self) -> tuple[str, str]:
        """The backend's name and the model's, as a run's row records them."""
        return self.backend.name, self.backend.model_name

    @property
    def constrains_json(self) -> bool:
        """Whether a reply can be held to a JSON Schema while it is generated: a grammar
        on the local model, or a model server that is sent the schema."""
        return (
            self.backend.grammar_tokenizer() is not None
            or Capability.SERVER in self.backend.capabilities
        )

    def label_tokens(self, labels: Sequence[str]) -> list[list[int]]:
        """Each label's tokens as the model would write it as a reply."""
        return [self.backend.label_tokens(label) for label in labels]

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The tokens of a chat prompt (a decision's content-free prompt, say)."""
        return self.backend.encode(self.backend.chat_prompt(messages))

    def fit_prompt(
        self,
        messages: Callable[[int], Sequence[Message]],
        suffix: str,
        reserve: int,
        entries: int,
        start: int = 0,
    ) -> tuple[str, list[int], int]:
        """The chat prompt (``messages(k)`` without the ``k`` oldest of ``entries``
        progress entries, then ``suffix``) that leaves ``reserve`` tokens of the model's
        window free: its text, tokens and entries left out (``context.fit_prompt``)."""
        backend = self.backend
        return fit_prompt(
            lambda dropped: backend.chat_prompt(messages(dropped)) + suffix,
            backend.encode,
            backend.context_length - reserve,
            entries,
            start=start,
        )

    # -- records of runs and steps ------------------------------------------------------

    def record_run(self, row: RunRow) -> None:
        """Store a run's row and return once it is durable."""
        if self.storage is not None:
            self.storage.record_run(row)
            self.storage.commit()

    def record_step(self, row: StepRow) -> None:
        """Store a finished step (the run's checkpoint) and return once it is durable,
        with every row recorded before it."""
        if self.storage is not None:
            self.storage.record_step(row)
            self.storage.commit()

    # -- LLM requests -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:  # nothing would serve it: its run would wait for ever
            raise BackendError("the kernel is closed; it serves no more requests")

    def submit(self, request: LLMRequest) -> concurrent.futures.Future[LLMRequest]:
        self._check_open()
        future: concurrent.futures.Future[LLMRequest] = concurrent.futures.Future()
        self._futures[request.id] = future
        self._queue.put(request)
        return future

    def submit_all(self, requests: list[LLMRequest]) -> list[concurrent.futures.Future[LLMRequest]]:
        """Submit several requests that all become ready at the same moment."""
        self._check_open()
        futures: list[concurrent.futures.Future[LLMRequest]] = []
        for request in requests:
            futures.append(concurrent.futures.Future())
            self._futures[request.id] = futures[-1]
        self._queue.put_all(requests)
        return futures

    def run_request(self, request: LLMRequest) -> LLMRequest:
        """Submit and wait; the request comes back with its response or error filled in.

        On the serial path, when the model is free and no request is waiting, the calling
        thread serves its request itself: the same slice the worker would run, without
        two hand-offs between threads (``SerialExecutor.serve_now``)."""
        self._check_open()
        future: concurrent.futures.Future[LLMRequest] = concurrent.futures.Future()
        self._futures[request.id] = future
        if self._serve_now is None or not self._serve_now(request):
            self._queue.put(request)
        return future.result()

    def _record_slice(self, record: SliceRecord) -> None:
        self.recent_slices.append(record)
        if self.on_slice is not None:
            self.on_slice(record)
        if self.storage is not None:
            self.storage.record_slice(
                SliceRow(
                    request_id=record.request_id,
                    run_id=record.run_id,
                    idx=record.index,
                    started=record.start,
                    ended=record.end,
                    started_s=record.start,
                    tokens=record.tokens,
                    evaluated=record.evaluated,
                    restored=record.restored,
                    preempted=record.preempted,
                )
            )

    def _record_tick(self, record: TickRecord) -> None:
        self.recent_ticks.append(record)
        if self.storage is not None:
            self.storage.record_tick(
                TickRow(
                    tick=record.index,
                    started=record.start,
                    ended=record.end,
                    sequences=record.sequences,
                    tokens=record.tokens,
                    prompt_tokens=record.prompt_tokens,
                    scheduler=self.scheduler.policy,
                    request_ids=record.request_ids,
                )
            )

    def _finish(self, request: LLMRequest) -> None:
        """Store the ended request and hand it back to the run that waits for it. The run
        gets it back even when storing it fails (then with that error): a request left
        unresolved would keep its run waiting for ever."""
        try:
            self._store_request(request)
        except Exception as exc:  # bookkeeping must not keep a run waiting
            if request.error is None:
                request.error = f"{type(exc).__name__}: {exc}"
        finally:
            future = self._futures.pop(request.id, None)
            if future is not None and not future.done():
                future.set_result(request)

    def _store_request(self, request: LLMRequest) -> None:
        request.end = time.time()
        if request.kind == "generate" and request.error is None and self._text is not None:
            request.response = request.prefill + self._text(request.output_tokens)
        if self.storage is not None:
            self.storage.record_request(
                LLMRequestRow(
                    request_id=request.id,
                    run_id=request.run_id,
                    agent=request.agent,
                    step_id=request.step_id,
                    step_seq=request.step_seq,
                    kind=request.kind,
                    scheduler=self.scheduler.policy,
                    prompt=request.prompt,
                    response=request.response,
                    prompt_tokens=_counted(request.counted_prompt_tokens, request.prompt_tokens),
                    output_tokens=_counted(request.counted_output_tokens, request.output_tokens),
                    evaluated_tokens=request.evaluated_tokens,
                    progress_dropped=request.progress_dropped,
                    label_scores=request.scores_to_store(),
                    created=request.created,
                    first_start=request.first_start or request.end,
                    ended=request.end,
                    waiting_s=request.waiting,
                    turnaround_s=request.turnaround,
                    service_s=request.service,
                    slices=request.slices,
                    preemptions=request.preemptions,
                    restores=request.restores,
                    error=request.error,
                    reused_tokens=request.reused_tokens,
                )
            )

    # -- tools ------------------------------------------------------------------------

    def call_tool(
        self, run_id: str, step_id: str, step_seq: int, name: str, args: Mapping[str, Any]
    ) -> ToolResult:
        """Call a tool the run's agent declares; raises AccessDenied for any other."""
        try:
            self.access.check_tool(run_id, name)
        except AccessDenied as exc:
            self.record_error(run_id, step_id, step_seq, "tool-denied", str(exc))
            raise
        result = self.tools.call(name, args)
        self.record_tool_call(run_id, step_id, step_seq, result)
        return result

    def record_tool_call(
        self, run_id: str, step_id: str, step_seq: int, result: ToolResult
    ) -> None:
        """Store a tool call made for a run's step (by the kernel, or answered by a test's
        mock), and a failed one's error."""
        if self.storage is not None:
            self.storage.record_tool_call(
                ToolCallRow(
                    call_id=result.call_id,
                    run_id=run_id,
                    step_id=step_id,
                    step_seq=step_seq,
                    tool=result.tool,
                    args=result.args,
                    # a failed call stores no result, not JSON null
                    result=result.value if result.ok else None,
                    ok=result.ok,
                    error=result.error,
                    started=result.started,
                    duration_s=result.duration,
                )
            )
        if not result.ok:
            self.record_error(run_id, step_id, step_seq, "tool-failed", result.error or "")

    def record_error(
        self, run_id: str, step_id: str, step_seq: int, code: str, message: str
    ) -> None:
        if self.storage is not None:
            self.storage.record_error(
                ErrorRow(run_id, step_id, step_seq, code, message, occurred=time.time())
            )

    def close(self) -> None:
        """Serve what was submitted, then stop: later requests are refused."""
        self._closed = True
        self._executor.close()
        self.tools.close()
        self.backend.close()


def _counted(reported: int | None, tokens: list[int]) -> int:
    """A server's own count where it gave one, else the tokens the kernel holds."""
    return reported if reported is not None else len(tokens)
