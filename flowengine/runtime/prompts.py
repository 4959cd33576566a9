"""The prompts a run sends: agent description, task, progress so far, and the step's ask."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flowengine.kernel.backends.base import Message

MAX_ENTRY_CHARS = 400
MAX_DATA_CHARS = 1500


def as_text(value: Any, limit: int) -> str:
    """A result as prompt text: strings as they are, data as compact JSON, both capped."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_lines(value: Any, limit: int) -> str:
    """Data as short lines a small model reads more easily than JSON: ``key: value``, and
    one ``- a: 1, b: 2`` line per item of a list of objects. Capped at ``limit``."""
    if not isinstance(value, dict):
        return as_text(value, limit)
    lines = []
    for key, item in value.items():
        if isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            lines.append(f"{key}:")
            lines += [
                "- " + ", ".join(f"{k}: {as_text(v, 80)}" for k, v in entry.items())
                for entry in item
            ]
        else:
            lines.append(f"{key}: {as_text(item, 200)}")
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LINES: dict[tuple[str, str], str] = {}
"""Progress lines of text results already rendered: every prompt of a run renders its
progress again, and the entries before the newest are the same each time."""
LINES_KEPT = 8192


def progress_line(step: str, result: Any) -> str:
    if not isinstance(result, str):
        return f"- {step}: {as_text(result, MAX_ENTRY_CHARS)}"
    line = _LINES.get((step, result))
    if line is None:
        if len(_LINES) >= LINES_KEPT:
            _LINES.clear()
        line = _LINES[step, result] = f"- {step}: {as_text(result, MAX_ENTRY_CHARS)}"
    return line


def progress_lines(progress: Sequence[dict[str, Any]]) -> list[str]:
    return [progress_line(entry["step"], entry["result"]) for entry in progress]


def messages(
    description: str,
    task: str | None,
    progress: Sequence[dict[str, Any]],
    ask: str,
    dropped: int = 0,
    data: tuple[str, Any] | None = None,
) -> list[Message]:
    """System and user messages, laid out so that a run's next prompt extends this one as
    far as possible (its KV cache then serves the shared beginning): the description, the
    task, the progress entries as they accrue, then what is new in this step: the tool's
    result and the ask. ``task`` None leaves the task out (the step's own templates carry
    what it needs); the ``dropped`` oldest progress entries are left out."""
    parts = [f"Task: {task.strip()}"] if task is not None else []
    kept = progress_lines(progress[dropped:])
    if kept:
        note = f" ({dropped} earlier entries left out to fit the context window)" if dropped else ""
        parts.append(f"Progress so far{note}:\n" + "\n".join(kept))
    if data is not None:
        name, value = data
        parts.append(f"Result of {name}:\n{as_lines(value, MAX_DATA_CHARS)}")
    parts.append(ask.strip())
    system = description.strip() or "You are a helpful assistant."
    return [Message("system", system), Message("user", "\n\n".join(parts))]


CONTENT_FREE = "N/A"
"""What stands in for a decision's content (the task and the question; its examples stay)
in the content-free prompt its label scores are calibrated against."""


def decision_ask(
    question: str, labels: Sequence[str], examples: Sequence[tuple[str, str]] = ()
) -> str:
    """The ask of a decision: worked examples (situation, label) if any, the question,
    and the labels to answer with."""
    choices = " or ".join(labels)
    shown = "".join(f"Example: {text.strip()}\nAnswer: {label}\n\n" for text, label in examples)
    return f"{shown}{question.strip()}\nAnswer with one word: {choices}."


def content_free_messages(
    description: str,
    with_task: bool,
    labels: Sequence[str],
    examples: Sequence[tuple[str, str]] = (),
) -> list[Message]:
    """A decision's prompt with its content replaced by "N/A": the same description,
    examples, labels and layout, no progress and no data. The labels' scores after it are
    the model's preference among them whatever the question (see ``Decoder._choose`` in
    ``kernel/decoding.py``)."""
    ask = decision_ask(CONTENT_FREE, labels, examples)
    return messages(description, CONTENT_FREE if with_task else None, [], ask)


def json_ask(instruction: str, schema: dict[str, Any] | None) -> str:
    """The instruction, asking for JSON. The schema itself is not shown: a small model
    copies it into its answer; the grammar (or the check afterwards) holds the shape."""
    ask = instruction.strip() + "\nReply with JSON only."
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict) and properties:
        ask += " Its fields: " + ", ".join(str(name) for name in properties) + "."
    return ask


def progress_to_show(
    progress: Sequence[dict[str, Any]], setting: str | int
) -> Sequence[dict[str, Any]]:
    """The progress entries a prompt carries: none, all, or the last N."""
    if setting == "all":
        return progress
    if isinstance(setting, int) and setting > 0:
        return progress[-setting:]
    return []
