"""The agent as plain data: what the loader hands to the compiler and the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from flowengine.agentfile.diagnostics import Position
from flowengine.agentfile.yamlsource import Document

Progress = str | int
"""How much of a run's progress a prompt carries: ``none``, ``all``, or the last N entries."""

DEFAULT_PROGRESS: Progress = "none"

DEFAULT_MAX_STEPS = 100
"""Steps a run may take when the agent does not set ``max_steps``."""

BUILTIN_VARIABLES = frozenset({"task", "last", "progress", "visits"})
"""Variables every template can use: the user's request, the previous step's result,
the list of what the run has done so far, and how many times each step has run."""

TOOL_RESULT = "tool_result"
"""In a step that calls a tool and then asks the model, the tool's result, for the step's
own instruction and schema (e.g. an ``enum`` of the names it returned)."""


@dataclass(frozen=True)
class Input:
    name: str
    description: str = ""
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class StateVar:
    """A declared variable of the agent's ``state:``: what values it takes (a JSON Schema,
    or None for any), its value before any step sets it, and how a new value combines
    with the current one (``reducer``: a name in ``flowengine.agentfile.reducers`` or an
    expression over ``current`` and ``value``)."""

    name: str
    schema: dict[str, Any] | None = None
    default: Any = None
    has_default: bool = False
    reducer: str = "replace"


@dataclass(frozen=True)
class Example:
    """A worked example for a decision's prompt: a situation and the label right for it."""

    input: str
    label: str


@dataclass
class Step:
    """One state of the agent. Fields that do not apply to its kind stay empty."""

    id: str
    type: str
    """The YAML `type`: a kind the schema knows (flowengine/steps/: process, decision,
    input, terminal, or a plugin's), or "" when the file gives none of them."""
    instruction: str | None = None
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    save_as: str | None = None
    next: str | None = None
    question: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    when: dict[str, str] = field(default_factory=dict)
    default: str | None = None
    examples: list[Example] = field(default_factory=list)
    calibrate: bool | None = None
    """None: calibrate a decision's label scores when it has examples."""
    output: str | None = None
    output_data: dict[str, Any] | list[Any] | None = None
    """A terminal ``output`` written as a mapping or list of templates (a JSON output)."""
    set: dict[str, Any] = field(default_factory=dict)
    """Variable -> template, evaluated after the step (``result`` bound to its result) and
    applied through the variable's reducer."""
    format: Literal["text", "json"] = "text"
    schema: dict[str, Any] | None = None
    max_visits: int | None = None
    progress: Progress | None = None
    """None: the agent's setting."""
    retry: int = 0
    on_error: str | None = None
    """``fail``, ``continue`` or a step id; None means the default for the step's kind."""
    ask: str | None = None
    """An input step's question for a person (a template)."""
    timeout: float | None = None
    """An input step's seconds to wait before its ``answer_default`` is used."""
    answer_default: Any = None
    has_answer_default: bool = False
    broken: bool = False
    """The step failed the schema; checks that would only repeat that error skip it."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The step's mapping as written: where a plugin kind (``flowengine.steps``) finds the
    fields only it has."""

    @property
    def text(self) -> str:
        """What the step says, for diagrams and logs."""
        if self.tool and self.instruction:
            return f"call {self.tool}, then: {self.instruction}"
        if self.tool:
            return f"call {self.tool}"
        return self.instruction or self.question or self.ask or self.output or ""

    @property
    def transitions(self) -> list[tuple[str, str]]:
        """``(label, target)`` pairs in file order; a process step's label is ``next``, and
        an ``on_error`` step is reached by the label ``on_error``."""
        found = list(self.branches.items()) if self.type == "decision" else []
        if self.type != "decision" and self.next:
            found.append(("next", self.next))
        if self.on_error_target:
            found.append(("on_error", self.on_error_target))
        return found

    @property
    def on_error_target(self) -> str | None:
        """The step ``on_error`` goes to, if it names one."""
        return self.on_error if self.on_error not in (None, "fail", "continue") else None

    @property
    def error_policy(self) -> str:
        """``fail``, ``continue`` or a step id: what a failure left after retries does."""
        if self.on_error is not None:
            return self.on_error
        return "continue" if self.tool else "fail"


@dataclass
class Agent:
    """A loaded agent file. ``source`` maps every key and value back to its position."""

    file: str
    name: str
    steps: dict[str, Step]
    source: Document
    description: str = ""
    tools: list[str] = field(default_factory=list)
    inputs: dict[str, Input] = field(default_factory=dict)
    start: str | None = None
    max_steps: int | None = None
    progress: Progress = DEFAULT_PROGRESS
    state: dict[str, StateVar] = field(default_factory=dict)
    """The declared variables (``state:``), by name."""

    @property
    def start_step(self) -> str | None:
        """The step a run begins with: ``start`` if given, else the first step."""
        if self.start is not None:
            return self.start
        return next(iter(self.steps), None)

    def progress_for(self, step: Step) -> Progress:
        """How much progress ``step``'s prompt carries: its own setting, else the agent's."""
        return step.progress if step.progress is not None else self.progress

    @property
    def step_limit(self) -> int:
        return self.max_steps if self.max_steps is not None else DEFAULT_MAX_STEPS

    def key_at(self, *path: str | int) -> Position:
        return self.source.key_at(path)

    def value_at(self, *path: str | int) -> Position:
        return self.source.value_at(path)
