"""The remote executor: the kernel's path to a model server, many requests in flight.

A server batches the requests it holds, so up to ``max_inflight`` requests are sent at
once, one worker thread each. They take requests from the kernel's one ready queue
(``kernel/scheduler.py``), whose policy decides the order of admission as for the local
model: ``fifo`` by arrival, ``rr`` round-robin over runs. A request in flight is never cut off: the
server is batching it, and stopping it would waste that work. Replies are streamed, and
``rr`` records a slice every ``quantum`` streamed tokens, so the interleaving at the
server can be seen afterwards as it is for the local model.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from flowengine.kernel.backends.openai import Completion, OpenAIBackend, ServerError, parse_chatml
from flowengine.kernel.llm_request import LLMRequest, Slice, SliceRecord
from flowengine.kernel.scheduler import ReadyQueue

TOP_LOGPROBS = 20
"""Alternatives asked for at a decision's first token; labels must be among them."""


class DecisionUnsupported(Exception):
    """The server gave neither log-probabilities nor a constrained choice."""


def choice_grammar(labels: list[str]) -> str:
    """A GBNF grammar (llama.cpp) that admits exactly one of ``labels``."""
    return "root ::= " + " | ".join(json.dumps(label) for label in labels)


def _log_add(total: float | None, logprob: float) -> float:
    """log(exp(total) + exp(logprob)), with None for nothing yet."""
    if total is None:
        return logprob
    high, low = max(total, logprob), min(total, logprob)
    return high + math.log1p(math.exp(low - high))


