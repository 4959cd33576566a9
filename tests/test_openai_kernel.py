"""The kernel's remote path in-process: admission order under fifo and rr, the in-flight
bound, and the Retry-After hold, against the fake server (tests/fake_openai.py)."""

from __future__ import annotations

import pytest

from flowengine.kernel.backends.base import Message
from flowengine.kernel.backends.openai import OpenAIBackend, ServerSettings
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.kernel.server_executor import first_token_scores
from tests.fake_openai import Behaviour, FakeServer


def _kernel(url: str, policy: str, inflight: int) -> Kernel:
    backend = OpenAIBackend(ServerSettings(base_url=url, model="m", max_inflight=inflight))
    return Kernel(backend, SchedulerConfig(policy, 4))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "order"),
    [
        ("fifo", ["a1", "a2", "b1", "b2", "c1", "c2"]),
        ("rr", ["a1", "b1", "c1", "a2", "b2", "c2"]),
    ],
)
def test_admission_order_follows_the_scheduler(policy: str, order: list[str]) -> None:
    behaviour = Behaviour(reply="a reply of some length")
    server = FakeServer(behaviour)
    kernel = _kernel(server.url, policy, inflight=1)
    try:
        requests = [
            LLMRequest.for_messages(
                kernel.backend, [Message("user", name)], run_id=name[0], agent="x", max_tokens=8
            )
            for name in ["a1", "a2", "b1", "b2", "c1", "c2"]
        ]
        done = [future.result(timeout=60) for future in kernel.submit_all(requests)]
    finally:
        kernel.close()
        server.stop()
    assert [body["messages"][-1]["content"] for body in behaviour.bodies] == order
    assert all(r.error is None and r.response == "a reply of some length" for r in done)
    # streamed in pieces of 3 characters: 8 pieces, recorded as slices of 4 under rr
    assert all(r.slices == (2 if policy == "rr" else 1) for r in done)
    assert all(r.counted_prompt_tokens == 10 for r in done)


def test_no_more_than_max_inflight_and_retry_after_holds_the_next_request() -> None:
    behaviour = Behaviour(faults=["429"])
    server = FakeServer(behaviour)
    kernel = _kernel(server.url, "fifo", inflight=2)
    try:
        first = LLMRequest.for_messages(
            kernel.backend, [Message("user", "hi")], run_id="r", agent="x", max_tokens=8
        )
        failed = kernel.run_request(first)
        again = kernel.run_request(failed.retry())
        many = [
            LLMRequest.for_messages(
                kernel.backend, [Message("user", str(n))], run_id=str(n), agent="x", max_tokens=8
            )
            for n in range(6)
        ]
        results = [f.result(timeout=60) for f in kernel.submit_all(many)]
    finally:
        kernel.close()
        server.stop()
    assert failed.error is not None and "HTTP 429" in failed.error
    # the retry was held back for the server's Retry-After (1 s) before it was sent
    assert again.error is None and again.first_start is not None
    assert again.first_start - failed.end >= 0.9  # type: ignore[operator]
    assert all(r.error is None for r in results)
    assert kernel._executor.max_inflight_seen  # type: ignore[attr-defined] <= 2


def test_first_token_scores() -> None:
    top = [{"token": " yes", "logprob": -0.5}, {"token": "no", "logprob": -1.0}]
    assert first_token_scores(
        [{"token": " yes", "logprob": -0.5, "top_logprobs": top}], ["yes", "no", "maybe"]
    ) == {"yes": -0.5, "no": -1.0}
    # a first token that starts two labels cannot tell them apart
    top = [{"token": "a", "logprob": -0.1}]
    assert first_token_scores([{"top_logprobs": top}], ["apple", "avocado"]) == {}
    assert first_token_scores([], ["yes"]) == {}
