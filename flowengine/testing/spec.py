"""Test files (``*.test.yaml``): loaded with positions, checked against their JSON Schema
and against the agent they test, into dataclasses the runner reads.

Every problem is a located diagnostic (``FILE:LINE:COL: error: ... [code]``), with "did
you mean" for a step, branch, variable or field that does not exist.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.agentfile.diagnostics import Diagnostic, Position, Severity, did_you_mean
from flowengine.agentfile.model import Agent
from flowengine.agentfile.yamlsource import Document, YamlLoadError, load, read_text
from flowengine.steps.registry import kind_of

SCHEMA_FILE = Path(__file__).with_name("agent-test.schema.json")
SUFFIXES = (".test.yaml", ".test.yml")

TEST_CODES = {
    "test-file": "a test file that cannot be read, or does not match the test file schema",
    "test-agent": "the agent a test file names is missing or has errors",
    "test-unknown-step": "a mock, answer or expectation names a step the agent does not have",
    "test-unknown-branch": "a decision's mocked reply is not one of its branches",
    "test-unknown-variable": "a variable the agent has no input for, or never saves",
    "test-bad-mock": "a mock for a step that cannot take it (a tool result, no tool)",
    "test-expression": "an output expression or regular expression that does not compile",
    "test-duplicate-case": "two cases with the same name",
}
"""The diagnostic codes of test files (stable, as the agent file codes)."""


@functools.cache
def file_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


@dataclass
class Expectation:
    """One thing a case checks: ``what`` (``status``, ``output.contains``...), the
    expected value, and where it is written."""

    what: str
    expected: Any
    at: Position


@dataclass
class ToolMock:
    result: Any = None
    error: str | None = None


@dataclass
class Case:
    name: str
    at: Position
    task: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    replies: dict[str, list[Any]] = field(default_factory=dict)
    """Step id -> the model's replies, one per visit (the last repeats)."""
    tools: dict[str, list[ToolMock]] = field(default_factory=dict)
    """Step id -> the tool's results, one per call (the last repeats)."""
    answers: dict[str, list[Any]] = field(default_factory=dict)
    expectations: list[Expectation] = field(default_factory=list)
    unmocked: list[str] = field(default_factory=list)
    """The steps that ask the model with no mocked reply: they reach the real backend."""


@dataclass
class TestFile:
    path: Path
    agent_path: Path
    agent: Agent
    agent_source: str
    cases: list[Case]


@dataclass
class Loaded:
    test: TestFile | None
    diagnostics: list[Diagnostic]