def first_token_scores(logprobs: list[dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """Each label's log-probability as the reply's first token, from the server's top
    alternatives; a label whose first token is not among them gets no score. Empty when
    the best-scored token starts two labels (the first token cannot tell them apart)."""
    if not logprobs:
        return {}
    first = logprobs[0]
    alternatives = first.get("top_logprobs") or [first]
    scores: dict[str, float] = {}
    token_of: dict[str, str] = {}
    seen: set[str] = set()
    for alternative in alternatives:
        # Case is not a choice between labels: "Yes" and "yes" both count for "yes", their
        # probabilities added.
        token = str(alternative.get("token", "")).strip().lower()
        logprob = alternative.get("logprob")
        if not token or not isinstance(logprob, (int, float)):
            continue
        key = f"{token}\0{alternative.get('token')}"
        if key in seen:
            continue
        seen.add(key)
        for label in labels:
            if label.lower().startswith(token):
                scores[label] = float(_log_add(scores.get(label), float(logprob)))
                if len(token) > len(token_of.get(label, "")):
                    token_of[label] = token
    if scores:
        best = max(scores, key=lambda label: scores[label])
        if sum(label.lower().startswith(token_of[best]) for label in labels) > 1:
            return {}
    return scores


def _refused(exc: ServerError, fields: tuple[str, ...]) -> bool:
    """Whether the server refused a request for one of ``fields``, as servers do for a
    parameter they do not take: an error other than 429 that names the field (HTTP 400 or
    422 mostly; llama-cpp-python answers a request it cannot validate with HTTP 500)."""
    status = exc.status or 0
    return status >= 400 and status != 429 and any(field in exc.detail for field in fields)


class RemoteExecutor:
    """Takes requests from the ready queue in its order and keeps up to ``max_inflight`` at
    the server."""

    def __init__(
        self,
        backend: OpenAIBackend,
        queue: ReadyQueue,
        on_slice: Callable[[SliceRecord], None],
        on_finish: Callable[[LLMRequest], None],
        on_report: Callable[[LLMRequest, str, str], None],
    ) -> None:
        self.backend = backend
        self.client = backend.client
        self.queue = queue
        self._on_slice = on_slice
        self._on_finish = on_finish
        self._on_report = on_report
        self._lock = threading.Lock()
        self._closed = False
        self._not_before = 0.0
        """Set by a server's Retry-After: nothing is sent before this time."""
        self.json_format: str | None = None
        """How JSON output is constrained at this server, once known: ``json_schema``,
        ``json_object`` (llama.cpp's, with a schema) or ``prompt`` (not at all)."""
        self.logprobs_supported: bool | None = None
        self.inflight = 0
        self.max_inflight_seen = 0
        self._workers = [
            threading.Thread(target=self._serve, name=f"kernel-remote-{n}", daemon=True)
            for n in range(backend.settings.max_inflight)
        ]
        for worker in self._workers:
            worker.start()

    # -- runs and stopping -------------------------------------------------------------

    def forget(self, run_id: str) -> None:
        self.queue.forget(run_id)

    def close(self) -> None:
        self._closed = True
        self.queue.close()
        for worker in self._workers:
            worker.join()

    # -- serving ----------------------------------------------------------------------

    def _serve(self) -> None:
        while (request := self.queue.take()) is not None:
            with self._lock:
                self.inflight += 1
                self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
            try:
                self._wait_for_server()
                if request.kind == "choose":
                    self._choose(request)
                else:
                    self._generate(request)
            except ServerError as exc:
                request.error = str(exc)
                if exc.retry_after is not None:
                    self._back_off(exc.retry_after)
            except DecisionUnsupported as exc:
                request.error = str(exc)
                request.error_code = "decision-unsupported"
            except Exception as exc:  # one bad request must not stop the executor
                request.error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    self.inflight -= 1
            self._on_finish(request)

    def _wait_for_server(self) -> None:
        while (delay := self._not_before - time.time()) > 0 and not self._closed:
            time.sleep(min(delay, 0.2))

    def _back_off(self, seconds: float) -> None:
        from flowengine.kernel.backends.openai import MAX_RETRY_AFTER

        with self._lock:
            self._not_before = max(self._not_before, time.time() + min(seconds, MAX_RETRY_AFTER))

    def _base(self, request: LLMRequest) -> dict[str, Any]:
        return {"messages": parse_chatml(request.prompt), "temperature": 0}

    def _generate(self, request: LLMRequest) -> None:
        body = {**self._base(request), "max_tokens": request.max_tokens}
        if request.schema is None:
            completion = self._streamed(request, body)
        else:
            completion = self._generate_json(request, body, request.schema)
        request.response = request.prefill + completion.text
        self._count(request, completion)

    def _generate_json(
        self, request: LLMRequest, body: dict[str, Any], schema: dict[str, Any]
    ) -> Completion:
        """A reply constrained to ``schema``: OpenAI's ``json_schema`` response format, else
        llama.cpp's ``json_object`` with a schema, else the prompt alone (reported)."""
        formats = {
            "json_schema": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            },
            "json_object": {"type": "json_object", "schema": schema},
        }
        tried = [self.json_format] if self.json_format else [*formats, "prompt"]
        for name in tried:
            if name == "prompt":
                self.json_format = "prompt"
                self._report_unconstrained(request)
                return self._streamed(request, body)
            try:
                completion = self._streamed(request, {**body, "response_format": formats[name]})
            except ServerError as exc:
                if self.json_format or not _refused(exc, ("response_format", "json_schema")):
                    raise
                continue  # the server refused this format: try the next
            self.json_format = name
            return completion
        raise AssertionError("unreachable: 'prompt' is always the last format tried")

    def _report_unconstrained(self, request: LLMRequest) -> None:
        self._on_report(
            request,
            "json-unconstrained",
            "the server does not take response_format json_schema; the JSON output was "
            "asked for in the prompt and is validated afterwards",
        )

    def _streamed(self, request: LLMRequest, body: dict[str, Any]) -> Completion:
        """Send ``body`` streamed; under ``rr`` a slice is recorded every quantum tokens."""
        quantum = self.queue.slice_budget()
        current = Slice(request)
        streamed = 0

        def on_text(_piece: str) -> None:
            nonlocal streamed
            streamed += 1
            if quantum is not None and streamed >= quantum:
                self._on_slice(current.close(streamed, streamed))
                streamed = 0

        try:
            return self.client.chat(body, on_text)
        finally:
            if streamed or request.slices == 0:
                self._on_slice(current.close(streamed, streamed))
            else:
                current.discard()

    def _count(self, request: LLMRequest, completion: Completion) -> None:
        request.counted_prompt_tokens = completion.prompt_tokens
        produced = completion.completion_tokens
        request.counted_output_tokens = produced if produced is not None else completion.chunks
        if completion.cached_tokens is not None:
            request.reused_tokens = completion.cached_tokens
        request.evaluated_tokens += (completion.prompt_tokens or 0) - request.reused_tokens
        request.evaluated_tokens += request.counted_output_tokens or 0
        request.finished = True

    def _choose(self, request: LLMRequest) -> None:
        labels = request.labels
        current = Slice(request)
        try:
            if self.logprobs_supported is not False:
                completion = self.client.chat(
                    {
                        **self._base(request),
                        "max_tokens": 1,
                        "logprobs": True,
                        "top_logprobs": TOP_LOGPROBS,
                    }
                )
                self._count(request, completion)
                if completion.logprobs:
                    self.logprobs_supported = True
                    scores = first_token_scores(completion.logprobs, labels)
                    if scores:
                        # A server gives first-token log-probabilities: stored as raw scores
                        # (no content-free calibration here).
                        request.label_scores = scores
                        request.label_raw_scores = dict(scores)
                        request.response = max(scores, key=lambda label: scores[label])
                        return
                else:
                    self.logprobs_supported = False
            # No usable log-probabilities: a choice the server constrains to the labels
            # (llama.cpp's grammar, vLLM's guided_choice); never a guess from free text.
            # a token is at least one character (grammar-constrained sampling can go
            # character by character), so this always fits the longest label
            longest = max(len(label.encode("utf-8")) for label in labels)
            try:
                completion = self.client.chat(
                    {
                        **self._base(request),
                        "max_tokens": longest + 4,
                        "grammar": choice_grammar(labels),
                        "guided_choice": labels,
                    }
                )
            except ServerError as exc:
                if not _refused(exc, ("grammar", "guided_choice")):
                    raise
                completion = Completion(text=f"\0{exc}")
            self._count(request, completion)
            if completion.text.strip() not in labels:
                said = " ".join(completion.text.replace("\0", "").split())[:80]
                raise DecisionUnsupported(
                    "the server returned neither log-probabilities of the labels nor a reply "
                    "constrained to them (llama.cpp grammar or vLLM guided_choice); use a "
                    f"server that does, or decide this step with 'when:' (it said: {said!r})"
                )
            request.response = completion.text.strip()
        finally:
            tokens = request.counted_output_tokens or 0
            self._on_slice(current.close(tokens, request.evaluated_tokens))
