"""JSON Schema validation of agent documents, with errors translated into plain words."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, ValidationError

from flowengine.agentfile.diagnostics import Position, Reporter, closest, did_you_mean
from flowengine.agentfile.yamlsource import Document, Path

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value lines)",
    "array": "a list",
    "null": "empty",
}


def schema_file() -> str:
    """Where the agent JSON Schema lives on disk (``schemas/agent.schema.json`` in a checkout)."""
    return os.path.realpath(
        str(resources.files("flowengine.agentfile").joinpath("agent.schema.json"))
    )


@functools.cache
def agent_schema() -> dict[str, Any]:
    """The agent JSON Schema shipped with the package."""
    with open(schema_file(), encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


_Validators = tuple[Draft202012Validator, Draft202012Validator, dict[str, Draft202012Validator]]


def step_types(schema: dict[str, Any] | None = None) -> list[str]:
    """The step ``type`` values ``schema`` (default: the shipped one) knows."""
    types: list[str] = (schema or agent_schema())["$defs"]["step"]["properties"]["type"]["enum"]
    return types


def _validators(schema: dict[str, Any] | None = None) -> _Validators:
    """The validators of ``schema``; of the shipped schema when None (built once)."""
    if schema is None:
        return _shipped_validators()
    # A schema with plugin kinds is built once per process (flowengine.steps.schema), so
    # its identity names it; keep the validators of the last few.
    key = id(schema)
    if key not in _BUILT or _BUILT[key][0] is not schema:
        if len(_BUILT) > 4:
            _BUILT.clear()
        _BUILT[key] = (schema, _build_validators(schema))
    return _BUILT[key][1]


_BUILT: dict[int, tuple[dict[str, Any], _Validators]] = {}


@functools.cache
def _shipped_validators() -> _Validators:
    return _build_validators(agent_schema())


def _build_validators(schema: dict[str, Any]) -> _Validators:
    """Validators for the document without its steps, for any step, and for each kind.

    The schema's 'step' definition picks the kind's rules with if/then on 'type'; doing
    that choice here checks each step against its kind alone, with the same errors at a
    third of the cost (tests compare both ways).
    """
    definitions = schema["$defs"]
    steps = {k: v for k, v in schema["properties"]["steps"].items() if k != "additionalProperties"}
    top = {**schema, "properties": {**schema["properties"], "steps": steps}}

    def of(definition: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator({**definition, "$defs": definitions})

    # Each kind's rules are the definition its ``if type == kind`` clause refers to.
    kinds = {
        clause["if"]["properties"]["type"]["const"]: clause["then"]["$ref"].rsplit("/", 1)[1]
        for clause in definitions["step"]["allOf"]
    }
    return (
        Draft202012Validator(top),
        of(definitions["step"]),
        {kind: of(definitions[name]) for kind, name in kinds.items()},
    )


def schema_errors(
    data: Any, schema: dict[str, Any] | None = None
) -> Iterator[tuple[Path, ValidationError]]:
    """Every violation of the agent schema in ``data``, with its path in the document."""
    for path, error, _ in _located_errors(data, schema):
        yield path, error


def _located_errors(
    data: Any, schema: dict[str, Any] | None = None
) -> Iterator[tuple[Path, ValidationError, Any]]:
    """Violations with their document path and the schema the validator started from."""
    top, any_step, kinds = _validators(schema)
    for error in top.iter_errors(data):
        yield tuple(error.absolute_path), error, top.schema
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, dict):
        return
    for sid, step in steps.items():
        kind = step.get("type") if isinstance(step, dict) else None
        validator = kinds.get(kind, any_step) if isinstance(kind, str) else any_step
        for error in validator.iter_errors(step):
            yield ("steps", sid, *error.absolute_path), error, validator.schema


def check_schema(
    document: Document, report: Reporter, schema: dict[str, Any] | None = None
) -> set[str]:
    """Report every schema violation; return the ids of steps that have one. ``schema``:
    the agent schema with plugin step kinds (default: the shipped one)."""
    errors = list(_located_errors(document.data, schema))
    unknown: dict[Path, list[str]] = {}
    for path, error, _ in errors:
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = _subschema(error).get("properties", {})
            unknown[path] = [k for k in error.instance if k not in allowed]
    broken_steps: set[str] = set()
    # jsonschema gives one 'required' error per missing field, and each is translated
    # into a line for every missing field of its rule: take one of them per rule.
    required_rules: set[tuple[Path, tuple[str | int, ...]]] = set()
    for path, error, root in errors:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], str):
            broken_steps.add(path[1])
        if error.validator == "required":
            rule = (path, tuple(error.schema_path))
            if rule in required_rules:
                continue
            required_rules.add(rule)
        custom = _custom_message(error, root)
        if error.schema is False:  # a field forbidden by another: point at the field
            forbidden = _walk(root, error)[1]
            instance = _value_at(document.data, path)
            fields = [
                k for k in instance if isinstance(forbidden, dict) and forbidden.get(k) is False
            ]
            path = (*path, *fields[:1])
        for code, message, at in _translate(error, path, document, unknown, custom):
            report.error(code, message, at)
    return broken_steps


def _custom_message(error: ValidationError, root: Any) -> str | None:
    """The schema's own words for this error: ``patternErrorMessage`` for a pattern, else
    the ``errorMessage`` nearest the failed rule, or the first alternative's for ``anyOf``.

    The schema keeps these as plain strings on small subschemas, because editors
    (yaml-language-server) show ``errorMessage`` as it is for any error under it.
    """
    here = _subschema(error)
    if error.validator == "pattern" and isinstance(here.get("patternErrorMessage"), str):
        return str(here["patternErrorMessage"])
    if error.validator == "anyOf":
        alternatives: Any = error.validator_value
        first = alternatives[0] if alternatives else {}
        message = first.get("errorMessage") if isinstance(first, dict) else None
        return message if isinstance(message, str) else None
    return _walk(root, error)[0]


def _walk(root: Any, error: ValidationError) -> tuple[str | None, Any]:
    """Follow the failed rule's schema path: the nearest ``errorMessage`` on the way, and
    the schema object the path ends in."""
    found = None
    node: Any = root
    for key in error.schema_path:
        if isinstance(node, dict) and isinstance(node.get("errorMessage"), str):
            found = node["errorMessage"]
        if isinstance(node, dict) and isinstance(node.get("$ref"), str) and key not in node:
            node = _resolve(root, node["$ref"])
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return found, None
    if isinstance(node, dict) and isinstance(node.get("errorMessage"), str):
        found = node["errorMessage"]
    return found, node


def _value_at(data: Any, path: Path) -> dict[str, Any]:
    """The mapping at ``path`` in the document's data (empty if there is none)."""
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _resolve(root: Any, ref: str) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _subschema(error: ValidationError) -> dict[str, Any]:
    """The schema object whose rule failed (jsonschema also allows booleans there)."""
    return error.schema if isinstance(error.schema, dict) else {}


