"""The check process and terminal steps share: a JSON output schema that is valid and that
constrained decoding can enforce."""

from __future__ import annotations

import re
from typing import Any

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.agentfile.schema_validation import (
    TEMPLATED_KEYWORDS,
    schema_is_valid,
    unenforceable,
    with_values,
)


def check_output_schema(agent: Agent, step: Step, report: Reporter) -> None:
    """A step's output schema: valid JSON Schema, and enforceable while generating."""
    if step.schema is None:
        return
    if step.format != "json":
        report.error(
            "schema-needs-json",
            f"step '{step.id}' has an output 'schema' but its format is text; add 'format: json'",
            agent.key_at("steps", step.id, "schema"),
        )
    # Templated values are computed at run time: check the rest with stand-ins.
    schema = with_values(step.schema, lambda key, _: TEMPLATED_KEYWORDS[key])
    problem = schema_is_valid(schema)
    if problem:
        # A pattern that is no regular expression is reported at that pattern.
        pattern = _failing_pattern(schema, ()) if "'regex'" in problem else None
        report.error(
            "invalid-output-schema",
            f"the output schema of step '{step.id}' is not a valid JSON Schema: {problem}",
            agent.key_at("steps", step.id, "schema", *pattern)
            if pattern
            else agent.value_at("steps", step.id, "schema"),
        )
        return
    for message in unenforceable(schema):
        path = _schema_key_path(schema, message)
        at = (
            agent.key_at("steps", step.id, "schema", *path)
            if path
            else agent.value_at("steps", step.id, "schema")
        )
        report.error(
            "schema-unsupported",
            f"the output schema of step '{step.id}' uses what constrained decoding cannot "
            f"enforce ({message}); remove it, or check it in a later step",
            at,
        )


def _schema_key_path(schema: Any, message: str) -> tuple[str | int, ...]:
    """Where in ``schema`` the first key named in an llguidance message stands; for a
    regular expression it cannot compile (named by its text, not its key), the first
    ``pattern`` that fails on its own."""
    names = re.findall(r'"([^"]+)"', message)
    if not names and "regex" in message:
        return _failing_pattern(schema, ()) or ()

    def find(node: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in names:
                    return (*path, key)
                found = find(value, (*path, key))
                if found:
                    return found
        elif isinstance(node, list):
            for index, value in enumerate(node):
                found = find(value, (*path, index))
                if found:
                    return found
        return None

    return find(schema, ()) or ()


def _failing_pattern(node: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and unenforceable({"type": "string", "pattern": pattern}):
            return (*path, "pattern")
        items: list[tuple[str | int, Any]] = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return None
    for key, value in items:
        found = _failing_pattern(value, (*path, key))
        if found:
            return found
    return None
