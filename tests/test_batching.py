"""The batched executor on a scripted batched backend: cases the real model cannot give
on demand (exact expected outputs whatever the batch holds, a decode that fails), and
every feed checked against what its sequence holds. The real model: test_llamacpp.py."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from flowengine.errors import BackendError
from flowengine.kernel.backends.base import Capability, Message, chatml
from flowengine.kernel.backends.llamacpp import Feed
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.scheduler import SchedulerConfig

VOCABULARY = 12
END = 0


class CountingBackend:
    """Each token is followed by the next number (1 after 11): outputs do not depend on
    batching, so any schedule must give exactly the same replies. It keeps what each
    sequence holds and fails a feed that does not continue it."""

    name = "counting"
    model_name = "counting"
    context_length = 4096
    eos_token_id = END
    capabilities = frozenset({Capability.BATCHING, Capability.KV_REUSE})

    def __init__(self, sequences: int, max_batch: int, fail_ticks: Sequence[int] = ()) -> None:
        self.sequences, self.max_batch, self.tick_tokens = sequences, max_batch, 64
        self.held: dict[int, list[int]] = {s: [] for s in range(sequences)}
        self.fail_ticks = set(fail_ticks)
        self.ticks = 0

    def encode(self, text: str) -> list[int]:
        return [1 + ord(c) % (VOCABULARY - 1) for c in text]

    def decode(self, tokens: Sequence[int]) -> str:
        return " ".join(str(t) for t in tokens)

    def is_end(self, token: int) -> bool:
        return token == END

    def label_tokens(self, label: str) -> list[int]:
        return self.encode(label)

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        return chatml(messages)

    def grammar_tokenizer(self) -> None:
        return None

    def new_cache(self) -> None:
        raise AssertionError("a batched backend has no separate caches")

    def forget(self, sequence: int, start: int = 0) -> None:
        del self.held[sequence][start:]

    def decode_batch(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        self.ticks += 1
        if self.ticks in self.fail_ticks:
            raise BackendError("the decode failed")
        assert len({f.sequence for f in feeds}) == len(feeds) <= self.max_batch
        assert sum(len(f.tokens) for f in feeds) <= self.tick_tokens
        rows = []
        for feed in feeds:
            assert feed.start == len(self.held[feed.sequence]), "a feed must continue its sequence"
            self.held[feed.sequence].extend(feed.tokens)
            wanted = {"none": [], "last": list(feed.tokens[-1:]), "all": list(feed.tokens)}
            row = np.zeros((len(wanted[feed.logits]), VOCABULARY), dtype=np.float32)
            for index, token in enumerate(wanted[feed.logits]):
                row[index, token % (VOCABULARY - 1) + 1] = 10.0
            rows.append(row)
        return rows

    def close(self) -> None:
        pass


def _counting_from(token: int, count: int) -> list[int]:
    out = []
    for _ in range(count):
        token = token % (VOCABULARY - 1) + 1
        out.append(token)
    return out


def _requests(backend: CountingBackend, runs: int, max_tokens: int) -> list[LLMRequest]:
    return [
        LLMRequest.for_messages(
            backend,  # type: ignore[arg-type]
            [Message("user", f"ask {run}")],
            run_id=f"r{run}",
            agent="A",
            max_tokens=max_tokens,
        )
        for run in range(runs)
    ]


@pytest.mark.parametrize("policy", ["fifo", "rr"])
def test_every_schedule_gives_the_same_replies(policy: str) -> None:
    # Two places and two sequences for four requests: under rr, requests leave the batch
    # after three tokens, and their sequences go to others and are refilled.
    backend = CountingBackend(sequences=2, max_batch=2)
    kernel = Kernel(backend, SchedulerConfig(policy, quantum=3))  # type: ignore[arg-type]
    try:
        done = [f.result(timeout=30) for f in kernel.submit_all(_requests(backend, 4, 10))]
    finally:
        kernel.close()
    for request in done:
        assert request.error is None
        assert request.output_tokens == _counting_from(request.prompt_tokens[-1], 10)
        assert sum(s.tokens for s in kernel.recent_slices if s.request_id == request.id) == 10
        assert request.slices == request.preemptions + 1
    assert max(tick.sequences for tick in kernel.recent_ticks) == 2
    if policy == "fifo":
        assert all(r.preemptions == 0 and r.restores == 0 for r in done)
    else:
        assert all(r.preemptions >= 1 for r in done)
        assert sum(r.restores for r in done) >= 1


def test_a_failed_decode_fails_its_requests_and_the_kernel_goes_on() -> None:
    backend = CountingBackend(sequences=4, max_batch=2, fail_ticks=[3])
    kernel = Kernel(backend, SchedulerConfig("fifo"))  # type: ignore[arg-type]
    try:
        done = [f.result(timeout=30) for f in kernel.submit_all(_requests(backend, 3, 5))]
        [after] = [f.result(timeout=30) for f in kernel.submit_all(_requests(backend, 1, 5))]
    finally:
        kernel.close()
    failed = [r for r in done if r.error]
    assert len(failed) == 2 and all("the decode failed" in (r.error or "") for r in failed)
    [survivor] = [r for r in done if not r.error]
    assert survivor.output_tokens == _counting_from(survivor.prompt_tokens[-1], 5)
    assert after.error is None and len(after.output_tokens) == 5


def test_a_run_keeps_its_sequence_between_requests() -> None:
    backend = CountingBackend(sequences=2, max_batch=1)
    kernel = Kernel(backend, SchedulerConfig("fifo"))  # type: ignore[arg-type]
    try:
        [first] = [f.result(timeout=30) for f in kernel.submit_all(_requests(backend, 1, 4))]
        follow = LLMRequest(
            run_id=first.run_id,
            agent="A",
            step_id="s",
            step_seq=1,
            kind="generate",
            prompt="",
            prompt_tokens=first.prompt_tokens + first.output_tokens + [3, 4],
            max_tokens=2,
        )
        [second] = [f.result(timeout=30) for f in kernel.submit_all([follow])]
    finally:
        kernel.close()
    # The last generated token was never fed (nothing needed its logits); all before it
    # was kept.
    assert second.reused_tokens == len(first.prompt_tokens) + len(first.output_tokens) - 1
    assert second.output_tokens == _counting_from(4, 2)


def test_labels_are_scored_in_the_batch() -> None:
    backend = CountingBackend(sequences=2, max_batch=2)
    kernel = Kernel(backend, SchedulerConfig("fifo"))  # type: ignore[arg-type]
    try:
        request = LLMRequest.for_messages(
            backend,  # type: ignore[arg-type]
            [Message("user", "pick")],
            run_id="d",
            agent="A",
            max_tokens=1,
            labels=["ab", "zz"],
        )
        [done] = [f.result(timeout=30) for f in kernel.submit_all([request])]
    finally:
        kernel.close()
    # The prompt ends with a newline (token 11), so 1 is expected next: neither label's
    # first token (10 for "a", 2 for "z") is, each costing about 10 nats. Then "b" (11)
    # follows "a" (10) as counting says, while "z" (2) does not follow "z": 10 nats more.
    # Each label's second token is scored on logits fed after its first, in the batch.
    assert backend.encode("ab") == [10, 11] and backend.encode("z") == [2]
    assert done.label_raw_scores["ab"] == pytest.approx(-10.0, abs=0.01)
    assert done.label_raw_scores["zz"] == pytest.approx(-20.0, abs=0.01)
    assert done.response == "ab"


def test_a_new_kernel_on_the_same_backend_starts_from_empty_sequences() -> None:
    """A sequence is emptied when it is first handed out: what an earlier kernel left in
    the shared context is never taken for this one's prefix (the backend checks that each
    feed continues what its sequence holds)."""
    backend = CountingBackend(sequences=2, max_batch=2)
    replies = []
    for _ in range(2):
        kernel = Kernel(backend, SchedulerConfig("rr", quantum=3))  # type: ignore[arg-type]
        try:
            done = [f.result(timeout=30) for f in kernel.submit_all(_requests(backend, 3, 6))]
        finally:
            kernel.close()
        assert all(r.error is None for r in done)
        replies.append([r.output_tokens for r in done])
    assert replies[0] == replies[1]