def _code(error: ValidationError) -> str:
    alternatives: Any = error.validator_value
    if error.validator == "anyOf" and not all(
        isinstance(alternative, dict) and "required" in alternative for alternative in alternatives
    ):
        return "invalid-value"  # alternatives of value (progress: none, all or N)
    return {
        "additionalProperties": "unknown-field",
        "required": "missing-field",
        "type": "wrong-type",
        "anyOf": "missing-field",
        "not": "conflicting-fields",
        "False": "conflicting-fields",  # a field the schema forbids once another is there
        "dependentRequired": "missing-field",
    }.get(str(error.validator) if error.validator else str(error.schema), "invalid-value")


def _translate(
    error: ValidationError,
    path: Path,
    document: Document,
    unknown: dict[Path, list[str]],
    custom: str | None,
) -> Iterator[tuple[str, str, Position]]:
    code = _code(error)
    for message, at in _words(error, path, document, unknown, custom):
        if _is_about_branches(error, path, message):
            yield "few-branches", _few_branches(path, error), document.key_at(path)
        else:
            yield code, message, at


def _is_about_branches(error: ValidationError, path: Path, message: str) -> bool:
    """A decision without branches, or with one: the graph check's code, from the schema."""
    if error.validator == "required":
        return "'branches'" in message
    return error.validator == "minProperties" and path[-1:] == ("branches",)


