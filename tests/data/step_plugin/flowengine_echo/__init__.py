"""An ``echo`` step kind: the step's result is its ``say`` template, rendered; no model."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.steps.base import Drawing, Ran, RunContext, StepKind


class Echo(StepKind):
    name: ClassVar[str] = "echo"
    summary: ClassVar[str] = "say a template's text, without the model"
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('{{"', '"}}'),  # a hexagon
        mermaid_style="fill:#e6f4ea,stroke:#12b5cb",
        dot='shape=hexagon, style="filled", fillcolor="#e6f4ea", color="#12b5cb"',
        colour="#12b5cb",
    )
    needs_way_out: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {"say": "the text to say (a Jinja2 template)"}

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["say"],
            "properties": {
                "type": {"const": "echo"},
                "say": {"$ref": "#/$defs/template", "description": "The text to say."},
                "save_as": {"$ref": "#/$defs/name"},
                "next": {"$ref": "#/$defs/target"},
                "max_visits": {"$ref": "#/$defs/max_visits"},
            },
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        if not str(step.fields.get("say", "x")).strip():
            report.error(
                "invalid-value",
                f"echo step '{step.id}' says nothing; give 'say' some text",
                agent.value_at("steps", step.id, "say"),
            )

    def text(self, step: Step) -> str:
        return f"say: {step.fields.get('say', '')}"

    def hover_facts(self, step: Step) -> list[str]:
        return ["says its text; no model is asked"]

    def run(self, step: Step, ctx: RunContext) -> Ran:
        said = ctx.render(str(step.fields.get("say", "")), step)
        return Ran(said, said, None, "next")
