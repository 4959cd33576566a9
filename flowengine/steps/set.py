"""The set step: no model, no tool; it sets variables (``set:``, through their reducers)
and moves on with ``next``, like Step Functions' Pass state. Everything it means lives
here."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.steps.base import (
    MAX_VISITS_HINT,
    NEXT_HINT,
    SET_FIELD,
    Drawing,
    Ran,
    RunContext,
    StepKind,
)


class Set(StepKind):
    name: ClassVar[str] = "set"
    summary: ClassVar[str] = "set variables (no model, no tool) and go on"
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('[/"', '"\\]'),
        mermaid_style="fill:#f3e8fd,stroke:#7b4fa5",
        dot='shape=trapezium, style="filled", fillcolor="#f3e8fd", color="#7b4fa5"',
        colour="#7b4fa5",
        wrap=26,
    )
    needs_way_out: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {
        "set": "variable -> value to set (a template; a lone {{ expression }} keeps its type)",
        "next": NEXT_HINT,
        "max_visits": MAX_VISITS_HINT,
    }

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["set", "next"],
            "properties": {
                "type": {"const": "set"},
                "set": {
                    **SET_FIELD,
                    "minProperties": 1,
                    "description": "Variable -> value: what this step sets, through each "
                    "variable's reducer. Values are templates; a lone '{{ expression }}' "
                    "keeps its type; mappings and lists are built item by item.",
                },
                "next": {
                    "$ref": "#/$defs/target",
                    "description": "The step that runs after this one.",
                },
                "max_visits": {"$ref": "#/$defs/max_visits"},
            },
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        if not step.set:
            report.error(
                "missing-field",
                f"set step '{step.id}' sets nothing; give 'set:' a variable and its value",
                agent.value_at("steps", step.id, "set"),
            )

    def text(self, step: Step) -> str:
        # What it sets is noted under it in every drawing ("sets a, b"), as for any step.
        return "no model, no tool"

    def hover_facts(self, step: Step) -> list[str]:
        return ["no model, no tool: sets its variables and goes on"]

    def show(self, label: str | None, result: Any) -> str | None:
        return None

    def run(self, step: Step, ctx: RunContext) -> Ran:
        values = ctx.evaluate_set(step)
        return Ran(values, values, None, "next", assigned=values)


KIND = Set()
