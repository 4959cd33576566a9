"""One step on its own (``flowengine test step``), as Step Functions' TestState: from a
given memory, with mocks where given, it shows the rendered prompt, the constraint, the
reply, the result, what was saved, and where the run would go next."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from flowengine.agentfile.model import Agent
from flowengine.kernel.kernel import Kernel
from flowengine.runtime.interpreter import AgentRun, Checkpoint, RunSetup
from flowengine.testing.mocking import MockingKernel, Mocks, StopAfterStep


@dataclass
class StepReport:
    step_id: str
    kind: str
    prompt: str | None = None
    constraint: str | None = None
    reply: str | None = None
    reply_mocked: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    label: str | None = None
    saved: dict[str, Any] = field(default_factory=dict)
    next_step: str | None = None
    ended: str | None = None
    """Why no step was stored: the run's status and error (a failure, a person asked)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def run_one_step(
    kernel: Kernel,
    agent: Agent,
    source: str,
    step_id: str,
    state: dict[str, Any],
    task: str,
    mocks: Mocks,
    answer: tuple[Any] | None = None,
) -> StepReport:
    mocking = MockingKernel(kernel, mocks, one_step=True)
    setup = RunSetup(agent, source, task, {}, run_id=uuid.uuid4().hex[:12])
    memory = {"variables": dict(state), "progress": [], "visits": {}}
    checkpoint = Checkpoint(0, step_id, memory, [])
    if answer is not None:
        checkpoint.answer, checkpoint.has_answer = answer[0], True
    report = StepReport(step_id, agent.steps[step_id].type)
    try:
        outcome = AgentRun(cast(Kernel, mocking), setup).run(checkpoint)
        report.ended = outcome.status + (f": {outcome.error}" if outcome.error else "")
        if outcome.status == "waiting":
            report.ended = f"waiting: the step asks a person {outcome.question!r}; give --answer"
    except StopAfterStep:
        pass
    seen = mocking.seen
    if seen.requests:
        request = seen.requests[-1]
        report.prompt = request.prompt
        if request.kind == "choose":
            report.constraint = "one of the labels " + ", ".join(request.labels)
        elif request.schema is not None:
            report.constraint = f"JSON constrained to the schema {request.schema}"
        elif request.prefill:
            report.constraint = f"JSON, checked after the reply (started with {request.prefill!r})"
        else:
            report.constraint = "none (free text)"
        report.reply = request.response if request.error is None else f"(failed: {request.error})"
        report.reply_mocked = step_id in seen.mocked_steps and step_id in mocks.replies
    for call_step, tool, args, result in seen.tool_calls:
        report.tool_calls.append(
            {
                "step": call_step,
                "tool": tool,
                "args": args,
                "result": result.value if result.ok else None,
                "error": result.error,
                "mocked": call_step in mocks.tools,
            }
        )
    if seen.steps:
        row = seen.steps[0]
        report.result, report.label, report.next_step = row.result, row.label, row.next_step
        step = agent.steps[step_id]
        if step.save_as:
            report.saved = {step.save_as: seen.variables.get(step.save_as, row.result)}
        if row.next_step is None:
            report.ended = "completed: the run would end here"
    return report
