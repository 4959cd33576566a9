"""Load an agent file: read, parse, check against the schema, build the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from flowengine.agentfile.diagnostics import Diagnostic, Reporter
from flowengine.agentfile.model import (
    DEFAULT_PROGRESS,
    Agent,
    Example,
    Input,
    Progress,
    StateVar,
    Step,
)
from flowengine.agentfile.schema_validation import check_schema, step_types
from flowengine.agentfile.yamlsource import Document, Duplicate, YamlLoadError, load, read_text


@dataclass
class Loaded:
    """An agent (None when the file could not be understood at all) and what was found."""

    agent: Agent | None
    diagnostics: list[Diagnostic]


def load_agent(
    path: str, display_name: str | None = None, schema: dict[str, Any] | None = None
) -> Loaded:
    """Load the agent file at ``path``; diagnostics name it ``display_name`` (default: path).
    ``schema``: the agent schema with installed plugin step kinds (default: the shipped
    one, flowengine's own kinds)."""
    report = Reporter(display_name or path)
    try:
        text = read_text(path)
    except YamlLoadError as exc:
        report.error(exc.code, exc.message, exc.position)
        return Loaded(None, report.diagnostics)
    return Loaded(parse_agent(text, report, schema), report.diagnostics)


def parse_agent(text: str, report: Reporter, schema: dict[str, Any] | None = None) -> Agent | None:
    """Build an agent from YAML text, reporting into ``report`` (``schema`` as above)."""
    try:
        document = load(text)
    except YamlLoadError as exc:
        report.error(exc.code, exc.message, exc.position)
        return None
    _report_duplicates(document.duplicates, report)
    if not isinstance(document.data, dict):
        what = "nothing but comments" if document.data is None else "no mapping"
        report.error(
            "not-an-agent",
            f"an agent file is a mapping with 'name' and 'steps', but this file holds {what}",
            document.value_at(()),
        )
        return None
    broken = check_schema(document, report, schema)
    return _build(document, report.file, broken, step_types(schema))


def _report_duplicates(duplicates: list[Duplicate], report: Reporter) -> None:
    for dup in duplicates:
        first = f"first at line {dup.first.line}"
        if dup.path == ("steps",):
            report.error(
                "duplicate-step",
                f"step id '{dup.key}' is used twice ({first}); rename one of them",
                dup.again,
            )
        elif len(dup.path) == 3 and dup.path[0] == "steps" and dup.path[2] == "branches":
            report.error(
                "duplicate-branch",
                f"branch label '{dup.key}' appears twice in step '{dup.path[1]}' ({first}); "
                "each label must be different",
                dup.again,
            )
        else:
            report.error(
                "duplicate-key",
                f"key '{dup.key}' is written twice in the same mapping ({first}); "
                "keep one, the later one wins",
                dup.again,
            )


def _build(document: Document, file: str, broken: set[str], types: Sequence[str]) -> Agent:
    """Take what is well-typed from the document; the schema has reported the rest."""
    data: dict[str, Any] = document.data
    raw_steps = data.get("steps")
    steps = {
        str(sid): _step(str(sid), raw, str(sid) in broken, types)
        for sid, raw in (raw_steps.items() if isinstance(raw_steps, dict) else [])
    }
    raw_inputs = data.get("inputs")
    inputs = {
        name: Input(
            name,
            _text(spec.get("description")) or "",
            spec.get("default"),
            "default" in spec,
        )
        for name, spec in (raw_inputs.items() if isinstance(raw_inputs, dict) else [])
        if isinstance(spec, dict)
    }
    raw_state = data.get("state")
    state = {
        str(name): _state_var(str(name), spec)
        for name, spec in (raw_state.items() if isinstance(raw_state, dict) else [])
        if isinstance(spec, dict) or spec is None
    }
    tools = data.get("tools")
    max_steps = data.get("max_steps")
    return Agent(
        file=file,
        name=_text(data.get("name")) or "",
        steps=steps,
        source=document,
        description=_text(data.get("description")) or "",
        tools=[t for t in tools if isinstance(t, str)] if isinstance(tools, list) else [],
        inputs=inputs,
        start=_text(data.get("start")),
        max_steps=max_steps if _is_int(max_steps) and max_steps >= 1 else None,
        progress=_progress(data.get("progress")) or DEFAULT_PROGRESS,
        state=state,
    )


def _state_var(name: str, spec: dict[str, Any] | None) -> StateVar:
    spec = spec or {}
    schema = spec.get("schema")
    reducer = spec.get("reducer")
    return StateVar(
        name,
        schema if isinstance(schema, dict) else None,
        spec.get("default"),
        "default" in spec,
        reducer.strip() if isinstance(reducer, str) and reducer.strip() else "replace",
    )


def _step(sid: str, raw: Any, broken: bool, types: Sequence[str]) -> Step:
    if not isinstance(raw, dict):
        return Step(sid, "", broken=True)
    kind = raw.get("type")
    fmt = raw.get("format")
    output = raw.get("output")
    structured = isinstance(output, (dict, list))
    raw_set = raw.get("set")
    max_visits = raw.get("max_visits")
    return Step(
        id=sid,
        type=kind if isinstance(kind, str) and kind in types else "",
        instruction=_text(raw.get("instruction")),
        tool=_text(raw.get("tool")),
        args=raw["args"] if isinstance(raw.get("args"), dict) else {},
        save_as=_text(raw.get("save_as")),
        next=_text(raw.get("next")),
        question=_text(raw.get("question")),
        branches=_text_map(raw.get("branches")),
        when=_text_map(raw.get("when")),
        default=_text(raw.get("default")) if kind != "input" else None,
        examples=_examples(raw.get("examples")),
        calibrate=raw["calibrate"] if isinstance(raw.get("calibrate"), bool) else None,
        output=_text(output),
        output_data=output if structured else None,
        set={str(k): v for k, v in raw_set.items()} if isinstance(raw_set, dict) else {},
        # An input step with a schema takes a JSON answer, a mapping or list output is JSON.
        format="json"
        if fmt == "json" or (kind == "input" and "schema" in raw) or structured
        else "text",
        schema=raw["schema"] if isinstance(raw.get("schema"), dict) else None,
        max_visits=max_visits if _is_int(max_visits) and max_visits >= 1 else None,
        progress=_progress(raw.get("progress")),
        retry=raw["retry"] if _is_int(raw.get("retry")) and 0 <= raw["retry"] <= 5 else 0,
        on_error=_text(raw.get("on_error")),
        ask=_text(raw.get("ask")),
        timeout=_timeout(raw.get("timeout")),
        answer_default=raw.get("default") if kind == "input" else None,
        has_answer_default=kind == "input" and "default" in raw,
        broken=broken,
        fields=dict(raw),
    )


def _timeout(value: Any) -> float | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and value > 0 else None


def _examples(value: Any) -> list[Example]:
    if not isinstance(value, list):
        return []
    return [
        Example(item["input"], item["label"])
        for item in value
        if isinstance(item, dict)
        and isinstance(item.get("input"), str)
        and isinstance(item.get("label"), str)
    ]


def _progress(value: Any) -> Progress | None:
    if value in ("none", "all") or (_is_int(value) and value >= 0):
        return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str) and v}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
