"""Running a case: its run (and the resumes its answers make) through a mocking kernel,
then every expectation checked against what the run did and what was stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from flowengine.errors import RunError
from flowengine.kernel.kernel import Kernel
from flowengine.runtime.interpreter import AgentRun, Checkpoint, RunOutcome, RunSetup, StepEvent
from flowengine.storage.writer import Storage
from flowengine.testing.checks import Failure, Observed, check
from flowengine.testing.mocking import MockingKernel, Mocks, ToolReply
from flowengine.testing.spec import Case, TestFile

MAX_ANSWERS = 100
"""Resumes one case may make with its answers (a loop that keeps asking stops here)."""


@dataclass
class CaseResult:
    file: str
    case: str
    attempt: int
    passed: bool
    failures: list[Failure]
    observed: Observed
    duration: float
    run_ids: list[str] = field(default_factory=list)


def mocks_of(case: Case, only_mocks: bool) -> Mocks:
    return Mocks(
        replies={step: list(replies) for step, replies in case.replies.items()},
        tools={
            step: [ToolReply(mock.result, mock.error) for mock in mocks]
            for step, mocks in case.tools.items()
        },
        only_mocks=only_mocks,
    )


def run_case(
    test: TestFile,
    case: Case,
    kernel: Kernel,
    storage: Storage,
    *,
    attempt: int = 1,
    only_mocks: bool = False,
    max_tokens: int | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
) -> CaseResult:
    """Run ``case`` once and check it."""
    from flowengine.runtime.prepare import check_inputs, resume_setup, with_answer

    started = time.perf_counter()
    mocking = MockingKernel(kernel, mocks_of(case, only_mocks))
    setup = RunSetup(
        test.agent,
        test.agent_source,
        case.task,
        check_inputs(test.agent, case.variables),
        run_id=uuid.uuid4().hex[:12],
    )
    if max_tokens is not None:
        setup.max_tokens = max_tokens
    run_ids = [setup.run_id]
    # The runtime asks only the kernel API MockingKernel implements (tests/test_layers.py).
    outcome = AgentRun(cast(Kernel, mocking), setup, on_step).run()
    visits: dict[str, int] = {}
    answered = 0
    while outcome.status == "waiting" and answered < MAX_ANSWERS:
        step = outcome.waiting_step or ""
        given = case.answers.get(step)
        if not given:
            break
        answer = given[min(visits.get(step, 0), len(given) - 1)]
        visits[step] = visits.get(step, 0) + 1
        answered += 1
        resumed, checkpoint, status = resume_setup(storage, outcome.run_id)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        try:
            checkpoint = with_answer(storage, resumed, checkpoint, status, (text, False))
        except RunError as refused:  # the run keeps waiting; the case says why
            outcome.error = f"the case's answer was refused: {refused.message}"
            break
        outcome = _resume(mocking, resumed, checkpoint, on_step)
    observed = _observed(outcome, mocking, storage, run_ids)
    failures = [f for e in case.expectations if (f := check(e, observed)) is not None]
    return CaseResult(
        file=str(test.path),
        case=case.name,
        attempt=attempt,
        passed=not failures,
        failures=failures,
        observed=observed,
        duration=time.perf_counter() - started,
        run_ids=run_ids,
    )


def _resume(
    mocking: MockingKernel,
    setup: RunSetup,
    checkpoint: Checkpoint,
    on_step: Callable[[StepEvent], None] | None,
) -> RunOutcome:
    return AgentRun(cast(Kernel, mocking), setup, on_step).run(checkpoint)


def _observed(
    outcome: RunOutcome, mocking: MockingKernel, storage: Storage, run_ids: list[str]
) -> Observed:
    seen = mocking.seen
    codes = [
        code
        for (code,) in storage.query(
            "SELECT code FROM errors WHERE run_id = ? ORDER BY occurred", [outcome.run_id]
        )
    ]
    tokens = sum(len(request.output_tokens) for request in seen.requests)
    counted = [r.counted_output_tokens for r in seen.requests if r.counted_output_tokens]
    if counted and len(counted) == len(seen.requests):
        tokens = sum(counted)
    output: Any = outcome.output
    results: dict[str, list[Any]] = {}
    for row in seen.steps:
        results.setdefault(row.step_id, []).append(row.result)
    return Observed(
        status=outcome.status,
        output=output,
        path=list(outcome.path),
        variables=dict(seen.variables),
        tool_calls=[(step, tool, args) for step, tool, args, _ in seen.tool_calls],
        error_codes=codes,
        output_tokens=tokens,
        steps=outcome.steps,
        error=outcome.error,
        run_ids=run_ids,
        results=results,
    )
