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


def progress_lines(progress: Sequence[dict[str, Any]]) -> list[str]:
    return [f"- {entry['step']}: {as_text(entry['result'], MAX_ENTRY_CHARS)}" for entry in progress]


def messages(
    description: str,
    task: str,
    progress: Sequence[dict[str, Any]],
    ask: str,
    dropped: int = 0,
    data: tuple[str, Any] | None = None,
) -> list[Message]:
    """System and user messages; ``dropped`` oldest progress entries are left out."""
    parts = [f"Task: {task.strip()}"]
    kept = progress_lines(progress[dropped:])
    if kept:
        note = f" ({dropped} earlier entries left out to fit the context window)" if dropped else ""
        parts.append(f"Progress so far{note}:\n" + "\n".join(kept))
    if data is not None:
        name, value = data
        parts.append(f"Result of {name}:\n{as_text(value, MAX_DATA_CHARS)}")
    parts.append(ask.strip())
    system = description.strip() or "You are a helpful assistant."
    return [Message("system", system), Message("user", "\n\n".join(parts))]


def decision_ask(question: str, labels: Sequence[str]) -> str:
    choices = " or ".join(labels)
    return f"{question.strip()}\nAnswer with one word: {choices}."


def json_ask(instruction: str, schema: dict[str, Any] | None) -> str:
    ask = instruction.strip() + "\nReply with JSON only."
    if schema is not None:
        ask += " It must match this JSON Schema:\n" + json.dumps(schema, separators=(",", ":"))
    return ask