def is_test_file(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def find_test_files(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The test files named or found under folders (sorted), and paths that do not exist."""
    found: list[Path] = []
    missing: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(p for suffix in SUFFIXES for p in path.rglob(f"*{suffix}"))
        elif path.is_file():
            found.append(path)
        else:
            missing.append(given)
    return list(dict.fromkeys(found)), missing


class _Report:
    def __init__(self, file: str, document: Document | None = None) -> None:
        self.file = file
        self.document = document
        self.diagnostics: list[Diagnostic] = []

    def error(self, code: str, message: str, at: Position | None = None) -> None:
        assert code in TEST_CODES, code
        at = at or Position()
        self.diagnostics.append(
            Diagnostic(self.file, at.line, at.column, Severity.ERROR, code, message)
        )

    def key(self, *path: str | int) -> Position:
        return self.document.key_at(path) if self.document else Position()

    def value(self, *path: str | int) -> Position:
        return self.document.value_at(path) if self.document else Position()


def load_test_file(path: Path) -> Loaded:
    """The test file at ``path`` and its agent, checked; ``test`` is None on any error."""
    try:
        text = read_text(str(path))
    except YamlLoadError as exc:
        report = _Report(str(path))
        report.error("test-file", f"{exc} [{exc.code}]", exc.position)
        return Loaded(None, report.diagnostics)
    return load_test_text(text, path)


def load_test_text(text: str, path: Path) -> Loaded:
    """A test file's text (as if at ``path``, which its agent is relative to), checked."""
    report = _Report(str(path))
    try:
        document = load(text)
    except YamlLoadError as exc:
        report.error("test-file", f"{exc} [{exc.code}]", exc.position)
        return Loaded(None, report.diagnostics)
    report.document = document
    data = document.data
    if not _schema_ok(data, report):
        return Loaded(None, report.diagnostics)
    try:
        agent_path = (path.parent / data["agent"]).resolve()
        agent = _agent(agent_path, data["agent"], report)
        source = agent_path.read_text(encoding="utf-8") if agent is not None else ""
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, unreadable
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        report.error(
            "test-agent",
            f"cannot read the agent file {data['agent']!r}: {reason}; give the path of an "
            "agent file, relative to this test file",
            report.value("agent"),
        )
        return Loaded(None, report.diagnostics)
    if agent is None:
        return Loaded(None, report.diagnostics)
    cases = [_case(agent, raw, index, report) for index, raw in enumerate(data["cases"])]
    seen: dict[str, int] = {}
    for index, case in enumerate(cases):
        if case.name in seen:
            report.error(
                "test-duplicate-case",
                f"case {case.name!r} is already defined (case {seen[case.name] + 1}); "
                "give each case its own name",
                report.value("cases", index, "name"),
            )
        seen.setdefault(case.name, index)
    if report.diagnostics:
        return Loaded(None, report.diagnostics)
    return Loaded(TestFile(path, agent_path, agent, source, cases), [])


def _schema_ok(data: Any, report: _Report) -> bool:
    from jsonschema import Draft202012Validator

    errors = sorted(
        Draft202012Validator(file_schema()).iter_errors(data),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    for error in errors:
        where = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for key in error.instance:
                if key not in allowed:
                    report.error(
                        "test-file",
                        f"unknown field {key!r}{did_you_mean(key, allowed)}",
                        report.key(*where, key),
                    )
            continue
        if error.validator == "required":
            message = f"{error.message.replace(' is a required property', '')} is missing"
            report.error("test-file", f"{_describe(where)}: {message}", report.key(*where))
            continue
        report.error("test-file", f"{_describe(where)}: {error.message}", report.value(*where))
    return not errors


def _describe(path: tuple[str | int, ...]) -> str:
    if not path:
        return "the test file"
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path)
    )


def _agent(agent_path: Path, given: str, report: _Report) -> Agent | None:
    from flowengine.graph.validate import validate_file

    at = report.value("agent")
    if not agent_path.is_file():
        near = (
            [p.name for p in agent_path.parent.glob("*.yaml")] if agent_path.parent.is_dir() else []
        )
        report.error(
            "test-agent",
            f"no agent file {given!r} (looked for {agent_path})"
            f"{did_you_mean(Path(given).name, near)}",
            at,
        )
        return None
    validated = validate_file(str(agent_path))
    if validated.errors or validated.agent is None:
        first = validated.errors[0].format() if validated.errors else "it does not load"
        report.error(
            "test-agent",
            f"the agent {given!r} has {len(validated.errors)} error(s); first: {first}",
            at,
        )
        return None
    return validated.agent


def _per_visit(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _case(agent: Agent, raw: dict[str, Any], index: int, report: _Report) -> Case:
    case = Case(name=raw["name"], at=report.key("cases", index), task=raw.get("input", ""))
    here = ("cases", index)
    steps = list(agent.steps)

    def known_step(step_id: str, *path: str | int) -> bool:
        if step_id in agent.steps:
            return True
        report.error(
            "test-unknown-step",
            f"{agent.name} has no step {step_id!r}{did_you_mean(step_id, steps)}",
            report.key(*here, *path),
        )
        return False

    variables = raw.get("variables", {})
    for name, value in variables.items():
        if name not in agent.inputs:
            report.error(
                "test-unknown-variable",
                f"{agent.name} has no input {name!r}{did_you_mean(name, agent.inputs)} (its "
                f"inputs: {', '.join(agent.inputs) or 'none'})",
                report.key(*here, "variables", name),
            )
        case.variables[name] = value
    for name, spec in agent.inputs.items():
        if name not in variables and not spec.has_default:
            report.error(
                "test-unknown-variable",
                f"{agent.name} needs the input {name!r}; give it under variables",
                report.key(*here),
            )
    mocks = raw.get("mocks", {})
    unmocked = []
    for step_id, value in mocks.get("model", {}).items():
        if not known_step(step_id, "mocks", "model", step_id):
            continue
        if value is None:  # `~`: this step asks the real backend (after a `<<` merge)
            continue
        step = agent.steps[step_id]
        replies = _per_visit(value)
        at = report.value(*here, "mocks", "model", step_id)
        if not asks_model(step):
            why = (
                "with when: conditions"
                if step.when
                else "with only a tool"
                if step.tool and not step.instruction
                else "with an output template"
                if step.output is not None
                else ""
            )
            report.error(
                "test-bad-mock",
                f"step {step_id!r} does not ask the model (a {step.type} step"
                f"{' ' + why if why else ''}); "
                "mock its tool under mocks.tools, or remove this mock",
                at,
            )
        if step.type == "decision":
            for reply in replies:
                near = did_you_mean(reply, step.branches) if isinstance(reply, str) else ""
                if not isinstance(reply, str) or reply not in step.branches:
                    report.error(
                        "test-unknown-branch",
                        f"{reply!r} is not a branch of decision {step_id!r} (its branches: "
                        f"{', '.join(step.branches)})"
                        f"{near}",
                        at,
                    )
        case.replies[step_id] = replies
    for step_id, value in mocks.get("tools", {}).items():
        if not known_step(step_id, "mocks", "tools", step_id):
            continue
        if not agent.steps[step_id].tool:
            report.error(
                "test-bad-mock",
                f"step {step_id!r} calls no tool; mock its model reply under mocks.model",
                report.key(*here, "mocks", "tools", step_id),
            )
        case.tools[step_id] = [
            ToolMock(result=item.get("result"), error=item.get("error"))
            for item in _per_visit(value)
        ]
    for step_id in _reachable(agent, case.replies):
        if asks_model(agent.steps[step_id]) and step_id not in case.replies:
            unmocked.append(step_id)
    case.unmocked = unmocked
    for step_id, value in raw.get("answers", {}).items():
        if not known_step(step_id, "answers", step_id):
            continue
        kind = kind_of(agent.steps[step_id].type)
        if kind is None or not kind.asks_person:
            report.error(
                "test-bad-mock",
                f"step {step_id!r} is a {agent.steps[step_id].type} step, not an input step; "
                "only input steps take answers",
                report.key(*here, "answers", step_id),
            )
        case.answers[step_id] = _per_visit(value)
    expect = raw.get("expect", {})
    if "status" not in expect:
        case.expectations.append(Expectation("status", "completed", case.at))
    saved = {step.save_as for step in agent.steps.values() if step.save_as}
    for key, value in expect.items():
        at = report.key(*here, "expect", key)
        if key in ("path", "path_in_order", "path_any_order"):
            for number, step_id in enumerate(value):
                known_step(step_id, "expect", key, number)
        if key == "tool_calls":
            for number, call in enumerate(value):
                if "step" in call:
                    known_step(call["step"], "expect", key, number, "step")
                if call["tool"] not in agent.tools:
                    report.error(
                        "test-unknown-step",
                        f"{agent.name} declares no tool {call['tool']!r}"
                        f"{did_you_mean(call['tool'], agent.tools)}",
                        report.value(*here, "expect", key, number, "tool"),
                    )
        if key == "variables":
            for name in value:
                if name not in saved and name not in agent.inputs:
                    report.error(
                        "test-unknown-variable",
                        f"{agent.name} never saves a variable {name!r}"
                        f"{did_you_mean(name, sorted(saved | set(agent.inputs)))}",
                        report.key(*here, "expect", key, name),
                    )
        if key == "output":
            for check, expected in value.items():
                where = report.key(*here, "expect", "output", check)
                _check_compiles(check, expected, where, report)
                case.expectations.append(Expectation(f"output.{check}", expected, where))
            continue
        case.expectations.append(Expectation(key, value, at))
    return case


def _reachable(agent: Agent, replies: dict[str, list[Any]]) -> list[str]:
    """The steps a run of the case can reach: a decision whose replies are mocked goes
    only where those labels lead (so the model is loaded only when a case needs it)."""
    start = agent.start_step
    seen: list[str] = []
    todo = [start] if start is not None else []
    while todo:
        step_id = todo.pop()
        if step_id in seen or step_id not in agent.steps:
            continue
        seen.append(step_id)
        step = agent.steps[step_id]
        if step.type == "decision" and not step.when and step_id in replies:
            todo += [
                step.branches[label]
                for label in replies[step_id]
                if isinstance(label, str) and label in step.branches
            ]
        else:
            todo += list(step.branches.values())
        todo += [target for target in (step.next, step.on_error) if target]
    return seen


def asks_model(step: Any) -> bool:
    """Whether running ``step`` sends a request to the model."""
    if step.type == "decision":
        return not step.when
    if step.type in ("process", "terminal"):
        return bool(step.instruction) and step.output is None
    return False


def _check_compiles(check: str, expected: Any, at: Position, report: _Report) -> None:
    if check == "matches":
        try:
            re.compile(expected)
        except re.error as exc:
            report.error("test-expression", f"the regular expression does not compile: {exc}", at)
    elif check == "expression":
        from flowengine.agentfile.templates import TemplateProblem, expression_variables

        try:
            expression_variables(expected)
        except TemplateProblem as exc:
            report.error("test-expression", f"the expression does not compile: {exc}", at)
    elif check == "schema":
        from flowengine.agentfile.schema_validation import schema_is_valid

        problem = schema_is_valid(expected)
        if problem:
            report.error("test-expression", f"the schema is not valid JSON Schema: {problem}", at)
