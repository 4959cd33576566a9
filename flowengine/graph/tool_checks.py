"""Static checks of an agent's tools: that they exist, are declared, and get arguments
their JSON Schema can accept.

Which tools exist comes from a catalog (``flowengine.tools.catalog``: built-ins and
plugins), or from the caller when a run uses tools of its own. Argument values that are
templates are left alone: only a run knows what they render to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flowengine.agentfile.diagnostics import Reporter, Vocabulary, closest, did_you_mean
from flowengine.agentfile.model import Agent, Step
from flowengine.agentfile.yamlsource import Path
from flowengine.tools.base import NAME_PATTERN, Tool

_TEMPLATE_MARKS = ("{{", "{%", "{#")
_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}
_LIST_HINT = "; `flowengine tools` lists the tools there are (is a plugin not installed?)"


def check_tools(agent: Agent, tools: Mapping[str, Tool] | None, report: Reporter) -> None:
    """Report unknown tools, undeclared ones, and arguments their tool cannot take.

    ``tools`` is what a run will be able to call; None means the installed catalog,
    loaded only if the agent mentions a tool at all (``validate`` stays fast without).
    """
    steps = [s for s in agent.steps.values() if s.type == "process" and s.tool and not s.broken]
    if not agent.tools and not steps:
        return
    if tools is None:
        from flowengine.tools.catalog import available_tools

        tools = available_tools()
    known = Vocabulary(sorted(tools))
    declared = [name for name in agent.tools if name in tools]  # worth suggesting
    for index, name in _declared(agent):
        if name not in tools:
            report.warning(
                "unknown-declared-tool",
                f"'tools' lists '{name}', which is not a tool flowengine has"
                + (did_you_mean(name, known) or _LIST_HINT),
                agent.value_at("tools", index),
            )
    for step in steps:
        assert step.tool is not None
        tool = tools.get(step.tool)
        if tool is None:
            report.error(
                "unknown-tool",
                f"step '{step.id}' calls tool '{step.tool}', which is not a tool flowengine has"
                + (did_you_mean(step.tool, known) or _LIST_HINT),
                agent.value_at("steps", step.id, "tool"),
            )
            continue
        if step.tool not in agent.tools:
            report.error(
                "undeclared-tool",
                f"step '{step.id}' calls tool '{step.tool}', which the agent does not declare"
                + (did_you_mean(step.tool, declared) or "; add it to 'tools:'"),
                agent.value_at("steps", step.id, "tool"),
            )
        _check_arguments(agent, step, tool, report)


def _declared(agent: Agent) -> Iterator[tuple[int, str]]:
    """Each declared tool name with its index in the file's list, once; entries the schema
    refuses (not a name, repeated) are left to its diagnostic."""
    raw = agent.source.data.get("tools") if isinstance(agent.source.data, dict) else None
    seen: set[str] = set()
    for index, name in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(name, str) and NAME_PATTERN.match(name) and name not in seen:
            seen.add(name)
            yield index, name


def _check_arguments(agent: Agent, step: Step, tool: Tool, report: Reporter) -> None:
    at: Path = ("steps", step.id, "args")
    named = list(tool.properties)
    meant: set[str] = set()  # required arguments a misspelt name stands for
    for name in step.args:
        if name in tool.properties or tool.takes_other_arguments:
            continue
        guess = _closest_argument(name, named)
        if guess in step.args:
            guess = None  # already given: suggesting it again would not help
        if guess is not None:
            meant.add(guess)
        report.error(
            "unknown-tool-argument",
            f"tool '{tool.name}' (step '{step.id}') takes no argument '{name}'"
            + (
                f"; did you mean '{guess}'?"
                if guess
                else f"; it takes: {', '.join(named)}"
                if named
                else "; it takes none"
            ),
            agent.key_at(*at, name),
        )
    missing = [n for n in tool.required if n not in step.args and n not in meant]
    args_key: Path = at if at in agent.source.keys else ("steps", step.id, "tool")
    if missing:
        listed = ", ".join(f"'{n}'" for n in missing)
        plural = "s" if len(missing) > 1 else ""
        report.error(
            "missing-tool-argument",
            f"step '{step.id}' calls '{tool.name}' without its required argument{plural} "
            f"{listed}; add {'them' if plural else 'it'} under 'args'",
            agent.key_at(*args_key),
        )
    for name, value in step.args.items():
        if name in tool.properties and not _has_template(value):
            problem = _literal_problem(tool, name, value)
            if problem is not None:
                where, message = problem
                report.error(
                    "invalid-tool-argument",
                    f"argument '{name}' of tool '{tool.name}' (step '{step.id}') {message}",
                    agent.value_at(*at, name, *where),
                )


def _closest_argument(name: str, named: list[str]) -> str | None:
    """The argument a misspelt one most likely meant: a close spelling, or the only
    argument the name abbreviates (``expr`` for ``expression``)."""
    found = closest(name, named)
    if found is None and len(name) >= 3:
        prefixed = [n for n in named if n.casefold().startswith(name.casefold())]
        found = prefixed[0] if len(prefixed) == 1 else None
    return found


def _has_template(value: Any) -> bool:
    """Whether ``value`` holds a string a run renders as a template (value unknown here)."""
    return any(mark in text for text in _strings(value) for mark in _TEMPLATE_MARKS)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _literal_problem(tool: Tool, name: str, value: Any) -> tuple[Path, str] | None:
    """Where inside ``value`` and why the tool's schema refuses it, or None if it accepts it.

    The value is checked as the only argument of an object under the tool's own schema
    (so ``$ref`` and ``$defs`` resolve), and only errors inside it count.
    """
    from jsonschema import Draft202012Validator

    schema = {**tool.parameters, "required": []}
    errors = [
        error
        for error in Draft202012Validator(schema).iter_errors({name: value})
        if list(error.absolute_path)[:1] == [name]
    ]
    if not errors:
        return None
    error = min(errors, key=lambda e: (len(e.absolute_path), str(e.validator)))
    where: Path = tuple(error.absolute_path)[1:]
    shown = _show(error.instance)
    if error.validator == "type":
        expected = error.validator_value
        kinds = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_WORDS.get(k, str(k)) for k in kinds)
        got = _json_type(error.instance)
        inside = f" at {'/'.join(map(str, where))}" if where else ""
        return where, f"must be {wanted}{inside}, not {_TYPE_WORDS[got]} ({shown})"
    if error.validator == "enum":
        choices = ", ".join(_show(choice) for choice in error.validator_value)
        return where, f"must be one of {choices}, not {shown}"
    return where, f"is not accepted: {error.message}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"
