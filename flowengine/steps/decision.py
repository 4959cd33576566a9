"""The decision step: choose one of at least two branches, by ``when`` conditions or by the
model scoring each label. Everything a decision means lives here."""

from __future__ import annotations

from typing import Any, ClassVar

from flowengine.agentfile.diagnostics import Reporter, did_you_mean
from flowengine.agentfile.model import Agent, Step
from flowengine.steps.base import (
    MAX_VISITS_HINT,
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


class Decision(StepKind):
    name: ClassVar[str] = "decision"
    summary: ClassVar[str] = "choose a branch"
    drawing: ClassVar[Drawing] = Drawing(
        mermaid=('{"', '"}'),
        mermaid_style="fill:#fff4d6,stroke:#c9a227",
        dot='shape=diamond, style="filled", fillcolor="#fff4d6", color="#c9a227"',
        colour="#c9a227",
        wrap=24,  # a diamond is narrow at the top and bottom
    )
    branches_by_label: ClassVar[bool] = True
    has_error_policy: ClassVar[bool] = True
    field_hints: ClassVar[dict[str, str]] = {
        "question": "the question that picks a branch (a Jinja2 template)",
        "branches": "branch label -> step id; at least two",
        "when": "branch label -> Jinja2 expression; the first true one wins, else 'default' "
        "(or, without one, the LLM picks)",
        "default": "the branch taken when no 'when' expression is true",
        "save_as": SAVE_AS_HINT,
        "max_visits": MAX_VISITS_HINT,
        "retry": RETRY_HINT,
        "on_error": ON_ERROR_HINT,
        "set": SET_HINT,
    }

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["question", "branches"],
            "properties": {
                "type": {"const": "decision"},
                "question": {
                    "$ref": "#/$defs/template",
                    "description": "The question that picks a branch (a Jinja2 template).",
                },
                "branches": {
                    "type": "object",
                    "minProperties": 2,
                    "additionalProperties": {"$ref": "#/$defs/target"},
                    "description": "Branch label -> step id, at least two. Without 'when', "
                    "the LLM picks exactly one of these labels.",
                },
                "when": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "minLength": 1},
                    "description": "Branch label -> Jinja2 expression over the run's "
                    "variables; the first true one wins, else 'default', or without a "
                    "'default' the LLM picks among the branches.",
                },
                "default": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The branch taken when no 'when' expression is true.",
                },
                "examples": {
                    "type": "array",
                    "description": "Worked examples put into the question's prompt "
                    "(few-shot): a situation and the branch label that is right for it.",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["input", "label"],
                        "properties": {
                            "input": {
                                "type": "string",
                                "minLength": 1,
                                "description": "A question or situation, as the task would "
                                "state it.",
                            },
                            "label": {
                                "type": "string",
                                "minLength": 1,
                                "description": "The branch label that is right for it.",
                            },
                        },
                    },
                },
                "calibrate": {
                    "type": "boolean",
                    "description": "Subtract from each label's score its score after the same "
                    "prompt with the task and question replaced by N/A (contextual "
                    "calibration). Default: true when the step has examples, else false.",
                },
                "save_as": {
                    "$ref": "#/$defs/name",
                    "description": "Keep the chosen label in this variable.",
                },
                "set": SET_FIELD,
                "progress": {"$ref": "#/$defs/progress"},
                "max_visits": {"$ref": "#/$defs/max_visits"},
                "retry": {"$ref": "#/$defs/retry"},
                "on_error": {"$ref": "#/$defs/on_error"},
            },
            "dependentRequired": {"default": ["when"]},
        }

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        _check_decision(agent, step, report)

    def footnote(self, attrs: dict[str, Any]) -> list[str]:
        if attrs.get("when") and attrs.get("default") is None:
            return ["when conditions, else the model"]
        return []

    def page_notes(self, attrs: dict[str, Any]) -> list[str]:
        return self.footnote(attrs)

    def continue_label(self, step: Step) -> str | None:
        # A failed decision that goes on takes its default branch; without one it cannot.
        return step.default

    def show(self, label: str | None, result: Any) -> str | None:
        return f"→ {label}"

    def run(self, step: Step, ctx: RunContext) -> Ran:
        label = ctx.decide(step)
        return Ran(label, label, label, label)


def _check_decision(agent: Agent, step: Step, report: Reporter) -> None:
    at = agent.key_at("steps", step.id)
    labels = list(step.branches)
    if len(labels) < 2:
        report.error(
            "few-branches",
            f"decision step '{step.id}' has {len(labels) or 'no'} "
            f"branch{'' if len(labels) == 1 else 'es'}; a decision needs at least two "
            "(for a single way on, use a process step with 'next')",
            agent.key_at("steps", step.id, "branches") if labels else at,
        )
    seen: dict[str, str] = {}
    for label in labels:
        folded = label.strip().casefold()
        if folded in seen:
            report.error(
                "duplicate-branch",
                f"branch labels '{seen[folded]}' and '{label}' of step '{step.id}' differ only "
                "in case or spaces; the model cannot tell them apart",
                agent.key_at("steps", step.id, "branches", label),
            )
        seen.setdefault(folded, label)
    for index, example in enumerate(step.examples if labels else []):
        if example.label not in step.branches:
            report.error(
                "unknown-example-label",
                f"example {index + 1} of step '{step.id}' has label '{example.label}', which is "
                "not in 'branches'"
                + did_you_mean(example.label, labels)
                + "; an example's label must be one of the branch labels",
                agent.value_at("steps", step.id, "examples", index, "label"),
            )
    if not step.when:
        return
    for label in step.when:
        if label not in step.branches:
            report.error(
                "unknown-branch",
                f"'when' of step '{step.id}' names branch '{label}', which is not in 'branches'"
                + did_you_mean(label, labels),
                agent.key_at("steps", step.id, "when", label),
            )
    # Without a default, the model picks among the branches when no condition holds.
    if step.default is not None and step.default not in step.branches:
        report.error(
            "unknown-branch",
            f"default branch '{step.default}' of step '{step.id}' is not in 'branches'"
            + did_you_mean(step.default, labels),
            agent.value_at("steps", step.id, "default"),
        )
    if set(step.when) - set(labels) or step.default not in step.branches:
        return  # a misspelt label is already reported; "never taken" would only repeat it
    for label in labels:
        if label not in step.when and label != step.default:
            report.warning(
                "unused-branch",
                f"branch '{label}' of step '{step.id}' can never be taken: "
                "it has no 'when' condition and is not the default",
                agent.key_at("steps", step.id, "branches", label),
            )


KIND = Decision()
