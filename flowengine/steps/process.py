"""The process step: ask the LLM an instruction, call a tool, or call a tool and have the
LLM use its result. Everything a process step means lives here."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.steps.base import (
    MAX_VISITS_HINT,
    NEXT_HINT,
    ON_ERROR_HINT,
    RETRY_HINT,
    SAVE_AS_HINT,
    SET_FIELD,
    SET_HINT,
    Drawing,
    Ran,
    RunContext,
    StepKind,
)
from flowengine.steps.output_schema import check_output_schema

_NEEDS = "a process step needs 'instruction' (ask the LLM), 'tool' (call a tool), or both"


class Process(StepKind):
    name: ClassVar[str] = "process"
    summary: ClassVar[str] = (
        "ask the LLM, call a tool, or call a tool and have the LLM use its result"
    )
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('["', '"]'),
        mermaid_style="fill:#e8f0fe,stroke:#4a6fa5",
        dot='shape=box, style="filled", fillcolor="#e8f0fe", color="#4a6fa5"',
        colour="#4a6fa5",
        wrap=30,
    )
    needs_way_out: ClassVar[bool] = True
    has_error_policy: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {
        "instruction": "what to ask the LLM (a Jinja2 template)",
        "tool": "a tool to call; it must be listed in the agent's 'tools'",
        "args": "the tool's arguments; string values are Jinja2 templates",
        "save_as": SAVE_AS_HINT,
        "next": NEXT_HINT,
        "max_visits": MAX_VISITS_HINT,
        "retry": RETRY_HINT,
        "on_error": ON_ERROR_HINT,
        "set": SET_HINT,
    }

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"const": "process"},
                "instruction": {
                    "$ref": "#/$defs/template",
                    "description": "What to ask the LLM to do (a Jinja2 template).",
                },
                "tool": {
                    "$ref": "#/$defs/name",
                    "description": "A tool to call; it must be listed in the agent's 'tools'. "
                    "With 'instruction' as well, the LLM then follows the instruction with the "
                    "tool's result in its prompt; 'save_as' keeps the tool's result.",
                },
                "args": {
                    "type": "object",
                    "description": "The tool's arguments, checked against its JSON Schema "
                    "(`flowengine tools` shows them); string values are Jinja2 templates.",
                },
                "save_as": {
                    "$ref": "#/$defs/name",
                    "description": "Keep the step's result in this variable for later steps.",
                },
                "next": {
                    "$ref": "#/$defs/target",
                    "description": "The step that runs after this one.",
                },
                "format": {
                    "enum": ["text", "json"],
                    "description": "text (default) or json: the LLM's reply is JSON, "
                    "constrained to 'schema' while it is generated, and saved as data.",
                },
                "schema": {
                    "type": "object",
                    "description": "A JSON Schema the JSON reply must match (needs format: json).",
                },
                "set": SET_FIELD,
                "progress": {"$ref": "#/$defs/progress"},
                "max_visits": {"$ref": "#/$defs/max_visits"},
                "retry": {"$ref": "#/$defs/retry"},
                "on_error": {"$ref": "#/$defs/on_error"},
            },
            # One message on each branch: yaml-language-server shows it as it is.
            "anyOf": [
                {"required": ["instruction"], "errorMessage": _NEEDS},
                {"required": ["tool"], "errorMessage": _NEEDS},
            ],
            "dependentRequired": {"args": ["tool"], "schema": ["format"]},
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        check_output_schema(agent, step, report)

    def run(self, step: Step, ctx: RunContext) -> Ran:
        result, saved = ctx.process(step)
        return Ran(result, saved, None, "next")


KIND = Process()
