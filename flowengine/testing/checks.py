"""Expectations against what a run did: each check gives None (it holds) or a failure
saying what was expected and what happened."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from flowengine.testing.spec import Expectation

CHECKS = (
    "status",
    "path",
    "path_in_order",
    "path_any_order",
    "output.equals",
    "output.contains",
    "output.matches",
    "output.schema",
    "output.expression",
    "variables",
    "tool_calls",
    "errors",
    "max_steps",
    "max_tokens",
)
"""Every expectation ``check`` knows (the test file schema's, a test keeps them equal)."""


@dataclass
class Observed:
    """What a case's run did, as the checks read it."""

    status: str
    output: Any
    path: list[str]
    variables: dict[str, Any]
    tool_calls: list[tuple[str, str, dict[str, Any]]]
    """(step id, tool, args) in call order."""
    error_codes: list[str]
    output_tokens: int
    steps: int
    error: str | None = None
    run_ids: list[str] = field(default_factory=list)
    results: dict[str, list[Any]] = field(default_factory=dict)
    """Step id -> the step's result at each visit."""


@dataclass
class Failure:
    expectation: Expectation
    expected: str
    actual: str


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 400 else text[:399] + "…"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _in_order(wanted: list[Any], actual: list[Any]) -> bool:
    rest = iter(actual)
    return all(any(item == got for got in rest) for item in wanted)


def _subset(wanted: Any, actual: Any) -> bool:
    """``wanted`` holds in ``actual``: mappings key by key (others may be there), the rest
    equal."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and _subset(value, actual[key]) for key, value in wanted.items()
        )
    return bool(wanted == actual)


def check(expectation: Expectation, seen: Observed) -> Failure | None:
    what, expected = expectation.what, expectation.expected

    def fail(wanted: str, actual: str) -> Failure:
        return Failure(expectation, wanted, actual)

    if what == "status":
        allowed = expected if isinstance(expected, list) else [expected]
        if seen.status not in allowed:
            why = f" ({seen.error})" if seen.error else ""
            return fail(" or ".join(allowed), f"{seen.status}{why}")
    elif what == "path":
        if seen.path != expected:
            return fail(_show(expected), _show(seen.path))
    elif what == "path_in_order":
        if not _in_order(expected, seen.path):
            return fail(f"{_show(expected)} in this order", _show(seen.path))
    elif what == "path_any_order":
        missing = [step for step in expected if step not in seen.path]
        if missing:
            return fail(
                f"{_show(expected)} in any order (missing {_show(missing)})", _show(seen.path)
            )
    elif what == "output.equals":
        if seen.output != expected:
            return fail(_show(expected), _show(seen.output))
    elif what == "output.contains":
        if expected not in _text(seen.output):
            return fail(f"an output containing {expected!r}", _show(seen.output))
    elif what == "output.matches":
        if re.search(expected, _text(seen.output)) is None:
            return fail(f"an output matching /{expected}/", _show(seen.output))
    elif what == "output.schema":
        from jsonschema import Draft202012Validator

        output = seen.output
        if isinstance(output, str):
            with contextlib.suppress(json.JSONDecodeError):
                output = json.loads(output)
        errors = list(Draft202012Validator(expected).iter_errors(output))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            return fail(
                "an output matching the schema",
                f"{_show(seen.output)} ({where}: {errors[0].message})",
            )
    elif what == "output.expression":
        value, problem = _evaluate(expected, seen)
        if problem is not None:
            return fail(f"{expected} to be true", f"the expression failed: {problem}")
        if not value:
            return fail(
                f"{expected} to be true", f"{_show(value)}, with output {_show(seen.output)}"
            )
    elif what == "variables":
        wrong = {
            name: seen.variables.get(name, "(not saved)")
            for name, value in expected.items()
            if name not in seen.variables or not _subset(value, seen.variables[name])
        }
        if wrong:
            return fail(_show({k: expected[k] for k in wrong}), _show(wrong))
    elif what == "tool_calls":
        made = [{"tool": t, "step": s, "args": a} for s, t, a in seen.tool_calls]
        if expected == [] and made:
            return fail("no tool calls", _show(made))
        if not _in_order(
            [_CallPattern(call) for call in expected],
            made,
        ):
            return fail(f"{_show(expected)} in this order", _show(made))
    elif what == "errors":
        if expected == [] and seen.error_codes:
            return fail("no errors", _show(seen.error_codes))
        missing = [code for code in expected if code not in seen.error_codes]
        if missing:
            return fail(
                f"errors {_show(expected)}",
                _show(seen.error_codes) if seen.error_codes else "no errors",
            )
    elif what == "max_steps":
        if seen.steps > expected:
            return fail(f"at most {expected} steps", f"{seen.steps} steps")
    elif what == "max_tokens":
        if seen.output_tokens > expected:
            return fail(f"at most {expected} generated tokens", f"{seen.output_tokens} tokens")
    else:  # the schema allows no other key
        raise AssertionError(f"unknown expectation {what}")
    return None


class _CallPattern:
    """An expected tool call, equal to a made call it matches (args key by key)."""

    def __init__(self, call: dict[str, Any]) -> None:
        self.call = call

    def __eq__(self, made: object) -> bool:
        if not isinstance(made, dict):
            return NotImplemented
        call = self.call
        return (
            call["tool"] == made["tool"]
            and call.get("step", made["step"]) == made["step"]
            and _subset(call.get("args", {}), made["args"])
        )

    __hash__ = None  # type: ignore[assignment]


def _evaluate(expression: str, seen: Observed) -> tuple[Any, str | None]:
    from flowengine.agentfile.sandbox import render_bounded
    from flowengine.agentfile.templates import compiled_expression

    variables = {
        **seen.variables,
        "output": seen.output,
        "status": seen.status,
        "path": list(seen.path),
        "steps": seen.steps,
        "variables": dict(seen.variables),
        "results": {step: list(values) for step, values in seen.results.items()},
    }
    try:
        compiled = compiled_expression(expression)
        return render_bounded(lambda: compiled(**variables)), None
    except Exception as exc:  # sandbox refusals, undefined names, type errors
        return None, f"{type(exc).__name__}: {exc}"
