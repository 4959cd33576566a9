"""A tool plugin for flowengine: ``greet`` says hello, ``shout`` says it louder."""

from __future__ import annotations

from typing import Any

from flowengine.errors import ToolFailure
from flowengine.tools.base import Tool


def greet(name: str, times: int = 1) -> dict[str, Any]:
    """Greet someone by name, ``times`` times."""
    if not name.strip():
        raise ToolFailure("give a name to greet")
    return {"greeting": " ".join([f"Hello, {name}!"] * times)}


def tools() -> list[Tool]:
    """The entry point: a function returning the plugin's tools (a Tool or a list works too)."""
    return [
        Tool(
            name="greet",
            description="Greet someone by name.",
            parameters={
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "description": "who to greet"},
                    "times": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                },
            },
            function=greet,
            timeout=2.0,
            # What it returns: `flowengine tools` shows it, `validate` checks {{ x.greeting }}.
            result={
                "type": "object",
                "required": ["greeting"],
                "additionalProperties": False,
                "properties": {"greeting": {"type": "string", "description": "the greeting"}},
            },
        )
    ]
