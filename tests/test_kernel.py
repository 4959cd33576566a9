"""The kernel on the scripted backend: scheduling, contexts, tools, access, storage."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from flowengine.errors import AccessDenied, BackendError, ContextOverflow, ToolFailure
from flowengine.kernel.backends.base import Message
from flowengine.kernel.backends.scripted import Rule, Script, ScriptedBackend
from flowengine.kernel.context import fit_prompt
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.storage.rows import ErrorRow, RunRow
from flowengine.storage.writer import Storage
from flowengine.tools.calculator import calculate

LONG = " ".join(f"word{i}" for i in range(40))
SCRIPT = Script(
    rules=[Rule(f"reply {name}: {LONG}", contains=f"ask {name}") for name in "abc"]
    + [Rule("yes", contains="Answer yes or no")],
    default="fallback",
)


def _request(backend: ScriptedBackend, run: str, ask: str, **extra: Any) -> LLMRequest:
    return LLMRequest.for_messages(
        backend, [Message("user", ask)], run_id=run, agent="A", max_tokens=200, **extra
    )


def _run_concurrently(kernel: Kernel, requests: list[LLMRequest]) -> list[LLMRequest]:
    return [future.result(timeout=30) for future in kernel.submit_all(requests)]


@pytest.mark.parametrize("pool", [4, 1])
def test_round_robin_interleaves_and_matches_fifo(pool: int) -> None:
    outputs = {}
    for policy in ("fifo", "rr"):
        backend = ScriptedBackend(SCRIPT)
        kernel = Kernel(backend, SchedulerConfig(policy, quantum=5), pool_size=pool)  # type: ignore[arg-type]
        done = _run_concurrently(kernel, [_request(backend, f"r{n}", f"ask {n}") for n in "abc"])
        kernel.close()
        outputs[policy] = [r.response for r in done]
        order = [s.run_id for s in kernel.recent_slices]
        if policy == "fifo":
            assert order == ["ra", "rb", "rc"]
            assert all(r.preemptions == 0 for r in done)
        else:
            switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
            assert switches >= 6, order
            assert all(r.preemptions >= 2 for r in done)
            assert all(r.slices == r.preemptions + 1 for r in done)
            if pool == 1:  # one cache for three requests: every switch restores a snapshot
                assert sum(r.restores for r in done) >= 6
            else:
                assert sum(r.restores for r in done) == 0
                assert sum(s.evaluated for s in kernel.recent_slices) == sum(
                    len(r.tokens) for r in done
                )
        for request in done:
            assert request.first_start is not None and request.end is not None
            assert request.turnaround >= request.waiting >= 0
    assert outputs["fifo"] == outputs["rr"] == [f"reply {n}: {LONG}" for n in "abc"]


def test_choose_gives_one_of_the_labels_with_scores() -> None:
    backend = ScriptedBackend(SCRIPT)
    kernel = Kernel(backend)
    request = _request(backend, "r", "Is it? Answer yes or no", labels=["no", "yes"])
    done = kernel.run_request(request)
    kernel.close()
    assert done.response == "yes"
    assert done.label_scores["yes"] > done.label_scores["no"]


def test_fit_prompt_drops_the_oldest_progress_first() -> None:
    entries = [f"entry{i} " * 5 for i in range(10)]

    def render(dropped: int) -> str:
        return "ask " + " ".join(entries[dropped:])

    # 6 is the fewest that fit; half of the 4 that would still fit go too, at once.
    text, tokens, dropped = fit_prompt(render, str.split, 22, len(entries))
    assert len(tokens) <= 22 and dropped == 8 and text.endswith("entry9 ")
    with pytest.raises(ContextOverflow, match="window"):
        fit_prompt(render, str.split, 0, len(entries))


def test_fit_prompt_keeps_the_beginning_stable_while_progress_grows() -> None:
    """Once a block is left out, later prompts leave out the same block until they
    overflow again, so a run's KV cache keeps serving their beginning."""
    entries = [f"entry{i} " * 5 for i in range(40)]
    starts = []
    dropped = 0
    for count in range(1, 41):

        def render(left_out: int, count: int = count) -> str:
            return "ask " + " ".join(entries[left_out:count])

        _, tokens, dropped = fit_prompt(render, str.split, 61, count, start=dropped)
        assert len(tokens) <= 61
        starts.append(dropped)
    assert starts == sorted(starts)  # never goes back
    assert len(set(starts)) <= 1 + 40 // 4  # changes in a few large steps, not every step


