"""Build the agent JSON Schema: the agent-level part written here, each step kind's part
from its module. ``python -m flowengine.steps.schema`` prints it; ``make schema`` writes
``schemas/agent.schema.json`` (``flowengine/agentfile/agent.schema.json`` links to it), and
``tests/test_schema_file.py`` keeps the committed file equal to what this builds."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable
from typing import Any

from flowengine.steps.base import StepKind
from flowengine.steps.registry import builtin_kinds, kinds

_AGENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:flowengine:schema:agent:1",
    "title": "flowengine agent",
    "description": "An LLM agent as a state machine of process, decision, input and terminal "
    "steps. Reference: README.md, section 'The agent format'.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "steps"],
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "The agent's name, shown in logs and diagrams.",
        },
        "description": {
            "type": "string",
            "description": "The system prompt: who the agent is and how it should work.",
        },
        "tools": {
            "type": "array",
            "uniqueItems": True,
            "items": {"$ref": "#/$defs/name"},
            "description": "The tools this agent may call: built-in, or from "
            "installed plugins (`flowengine tools` lists them). "
            "A process step may only use a tool listed here.",
        },
        "inputs": {
            "type": "object",
            "propertyNames": {"$ref": "#/$defs/name"},
            "additionalProperties": {"$ref": "#/$defs/input"},
            "description": "Named inputs besides 'task' (the user's request, "
            "always present), usable in templates.",
        },
        "start": {
            "type": "string",
            "minLength": 1,
            "description": "The id of the first step. Default: the first step listed.",
        },
        "max_steps": {
            "type": "integer",
            "minimum": 1,
            "description": "Run-level loop guard: a run stops after this many steps. Default: 100.",
        },
        "progress": {
            "$ref": "#/$defs/progress",
            "description": "How much of the run's progress every LLM prompt "
            "carries, unless a step says otherwise. Default: "
            "none.",
        },
        "state": {
            "type": "object",
            "propertyNames": {"$ref": "#/$defs/name"},
            "additionalProperties": {"$ref": "#/$defs/state_variable"},
            "description": "Declared variables the run carries from step to step: each with "
            "a JSON Schema its values must match, a default, and a reducer saying how a new "
            "value (from save_as or set) combines with the current one.",
        },
        "steps": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"$ref": "#/$defs/step"},
            "description": "The steps, keyed by step id, in order. Step ids may contain spaces.",
        },
    },
}

_SHARED: dict[str, Any] = {
    "name": {
        "type": "string",
        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
        "patternErrorMessage": "not a valid name: use letters, digits and underscores, not "
        "starting with a digit (templates refer to it as {{ name "
        "}})",
    },
    "template": {
        "type": "string",
        "description": "A Jinja2 template, rendered in a sandbox with the run's variables.",
    },
    "target": {"type": "string", "minLength": 1, "description": "The id of another step."},
    "max_visits": {
        "type": "integer",
        "minimum": 1,
        "description": "Loop guard: the run stops if this step would run more than "
        "this many times.",
    },
    "retry": {
        "type": "integer",
        "minimum": 0,
        "maximum": 5,
        "description": "How many more times to try this step's tool call or LLM request "
        "when it fails (default 0).",
    },
    "on_error": {
        "type": "string",
        "minLength": 1,
        "description": "When the step's tool call or LLM request still fails after its "
        "retries: 'fail' ends the run (status failed); 'continue' goes "
        "on, with the error as the step's result (a decision takes its "
        "'default' branch); a step id goes to that step. Default: "
        "'continue' for a step that calls a tool, else 'fail'.",
    },
    "progress": {
        "anyOf": [
            {
                "enum": ["none", "all"],
                "errorMessage": "use none, all, or the number of latest entries to "
                "carry (0 or more)",
            },
            {
                "type": "integer",
                "minimum": 0,
                "errorMessage": "use none, all, or the number of latest entries to "
                "carry (0 or more)",
            },
        ],
        "description": "How much of what the run has done so far a prompt carries: none "
        "(only what the step's own templates name, and its tool's "
        "result), all, or the last N entries. Small models follow a "
        "short prompt better; larger ones can use all.",
    },
    "state_variable": {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            "schema": {
                "type": "object",
                "description": "A JSON Schema every value of the variable must match "
                "(checked whenever it is set).",
            },
            "default": {"description": "The value before any step sets it."},
            "reducer": {
                "type": "string",
                "minLength": 1,
                "description": "How a new value combines with the current one: replace "
                "(default), append, extend, merge (mappings), add (numbers), max, min, or a "
                "Jinja2 expression over 'current' and 'value'.",
                "examples": ["replace", "append", "extend", "merge", "add", "max", "min"],
            },
        },
    },
    "assignments": {
        "type": "object",
        "propertyNames": {"$ref": "#/$defs/name"},
        "description": "Variable -> value, set after the step through the variable's "
        "reducer. Values are templates ('result' is the step's result); a lone "
        "'{{ expression }}' keeps its type; mappings and lists are built item by item.",
    },
    "input": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "description": {
                "type": "string",
                "description": "What the input is, for users and the prompt.",
            },
            "default": {"description": "Used when the run does not give this input."},
        },
    },
}

_HINT_ORDER = (
    "instruction", "tool", "args", "save_as", "next", "ask", "timeout", "question",
    "branches", "when", "default", "output", "format", "schema", "set", "max_visits",
    "retry", "on_error",
)  # fmt: skip
"""The order editors list a new step's fields in, before its ``type`` is written; a
field only a plugin kind has comes after these."""


def agent_schema(kinds: Iterable[StepKind] | None = None) -> dict[str, Any]:
    """The whole agent schema, with a ``$defs`` entry and a ``type`` switch per kind
    (default: flowengine's own kinds, as the committed file holds them)."""
    listed = list(builtin_kinds() if kinds is None else kinds)
    schema = json.loads(json.dumps(_AGENT))  # a fresh copy: callers may change it
    schema["$defs"] = {**json.loads(json.dumps(_SHARED)), "step": _step(listed)}
    for kind in listed:
        schema["$defs"][_def_name(kind)] = kind.schema()
    return schema


def _def_name(kind: StepKind) -> str:
    return kind.schema_name or kind.name


def _step(kinds: list[StepKind]) -> dict[str, Any]:
    """A step: its ``type`` names a kind; each kind's rules apply once it is written (an
    ``if``/``then`` per kind, which yaml-language-server follows for completion and
    messages), and before that editors offer every field any kind has."""
    return {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "enum": [kind.name for kind in kinds],
                "description": "; ".join(f"{kind.name}: {kind.summary}" for kind in kinds) + ".",
            }
        },
        "if": {"required": ["type"]},
        "else": {
            "$comment": "Before 'type' is written, editors offer every field a step can "
            "have; the kind's own rules apply once it is set.",
            "properties": {field: {"description": hint} for field, hint in _hints(kinds).items()},
        },
        "allOf": [
            {
                "if": {"required": ["type"], "properties": {"type": {"const": kind.name}}},
                "then": {"$ref": f"#/$defs/{_def_name(kind)}"},
            }
            for kind in kinds
        ],
    }


def _hints(kinds: list[StepKind]) -> dict[str, str]:
    """Field -> "process, decision: what it is; input: ...": kinds that say the same
    about a field are named together."""
    fields = [f for kind in kinds for f in kind.field_hints]
    ordered = [f for f in _HINT_ORDER if f in fields]
    ordered += [f for f in dict.fromkeys(fields) if f not in _HINT_ORDER]
    hints: dict[str, str] = {}
    for field in ordered:
        said: dict[str, list[str]] = {}
        for kind in kinds:
            if field in kind.field_hints:
                said.setdefault(kind.field_hints[field], []).append(kind.name)
        hints[field] = "; ".join(f"{', '.join(names)}: {hint}" for hint, names in said.items())
        hints[field] += "."
    return hints


@functools.cache
def installed_schema() -> dict[str, Any] | None:
    """The agent schema with the installed plugin kinds; None when there are none, so that
    the shipped file (the same schema) is used as it is."""
    every = kinds()
    if list(every) == [kind.name for kind in builtin_kinds()]:
        return None
    return agent_schema(every.values())


def schema_text(kinds: Iterable[StepKind] | None = None) -> str:
    """The schema as the committed file holds it."""
    return json.dumps(agent_schema(kinds), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
