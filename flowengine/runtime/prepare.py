"""Getting runs ready: a validated agent, checked inputs, or a stored run to resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flowengine.agentfile.answers import parse_answer
from flowengine.agentfile.diagnostics import Diagnostic
from flowengine.agentfile.model import Agent
from flowengine.errors import AgentFileError, RunError
from flowengine.graph.validate import Validated, validate_file, validate_text
from flowengine.runtime.interpreter import FINAL_STATUSES, Checkpoint, RunSetup
from flowengine.steps.registry import kind_of
from flowengine.storage.checkpoints import fold
from flowengine.storage.writer import Storage


def _checked(validated: Validated) -> Agent:
    if validated.errors or validated.agent is None:
        shown = "\n".join(d.format() for d in validated.errors[:10])
        more = len(validated.errors) - 10
        if more > 0:
            shown += f"\n... and {more} more"
        raise AgentFileError(
            f"{shown}\n{validated.file}: fix these errors before running "
            "(`flowengine validate` lists them all)"
        )
    return validated.agent


def runnable_agent(path: str, warnings: list[Diagnostic] | None = None) -> tuple[Agent, str]:
    """The agent at ``path``, validated, with its source text (kept with each run);
    ``warnings``, if given, gets validate's warnings, for the user to see first."""
    validated = validate_file(path)
    agent = _checked(validated)
    if warnings is not None:
        warnings.extend(validated.warnings)
    return agent, Path(path).read_text(encoding="utf-8")


def check_inputs(agent: Agent, given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(agent.inputs))
    if unknown:
        declared = ", ".join(sorted(agent.inputs)) or "none"
        raise RunError(
            f"{agent.file}: {agent.name} has no input named {unknown[0]!r} (its inputs: "
            f"{declared}); declare it under 'inputs:' or drop --var {unknown[0]}=..."
        )
    missing = [
        name for name, spec in agent.inputs.items() if name not in given and not spec.has_default
    ]
    if missing:
        raise RunError(
            f"{agent.file}: {agent.name} needs the input {missing[0]!r}; "
            f"pass --var {missing[0]}=VALUE"
        )
    return dict(given)


def resume_setup(storage: Storage, run_id: str) -> tuple[RunSetup, Checkpoint, str]:
    """The stored run ``run_id`` and its last completed step; also its current status."""
    rows = storage.query(
        "SELECT agent_file, agent_source, inputs, status FROM runs WHERE run_id = ?", [run_id]
    )
    if not rows:
        known = storage.query("SELECT run_id FROM runs ORDER BY created DESC LIMIT 5")
        hint = ", ".join(row[0] for row in known) or "none yet"
        raise RunError(
            f"{storage.path}: no run {run_id!r} (latest: {hint}); `flowengine logs` lists the runs"
        )
    agent_file, source, inputs_json, status = rows[0]
    if status in FINAL_STATUSES:
        raise RunError(f"run {run_id} already ended with status {status}; nothing to resume")
    agent = _checked(validate_text(source, agent_file))
    inputs = json.loads(inputs_json)
    task = inputs.pop("task", "")
    max_tokens = int(inputs.pop("max_tokens", 0)) or None
    setup = RunSetup(agent=agent, source_text=source, task=task, inputs=inputs, run_id=run_id)
    if max_tokens:
        setup.max_tokens = max_tokens
    steps = storage.query(
        "SELECT seq, next_step, step_id, result, state FROM steps WHERE run_id = ? ORDER BY seq",
        [run_id],
    )
    if not steps:
        return setup, Checkpoint(0, agent.start_step, {}, []), status
    # Each step stored what it changed; the memory to resume with is their fold.
    state = fold((step_id, result, changed) for _, _, step_id, result, changed in steps)
    seq, next_step = steps[-1][0], steps[-1][1]
    return setup, Checkpoint(seq, next_step, state, list(state["path"])), status


def with_answer(
    storage: Storage,
    setup: RunSetup,
    checkpoint: Checkpoint,
    status: str,
    answer: tuple[str, bool] | None,
) -> Checkpoint:
    """The checkpoint of a run about to be resumed, with the answer its input step waits
    for: ``answer`` is (text, whether it came from a file), or None for none given.

    Everything is checked before anything is written: an answer for a run that is not
    waiting, or one that is empty, too large or fails the step's schema, is refused, and
    a waiting run resumed without an answer takes the step's default once its timeout
    has passed, and is refused before."""
    run_id = setup.run_id
    step = setup.agent.steps.get(checkpoint.next_step or "")
    kind = kind_of(step.type) if step is not None else None
    waiting = status == "waiting" and kind is not None and kind.asks_person
    if answer is not None and not waiting:
        raise RunError(
            f"run {run_id} is not waiting for an answer (its status is {status}); "
            "`flowengine logs` lists the waiting runs and their questions"
        )
    if not waiting:
        return checkpoint
    assert step is not None
    if answer is not None:
        text, from_file = answer
        value, problem = parse_answer(text, step.schema, from_file)
        if problem:
            given = "the answer file" if from_file else "the answer"
            raise RunError(
                f"run {run_id}: {given} for step '{step.id}' {problem}; the run keeps "
                "waiting, give another answer"
            )
        checkpoint.answer, checkpoint.has_answer = value, True
        return checkpoint
    found = storage.query("SELECT epoch(updated), question FROM runs WHERE run_id = ?", [run_id])
    asked, question = float(found[0][0]), found[0][1]
    if step.timeout is not None and step.has_answer_default:
        left = asked + step.timeout - time.time()
        if left <= 0:
            checkpoint.answer, checkpoint.has_answer = step.answer_default, True
            return checkpoint
        expiry = f" (after {left:.0f} more seconds, a resume takes its default answer)"
    else:
        expiry = ""
    raise RunError(
        f"run {run_id} is waiting for an answer to step '{step.id}': {question!r}{expiry}; "
        f"give it with `flowengine resume {run_id} --answer TEXT` or --answer-file FILE"
    )