def test_tools_are_checked_recorded_and_never_crash_the_kernel(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "k.duckdb")
    kernel = Kernel(ScriptedBackend(SCRIPT), storage=storage)
    memory = kernel.register_run("r1", "MathAgent", ["calculator"])
    kernel.register_run("r2", "Other", [])
    assert kernel.call_tool("r1", "s", 1, "calculator", {"expression": "2 ** 10"}).value == {
        "expression": "2 ** 10",
        "value": 1024,
    }
    failed = kernel.call_tool("r1", "s", 2, "calculator", {"expression": "1/0"})
    assert not failed.ok and failed.error == "division by zero"
    bad_args = kernel.call_tool("r1", "s", 3, "calculator", {"expr": "1"})
    assert not bad_args.ok and "expression" in (bad_args.error or "")
    with pytest.raises(AccessDenied, match="does not declare the tool 'search_flights'"):
        kernel.call_tool("r1", "s", 4, "search_flights", {"origin": "a", "destination": "b"})
    memory.variables["secret"] = 1
    with pytest.raises(AccessDenied, match="may not read the memory"):
        kernel.memory.read("r2", "r1")
    assert kernel.memory.read("r1", "r1").variables == {"secret": 1}
    kernel.end_run("r1")
    kernel.close()
    rows = storage.query("SELECT tool, ok FROM tool_calls ORDER BY started")
    codes = storage.query("SELECT code FROM errors ORDER BY occurred")
    storage.close()
    assert rows == [("calculator", True), ("calculator", False), ("calculator", False)]
    assert [c for (c,) in codes] == ["tool-failed", "tool-failed", "tool-denied"]


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "(1).__class__", "open('x')", "9 ** 9 ** 9", "[1] * 9"],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    with pytest.raises(ToolFailure):
        calculate(expression)


def _run_row(status: str, updated: float, steps: int, output: str | None) -> RunRow:
    return RunRow(
        run_id="r",
        agent="A",
        agent_file="f",
        agent_source="",
        inputs={},
        status=status,
        backend="b",
        model="m",
        scheduler="rr",
        quantum=4,
        created=0.0,
        updated=updated,
        steps=steps,
        output=output,
        output_valid=None if output is None else True,
        output_errors=[],
        error=None,
    )


