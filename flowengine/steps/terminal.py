"""The terminal step: the run's end, its output written by the LLM or by a template.
Everything a terminal step means lives here."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.steps.base import SET_FIELD, SET_HINT, Drawing, Ran, RunContext, StepKind
from flowengine.steps.output_schema import check_output_schema

_NEEDS = "a terminal step needs 'instruction' (the LLM writes the output) or 'output' (a template)"


class Terminal(StepKind):
    name: ClassVar[str] = "terminal"
    summary: ClassVar[str] = "finish with the output"
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('(["', '"])'),
        mermaid_style="fill:#e3f4e1,stroke:#3c8d40",
        dot='shape=box, style="rounded,filled,bold", fillcolor="#e3f4e1", color="#3c8d40"',
        colour="#3c8d40",
        wrap=30,
    )
    finishes: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {
        "instruction": "ask the LLM to write the final output",
        "output": "the final output itself (a Jinja2 template), no LLM call",
        "format": "text (default) or json",
        "schema": "a JSON Schema the JSON output must match (needs format: json)",
        "set": SET_HINT,
    }

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"const": "terminal"},
                "instruction": {
                    "$ref": "#/$defs/template",
                    "description": "Ask the LLM to write the final output (a Jinja2 template).",
                },
                "output": {
                    "anyOf": [
                        {"$ref": "#/$defs/template"},
                        {"type": "object"},
                        {"type": "array"},
                    ],
                    "description": "The final output itself, no LLM call: a Jinja2 template, "
                    "or a mapping or list of templates (a JSON output; a lone "
                    "'{{ expression }}' keeps its type).",
                },
                "format": {"enum": ["text", "json"], "description": "text (default) or json."},
                "schema": {
                    "type": "object",
                    "description": "A JSON Schema the JSON output must match (needs format: "
                    "json); the output is constrained to it while it is generated.",
                },
                "set": SET_FIELD,
                "progress": {"$ref": "#/$defs/progress"},
            },
            "anyOf": [
                {"required": ["instruction"], "errorMessage": _NEEDS},
                {"required": ["output"], "errorMessage": _NEEDS},
            ],
            # A mapping or list output is JSON already; other outputs need 'format: json'.
            "dependentSchemas": {
                "instruction": {
                    "properties": {"output": False},
                    "errorMessage": "a terminal step takes 'instruction' or 'output', not both",
                },
                "schema": {
                    "anyOf": [
                        {"required": ["format"]},
                        {
                            "required": ["output"],
                            "properties": {"output": {"type": ["object", "array"]}},
                        },
                    ],
                    "errorMessage": "'schema' needs 'format: json' (or an 'output' that is a "
                    "mapping or a list)",
                },
            },
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        check_output_schema(agent, step, report)

    def node_attributes(self, step: Step) -> dict[str, Any]:
        return {"format": step.format, "structured": False}

    def hover_facts(self, step: Step) -> list[str]:
        return [f"output format: {step.format}"]

    def show(self, label: str | None, result: Any) -> str | None:
        return "done"

    def run(self, step: Step, ctx: RunContext) -> Ran:
        result = ctx.finish(step)
        return Ran(result, result, None, None)


KIND = Terminal()
