"""The input step: ask a person, and wait (the run stops, status ``waiting``) until
``flowengine resume`` brings the answer. Everything an input step means lives here."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.answers import answer_problem
from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step
from flowengine.agentfile.schema_validation import schema_is_valid
from flowengine.steps.base import (
    MAX_VISITS_HINT,
    NEXT_HINT,
    SAVE_AS_HINT,
    SET_FIELD,
    SET_HINT,
    Drawing,
    Ran,
    RunContext,
    StepKind,
)


class Input(StepKind):
    name: ClassVar[str] = "input"
    schema_name: ClassVar[str] = "input_step"  # "input" names an agent's inputs there
    summary: ClassVar[str] = "ask a person and wait for the answer"
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('[/"', '"/]'),
        mermaid_style="fill:#fce8f3,stroke:#a142a4",
        dot='shape=parallelogram, style="filled", fillcolor="#fce8f3", color="#a142a4"',
        colour="#a142a4",
        wrap=26,  # a parallelogram's slanted sides take room
    )
    needs_way_out: ClassVar[bool] = True
    asks_person: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {
        "ask": "the question for a person (a Jinja2 template); the run waits for the answer",
        "timeout": "seconds to wait; a run resumed after that without an answer takes 'default'",
        "default": "the answer used once 'timeout' has passed",
        "schema": "a JSON Schema the answer (JSON) must match",
        "save_as": SAVE_AS_HINT,
        "next": NEXT_HINT,
        "max_visits": MAX_VISITS_HINT,
        "set": SET_HINT,
    }

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["ask"],
            "properties": {
                "type": {"const": "input"},
                "ask": {
                    "$ref": "#/$defs/template",
                    "description": "The question for a person (a Jinja2 template). The run "
                    "stops with status 'waiting' until `flowengine resume RUN_ID --answer TEXT` "
                    "gives the answer.",
                },
                "schema": {
                    "type": "object",
                    "description": "A JSON Schema for a structured answer: the answer must "
                    "then be JSON matching it (`--answer-file FILE`).",
                },
                "save_as": {
                    "$ref": "#/$defs/name",
                    "description": "Keep the answer in this variable for later steps.",
                },
                "next": {
                    "$ref": "#/$defs/target",
                    "description": "The step that runs after the answer.",
                },
                "timeout": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Seconds to wait for the answer; a run resumed after that "
                    "without an answer takes 'default'.",
                },
                "default": {
                    "description": "The answer used once 'timeout' has passed (text, or JSON "
                    "matching 'schema')."
                },
                "set": SET_FIELD,
                "max_visits": {"$ref": "#/$defs/max_visits"},
            },
            "dependentRequired": {"default": ["timeout"], "timeout": ["default"]},
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        """The answer schema is valid JSON Schema, and the default answer fits it."""
        if step.schema is not None:
            problem = schema_is_valid(step.schema)
            if problem:
                report.error(
                    "invalid-answer-schema",
                    f"the answer schema of input step '{step.id}' is not a valid JSON Schema: "
                    f"{problem}",
                    agent.value_at("steps", step.id, "schema"),
                )
                return
        if not step.has_answer_default:
            return
        problem = answer_problem(step.schema, step.answer_default)
        if problem:
            report.error(
                "invalid-default-answer",
                f"the default answer of input step '{step.id}' {problem}; change 'default'",
                agent.value_at("steps", step.id, "default"),
            )

    def node_attributes(self, step: Step) -> dict[str, Any]:
        return {"format": None, "structured": step.schema is not None}

    def footnote(self, attrs: dict[str, Any]) -> list[str]:
        notes = ["asks a person" + (" (JSON)" if attrs.get("structured") else "")]
        if attrs.get("timeout"):
            notes.append(f"timeout {attrs['timeout']:g} s")
        return notes

    def page_notes(self, attrs: dict[str, Any]) -> list[str]:
        notes = ["a person answers" + (" (JSON)" if attrs.get("structured") else "")]
        if attrs.get("timeout"):
            notes.append(f"default answer after {attrs['timeout']:g} s")
        return notes

    def hover_facts(self, step: Step) -> list[str]:
        facts = ["a person answers; the run waits (`flowengine resume RUN_ID --answer`)"]
        if step.schema is not None:
            facts.append("the answer is JSON matching the step's schema")
        if step.timeout is not None:
            facts.append(f"after {step.timeout:g} s a resume takes the default answer")
        return facts

    def run(self, step: Step, ctx: RunContext) -> Ran:
        answer = ctx.take_answer()
        return Ran(answer, answer, None, "next")


KIND = Input()