def _few_branches(path: Path, error: ValidationError) -> str:
    instance: Any = error.instance
    count = len(instance) if error.validator == "minProperties" else 0
    return (
        f"decision step '{path[1]}' has {count or 'no'} branch{'' if count == 1 else 'es'}; "
        "a decision needs at least two (for a single way on, use a process step with 'next')"
    )


def _words(
    error: ValidationError,
    path: Path,
    document: Document,
    unknown: dict[Path, list[str]],
    custom: str | None,
) -> Iterator[tuple[str, Position]]:
    where = describe(path)
    kind = error.validator
    rule: Any = error.validator_value
    if kind == "additionalProperties":
        allowed = list(_subschema(error).get("properties", {}))
        for key in unknown.get(path, []):
            hint = did_you_mean(key, allowed) or f"; allowed here: {', '.join(allowed)}"
            yield f"unknown field '{key}' in {where}{hint}", document.key_at((*path, key))
    elif kind == "required":
        instance: Any = error.instance
        missing = [f for f in rule if f not in instance]
        for field in missing:
            if any(closest(k, [field]) for k in unknown.get(path, [])):
                continue  # the unknown-field error already suggests it
            hint = _REQUIRED_HINTS.get(field, "")
            kinds = _subschema(error).get("properties", {}).get(field, {}).get("enum")
            if field == "type" and kinds:
                # The kinds the schema holds (flowengine/steps/ and plugins), never a list
                # kept here that a new kind would leave behind.
                *first, last = [f"'type: {kind}'" for kind in kinds]
                hint = f"; add {', '.join(first)} or {last}" if first else f"; add {last}"
            yield f"{where} is missing the required field '{field}'{hint}", document.key_at(path)
    elif kind == "pattern" and custom:
        text = f"{error.instance!r} is {custom}"
        if "propertyNames" in error.schema_path:
            yield f"in {where}: {text}", document.key_at((*path, str(error.instance)))
        else:
            yield f"in {where}: {text}", document.key_at(path)
    elif custom:
        yield f"in {where}: {custom}", document.key_at(path)
    elif kind == "dependentRequired":
        present: Any = error.instance
        for field, needs in rule.items():
            for needed in needs:
                if field in present and needed not in present:
                    yield (
                        f"in {where}: "
                        + _DEPENDENT_HINTS.get((field, needed), f"{field!r} needs {needed!r}"),
                        document.key_at(path),
                    )
    elif kind == "type":
        names = [rule] if isinstance(rule, str) else list(rule)
        wanted = " or ".join(_TYPE_WORDS.get(n, n) for n in names)
        yield (
            f"{where} must be {wanted}, not {_describe_value(error.instance)}",
            document.value_at(path),
        )
    elif kind == "enum":
        choices = [str(c) for c in rule]
        hint = did_you_mean(str(error.instance), choices)
        yield (
            f"{where} must be one of {', '.join(choices)}, not {error.instance!r}{hint}",
            document.value_at(path),
        )
    elif kind in ("minimum", "minLength", "minProperties"):
        yield (
            f"{where} {_MINIMUM_WORDS[kind](rule)}",
            document.value_at(path),
        )
    elif kind == "uniqueItems":
        yield f"{where} lists the same entry twice", document.value_at(path)
    else:
        yield f"{where}: {error.message}", document.value_at(path)


_DEPENDENT_HINTS = {
    # By field and the field it needs: 'default' needs 'when' in a decision step but
    # 'timeout' in an input step.
    ("args", "tool"): "'args' only goes with 'tool'",
    ("default", "when"): "'default' only goes with 'when'",
    ("default", "timeout"): "'default' is the answer taken once the wait is over; add "
    "'timeout: SECONDS' (how long to wait), or remove 'default'",
    ("timeout", "default"): "'timeout' needs 'default', the answer taken once it has "
    "passed; add 'default: ANSWER', or remove 'timeout'",
    ("schema", "format"): "'schema' needs 'format: json'",
}

