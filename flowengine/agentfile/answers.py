"""Answers a person gives an input step: read, size-capped, and checked against its schema."""

from __future__ import annotations

import json
from typing import Any

MAX_ANSWER_BYTES = 64 * 1024
"""The largest answer taken (UTF-8 bytes of its text or JSON); a run's memory is small."""


def answer_problem(schema: dict[str, Any] | None, value: Any) -> str | None:
    """What is wrong with ``value`` as an answer, in words ("is empty"), or None.

    Without a schema an answer is text; with one, any JSON value the schema accepts."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    size = len(text.encode("utf-8"))
    if size > MAX_ANSWER_BYTES:
        return f"is too large ({size} bytes; at most {MAX_ANSWER_BYTES})"
    if schema is None:
        if not isinstance(value, str):
            return "must be text (the step has no 'schema' for a structured answer)"
        if not value.strip():
            return "is empty"
        return None
    if isinstance(value, str) and not value.strip():
        return "is empty"
    from jsonschema import Draft202012Validator

    try:
        errors = sorted(
            Draft202012Validator(schema).iter_errors(value), key=lambda e: [str(p) for p in e.path]
        )
    except Exception as exc:  # e.g. a 'pattern' that is not a regular expression
        return f"cannot be checked: the step's schema is unusable ({type(exc).__name__}: {exc})"
    if errors:
        error = errors[0]
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return f"does not match the step's schema at {where}: {error.message}"
    return None


def parse_answer(
    text: str, schema: dict[str, Any] | None, from_file: bool
) -> tuple[Any, str | None]:
    """The answer given as ``text`` (``--answer`` or the contents of ``--answer-file``) and
    what is wrong with it. A file, or any answer to a step with a schema, is JSON."""
    if len(text.encode("utf-8")) > MAX_ANSWER_BYTES:
        return None, f"is too large (over {MAX_ANSWER_BYTES} bytes)"
    if not text.strip():
        return None, "is empty"
    if not from_file and schema is None:
        return text, answer_problem(None, text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, (
            f"is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the step "
            "takes a structured answer"
            if schema is not None
            else f"is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        )
    return value, answer_problem(schema, value)