def test_storage_keeps_everything_committed(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.duckdb")
    for index in range(5000):
        storage.record_error(ErrorRow("r", "s", index, "c", "m", 0.0))
    storage.record_run(_run_row("running", 0.0, 0, None))
    storage.record_run(_run_row("completed", 1.0, 3, "out"))
    storage.close()
    reopened = Storage(tmp_path / "s.duckdb")
    assert reopened.query("SELECT count(*) FROM errors") == [(5000,)]
    assert reopened.query("SELECT status, steps FROM runs") == [("completed", 3)]
    reopened.close()


def test_a_single_row_and_a_batch_store_the_same_values(tmp_path: Path) -> None:
    # One row goes through VALUES, several through unnest: both must store the same.
    storage = Storage(tmp_path / "s.duckdb")
    when = 1_700_000_000.25
    storage.record_error(ErrorRow("alone", "s", 1, "c", "m é", when))
    storage.commit()
    storage.record_error(ErrorRow("no-time", "s", None, "c", "m", None))
    storage.commit()
    for run_id in ("batch-1", "batch-2"):
        storage.record_error(ErrorRow(run_id, "s", 1, "c", "m é", when))
    storage.commit()
    rows = storage.query(
        "SELECT run_id, step_seq, message, epoch(occurred), strftime(occurred, '%H:%M')"
        " FROM errors ORDER BY run_id"
    )
    storage.close()
    assert rows == [
        ("alone", 1, "m é", when, "22:13"),
        ("batch-1", 1, "m é", when, "22:13"),
        ("batch-2", 1, "m é", when, "22:13"),
        ("no-time", None, "m", None, None),
    ]


def test_the_kernel_keeps_only_its_newest_slices_and_stores_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived process must not grow with every slice it served: the slices go to
    storage as they happen, and memory keeps a short window of the newest."""
    from flowengine.kernel import defaults

    monkeypatch.setattr(defaults, "RECENT_RECORDS", 3)
    storage = Storage(tmp_path / "k.duckdb")
    backend = ScriptedBackend(SCRIPT)
    kernel = Kernel(backend, SchedulerConfig("rr", quantum=5), storage)  # type: ignore[arg-type]
    done = _run_concurrently(kernel, [_request(backend, f"r{n}", f"ask {n}") for n in "abc"])
    kernel.close()
    served = sum(request.slices for request in done)
    assert served > 3
    assert len(kernel.recent_slices) == 3
    [(stored,)] = storage.query("SELECT count(*) FROM llm_slices")
    storage.close()
    assert stored == served


def test_one_ready_queue_admits_round_robin_over_runs_and_decides_who_yields() -> None:
    """The queue every executor serves: fifo by arrival; rr by the run admitted longest
    ago; a request that used its quantum yields only to one waiting beyond free places."""
    from dataclasses import dataclass

    from flowengine.kernel.scheduler import ReadyQueue

    backend = ScriptedBackend(SCRIPT)
    a1, a2, b1, c1 = (_request(backend, run, "ask") for run in ("a", "a", "b", "c"))
    fifo = ReadyQueue(SchedulerConfig("fifo"))
    fifo.put_all([a1, a2, b1, c1])
    assert fifo.take_upto(4, wait=False) == [a1, a2, b1, c1]
    rr = ReadyQueue(SchedulerConfig("rr", quantum=2))
    rr.put_all([a1, a2, b1, c1])
    # a's second request waits until b and c have had a turn.
    assert rr.take_upto(4, wait=False) == [a1, b1, c1, a2]

    @dataclass
    class OnModel:
        request: LLMRequest
        produced: int

    running = [OnModel(a1, 2), OnModel(b1, 1), OnModel(c1, 5)]
    assert rr.yielders(running) == []  # nobody waits
    rr.put(a2)
    assert [r.request for r in rr.yielders(running)] == [a1]
    assert rr.yielders(running, free_places=1) == []  # a2 can have the free place
    assert fifo.yielders(running) == []
    rr.close()
    assert rr.take() is a2 and rr.take() is None


def test_a_request_alone_is_served_on_its_own_thread_and_others_by_the_worker() -> None:
    """With the model free and nobody waiting, a run serves its own request (no hand-off
    to the worker and back); while the model is busy, requests go through the queue."""
    import threading

    backend = ScriptedBackend(Script(rules=SCRIPT.rules, default="fallback", token_delay=0.01))
    kernel = Kernel(backend, SchedulerConfig("fifo"))
    served_on: dict[str, set[str]] = {}
    kernel.on_slice = lambda record: served_on.setdefault(record.run_id, set()).add(
        threading.current_thread().name
    )
    try:
        alone = kernel.run_request(_request(backend, "alone", "ask a"))
        first = _request(backend, "first", "ask b")
        busy = kernel.submit(first)  # the worker takes it
        while first.first_start is None:  # its slice has begun: the model is busy
            threading.Event().wait(0.001)
        waited = kernel.run_request(_request(backend, "second", "ask c"))
        busy.result(timeout=30)
    finally:
        kernel.close()
    assert alone.response == f"reply a: {LONG}" and waited.response == f"reply c: {LONG}"
    assert served_on["alone"] == {threading.current_thread().name}
    assert served_on["second"] == served_on["first"] == {"kernel-llm"}


@pytest.mark.parametrize("policy", ["fifo", "rr"])
def test_a_record_that_cannot_be_stored_fails_its_request_and_the_kernel_goes_on(
    policy: str,
) -> None:
    """A slice whose recording raises (a full disk, say) fails that request only: its run
    gets it back with the error, and the kernel serves the next requests as before."""
    backend = ScriptedBackend(SCRIPT)
    kernel = Kernel(backend, SchedulerConfig(policy, quantum=5))  # type: ignore[arg-type]
    broken = {"once": True}

    def record(_: Any) -> None:
        if broken.pop("once", False):
            raise OSError("No space left on device")

    kernel.on_slice = record
    first = kernel.submit(_request(backend, "ra", "ask a")).result(timeout=30)
    assert first.error == "OSError: No space left on device"
    later = _run_concurrently(kernel, [_request(backend, f"r{n}", f"ask {n}") for n in "bc"])
    assert [r.error for r in later] == [None, None]
    assert [r.response for r in later] == [f"reply {n}: {LONG}" for n in "bc"]
    kernel.close()


def test_a_run_serving_itself_takes_its_round_robin_turn_and_close_refuses_later_requests() -> None:
    """A request served on its run's own thread (the model free, nobody waiting) counts as
    that run's turn under rr, so a run that just had the model waits behind one that has
    not; after close a request is refused at once rather than left waiting."""
    backend = ScriptedBackend(SCRIPT)
    kernel = Kernel(backend, SchedulerConfig("rr", quantum=5))  # type: ignore[arg-type]
    alone = kernel.run_request(_request(backend, "ra", "ask a"))  # served on this thread
    assert alone.error is None and alone.slices == 1
    done = _run_concurrently(kernel, [_request(backend, f"r{n}", f"ask {n}") for n in "ab"])
    order = [s.run_id for s in kernel.recent_slices][1:]
    assert order[0] == "rb", order  # 'ra' had the last turn, so 'rb' goes first
    assert [r.response for r in done] == [f"reply {n}: {LONG}" for n in "ab"]
    kernel.close()
    with pytest.raises(BackendError, match="closed"):
        kernel.run_request(_request(backend, "rc", "ask c"))