_REQUIRED_HINTS = {
    "name": "; add 'name: YourAgent'",
    "steps": "; add 'steps:' with at least one step",
    "question": "; add the question that the branch labels answer",
    "set": "; add 'set:' with each variable and its value (a template)",
}

_MINIMUM_WORDS = {
    "minimum": lambda n: f"must be at least {n}",
    "minLength": lambda n: "must not be empty",
    "minProperties": lambda n: f"must have at least {n} entr{'y' if n == 1 else 'ies'}",
}


def describe(path: Path) -> str:
    """A place in the document in words: ``step 'Step 4'``, ``the branches of step 'x'``."""
    if not path:
        return "the agent"
    if path[0] == "steps" and len(path) >= 2:
        step = f"step '{path[1]}'"
        if len(path) == 2:
            return step
        if len(path) == 3 and path[2] == "branches":
            return f"the branches of {step}"
        return f"'{_dotted(path[2:])}' of {step}"
    if path[0] == "inputs" and len(path) >= 2:
        return f"input '{path[1]}'"
    return f"'{_dotted(path)}'"


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe_value(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:27] + "..."
        return f"text ({shown!r})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def schema_is_valid(schema: Any) -> str | None:
    """Why ``schema`` is not a usable JSON Schema (2020-12), or None if it is."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


STRING_LIMIT = 200
"""The length the kernel gives a string whose schema sets none (``kernel/constrain.py``'s
``STRING_LIMIT``; a test checks they agree): checked with it, a ``pattern`` that the
grammar cannot bound (llguidance: "Unable to determine if regex is empty") is refused by
``validate``, not when the step runs."""


def _with_string_limits(node: Any) -> Any:
    if isinstance(node, list):
        return [_with_string_limits(value) for value in node]
    if not isinstance(node, dict):
        return node
    bounded = {key: _with_string_limits(value) for key, value in node.items()}
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and "maxLength" not in node and "enum" not in node:
        bounded["maxLength"] = STRING_LIMIT
    return bounded


def unenforceable(schema: Any) -> list[str]:
    """What in ``schema`` constrained decoding (llguidance) cannot enforce while a reply is
    generated, in llguidance's words; empty when it can enforce everything. Checked as the
    kernel compiles it, with its length limit on strings."""
    import json

    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(_with_string_limits(schema)))
    except Exception as exc:  # the compiler refuses some schemas outright
        return [" ".join(str(exc).split())]
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return [" ".join(message.split()) for message in messages] if is_error else []


SchemaPath = tuple[str | int, ...]

TEMPLATED_KEYWORDS: dict[str, Any] = {
    "enum": ["a choice"],
    "minItems": 1,
    "maxItems": 1,
    "minimum": 1,
    "maximum": 1,
    "pattern": "a",
}
"""Output-schema keywords whose value may be a template (``"{{ expr }}"``) computed at run
time, such as the names a tool returned (``enum``), the days of a trip (``minItems``) or a
regular expression built from the task (``pattern``); with the stand-in value ``validate``
checks the rest of the schema with."""


def is_templated(key: str, value: Any) -> bool:
    """Whether an output-schema keyword's value is a template computed at run time. A
    ``pattern`` is always a string, so it is a template only when it has Jinja2 blocks:
    a literal regular expression stays as written (and ``validate`` checks it)."""
    if key not in TEMPLATED_KEYWORDS or not isinstance(value, str):
        return False
    return key != "pattern" or "{{" in value or "{%" in value


def schema_templates(schema: Any, path: SchemaPath = ()) -> list[tuple[SchemaPath, str]]:
    """Every templated keyword value in an output schema, with its path."""
    found: list[tuple[SchemaPath, str]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if is_templated(key, value):
                found.append(((*path, key), value))
            else:
                found += schema_templates(value, (*path, key))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += schema_templates(value, (*path, index))
    return found


def with_values(schema: Any, compute: Callable[[str, str], Any]) -> Any:
    """``schema`` with each templated keyword value replaced by ``compute(key, template)``."""
    if isinstance(schema, dict):
        return {
            key: compute(key, value) if is_templated(key, value) else with_values(value, compute)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [with_values(value, compute) for value in schema]
    return schema
