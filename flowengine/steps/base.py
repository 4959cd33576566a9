"""What a step kind is: the one class every kind (built-in or plugin) fills in.

A kind says, in one place, what its steps mean everywhere flowengine looks at them: its
part of the JSON Schema, its static checks, how its edges are captioned and its node is
drawn, how the language server describes it, and how it runs. Running goes through
:class:`RunContext`, a Protocol the interpreter implements, so this package never imports
the runtime (it sits between the agent file and the graph, see ``tests/test_layers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.model import Agent, Step


@dataclass(frozen=True)
class Drawing:
    """How a kind's nodes look in every drawing format."""

    mermaid: tuple[str, str]
    """Mermaid's brackets around the label, e.g. ``('{"', '"}')`` for a diamond."""
    mermaid_style: str
    """The body of the kind's Mermaid ``classDef``: ``fill:...,stroke:...``."""
    dot: str
    """Graphviz node attributes: shape, style and colours."""
    colour: str
    """The kind's stroke colour, for the web page's timelines."""
    wrap: int = 30
    """Characters per line of the node's text (narrow shapes such as diamonds take fewer)."""


@dataclass(frozen=True)
class Ran:
    """What running a step gave: its result, the value ``save_as`` keeps, the decision
    label (None for other kinds), and the edge label the run leaves by (None: it ends);
    ``assigned``: the step's ``set`` values if the kind evaluated them itself (None: the
    interpreter evaluates them after the step, with ``result`` bound)."""

    result: Any
    saved: Any
    label: str | None
    leave_by: str | None
    assigned: dict[str, Any] | None = None


class RunContext(Protocol):
    """What a kind may ask of the interpreter while one of its steps runs.

    The interpreter implements it (``runtime/interpreter.py``); kinds call it, so the
    dependency points down: the runtime knows the kinds, the kinds know only this."""

    def process(self, step: Step) -> tuple[Any, Any]:
        """Call the step's tool and/or ask the model its instruction: (result, saved)."""
        ...

    def decide(self, step: Step) -> str:
        """The branch label a decision takes (a ``when`` condition, else the model)."""
        ...

    def take_answer(self) -> Any:
        """The answer a person gave for this input step (the run was resumed with it)."""
        ...

    def finish(self, step: Step) -> Any:
        """The run's output from a terminal step (also recorded on the run's outcome)."""
        ...

    def render(self, template: str, step: Step) -> str:
        """A template rendered with the run's variables, in the sandbox."""
        ...

    def evaluate_set(self, step: Step) -> dict[str, Any]:
        """The step's ``set`` values, evaluated now (before they are applied)."""
        ...


# Hints shared by several kinds, so that the schema's "before 'type' is written" list
# names them together ("process, decision, input: ...").
SAVE_AS_HINT = "keep the step's result in this variable"
NEXT_HINT = "the step that runs after this one"
MAX_VISITS_HINT = "loop guard, the most times this step may run"
RETRY_HINT = "how many more times to try a failed tool call or LLM request (0-5)"
ON_ERROR_HINT = "'fail', 'continue' or a step id, for a failure left after retries"
SET_HINT = "variable -> value, set after the step through the variable's reducer"
SET_FIELD: dict[str, Any] = {"$ref": "#/$defs/assignments"}
"""The ``set`` field every built-in kind takes (``$defs/assignments`` in schema.py)."""


class StepKind:
    """One kind of step. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    """The YAML ``type``."""
    summary: ClassVar[str]
    """One line for editors: what a step of this kind does."""
    drawing: ClassVar[Drawing]

    needs_way_out: ClassVar[bool] = False
    """A step of this kind without ``next`` is a dead end (``dead-end``)."""
    finishes: ClassVar[bool] = False
    """A run ends at a step of this kind (the agent needs one: ``no-terminal``)."""
    asks_person: ClassVar[bool] = False
    """A run stops at a step of this kind, waiting, until a person answers."""
    branches_by_label: ClassVar[bool] = False
    """The step leaves by its ``branches`` labels rather than by ``next``."""
    has_error_policy: ClassVar[bool] = False
    """Its failures follow ``retry`` and ``on_error`` (shown by hover and the HTML page)."""

    schema_name: ClassVar[str] = ""
    """The kind's name under the schema's ``$defs`` (default: its ``name``)."""
    field_hints: ClassVar[dict[str, str]] = {}
    """Field -> a short hint, offered by editors before a step's ``type`` is written."""

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a step of this kind (its ``then`` under the ``type`` switch)."""
        raise NotImplementedError

    def check(self, agent: Agent, step: Step, report: Reporter) -> None:
        """Static checks that belong to this kind alone (run for steps the schema passed)."""

    def text(self, step: Step) -> str:
        """What the step says, for drawings and the language server."""
        return step.text

    def node_attributes(self, step: Step) -> dict[str, Any]:
        """Kind-specific attributes of the step's node in the compiled graph."""
        return {"format": None, "structured": False}

    def footnote(self, attrs: dict[str, Any]) -> list[str]:
        """Notes under the node's text in Mermaid and DOT drawings."""
        return []

    def page_notes(self, attrs: dict[str, Any]) -> list[str]:
        """Notes in the 'limits' column of the HTML page's step table."""
        return []

    def hover_facts(self, step: Step) -> list[str]:
        """Markdown list items the language server's hover adds for this kind."""
        return []

    def continue_label(self, step: Step) -> str | None:
        """The edge a failed step leaves by under ``on_error: continue``; None: it cannot."""
        return "next"

    def show(self, label: str | None, result: Any) -> str | None:
        """What ``flowengine run`` prints after the step; None: its result, shortened."""
        return None

    def run(self, step: Step, ctx: RunContext) -> Ran:
        """Run the step once; the interpreter retries, records and moves on."""
        raise NotImplementedError
