"""A test case from a stored run (``flowengine test record``): its input as the case's,
its model replies and tool results as mocks, its answers, and its path, status and
output as expectations. Replaying it needs no model, and passes."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from flowengine.errors import RunError
from flowengine.storage.writer import Storage

HEADER = (
    "# {agent}: recorded from run {run_id} by `flowengine test record`; edit it into a\n"
    "# regression test (replayed as it is, it passes with no model).\n"
)


def recorded_case(storage: Storage, run_id: str, out: Path, name: str | None = None) -> str:
    """The YAML text of a test file holding one case recorded from ``run_id``."""
    from flowengine.graph.validate import validate_text

    rows = storage.query(
        "SELECT agent, agent_file, agent_source, inputs, status, output FROM runs WHERE run_id = ?",
        [run_id],
    )
    if not rows:
        known = storage.query("SELECT run_id FROM runs ORDER BY created DESC LIMIT 5")
        hint = ", ".join(row[0] for row in known) or "none yet"
        raise RunError(
            f"{storage.path}: no run {run_id!r} (latest: {hint}); `flowengine logs` lists the runs"
        )
    agent_name, agent_file, source, inputs_json, status, output_text = rows[0]
    if status == "running":
        raise RunError(
            f"run {run_id} is still running (or its process died); record a run that ended"
        )
    agent = validate_text(source, agent_file).agent
    inputs = json.loads(inputs_json)
    task = inputs.pop("task", "")
    inputs.pop("max_tokens", None)
    steps = storage.query(
        "SELECT seq, step_id, kind, result FROM steps WHERE run_id = ? ORDER BY seq", [run_id]
    )
    path = [step_id for _, step_id, _, _ in steps]

    replies: dict[str, dict[int, str]] = {}
    for step_id, step_seq, response in storage.query(
        "SELECT step_id, step_seq, response FROM llm_requests WHERE run_id = ? AND error IS NULL "
        "ORDER BY created",
        [run_id],
    ):
        replies.setdefault(step_id, {})[step_seq] = response  # a retry's success wins
    tools: dict[str, list[dict[str, Any]]] = {}
    for step_id, ok, result, error in storage.query(
        "SELECT step_id, ok, result, error FROM tool_calls WHERE run_id = ? ORDER BY started",
        [run_id],
    ):
        tools.setdefault(step_id, []).append(
            {"result": json.loads(result) if result is not None else None}
            if ok
            else {"error": error}
        )
    answers: dict[str, list[Any]] = {}
    for _, step_id, kind, result in steps:
        if kind == "input":
            answers.setdefault(step_id, []).append(json.loads(result) if result else "")

    output: Any = output_text
    last = agent.steps.get(path[-1]) if agent is not None and path else None
    if output_text is not None and last is not None and last.format == "json":
        with contextlib.suppress(json.JSONDecodeError):
            output = json.loads(output_text)

    case: dict[str, Any] = {"name": name or f"recorded run {run_id}", "input": task}
    if inputs:
        case["variables"] = inputs
    mocks: dict[str, Any] = {}
    if replies:
        mocks["model"] = {
            step: _one_or_list(list(by_seq.values())) for step, by_seq in replies.items()
        }
    if tools:
        mocks["tools"] = {step: _one_or_list(calls) for step, calls in tools.items()}
    if mocks:
        case["mocks"] = mocks
    if answers:
        case["answers"] = {step: _one_or_list(given) for step, given in answers.items()}
    expect: dict[str, Any] = {"status": status if status != "waiting" else "waiting", "path": path}
    if output is not None:
        expect["output"] = {"equals": output}
    case["expect"] = expect

    agent_path = Path(agent_file).resolve()
    relative = os.path.relpath(agent_path, out.resolve().parent)
    document = {"agent": relative, "cases": [case]}
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    header = HEADER.format(run_id=run_id, agent=agent_name)
    # In a checkout, point editors at the schema (an installed package has no schemas/).
    schema = Path(__file__).resolve().parents[2] / "schemas" / "agent-test.schema.json"
    if schema.is_file():
        where = os.path.relpath(schema, out.resolve().parent)
        header = f"# yaml-language-server: $schema={where}\n" + header
    return header + text


class _Dumper(yaml.SafeDumper):
    """Safe YAML, with text of several lines written as a ``|`` block, as a person would."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    multiline = "\n" in value and value == value.strip() and "\t" not in value
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if multiline else None)


_Dumper.add_representer(str, _text)


def _one_or_list(items: list[Any]) -> Any:
    """One item as itself (the same at every visit or call), several as a list."""
    if len(items) == 1 and not isinstance(items[0], list):
        return items[0]
    return items
