"""The newer AIOS config format: a ``tools`` list and a ``workflow`` instead of a ``flow``.

``tools`` holds tool paths (``"wolfram/wolfram_alpha"``) or OpenAI-style function objects
(``{"type": "function", "function": {"name", "description", "parameters"}}``). The
``workflow`` is run by AIOS in order, one LLM turn per entry, the last turn's reply being
the answer; an entry is a text or ``{"message": text, "tool_use": [tool names]}``, and
with ``tool_use`` AIOS lets the model choose whether and how to call a tool.

A step calls a tool only if the written file can validate with that call: flowengine must
have the tool (built-in or plugin, as ``validate`` checks) and take the arguments written.
Otherwise the step only asks the model, and a warning at the entry says what to add by hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from flowengine.agentfile.diagnostics import Reporter
from flowengine.importers.aios_parts import AiosStep, AiosTool, Locator, tool_name
from flowengine.tools.base import Tool

ANSWER_STEP = "answer"


def read_tools(value: Any, report: Reporter, locate: Locator) -> list[AiosTool]:
    """The ``tools`` list: each path's last part, or each function object's name."""
    if value is None:
        return []
    if not isinstance(value, list):
        report.warning(
            "aios-tool", "'tools' is not a list; no tools are declared", locate.key("tools")
        )
        return []
    tools: list[AiosTool] = []
    for entry in value:
        tool = _tool(entry)
        if tool is None or not tool.name or tool.name[0].isdigit():
            shown = _function(entry).get("name", entry) if isinstance(entry, dict) else entry
            at = locate.value(shown, "tools")
            report.warning(
                "aios-tool",
                f"cannot tell a tool's name from the 'tools' entry {str(shown)[:40]!r}; "
                "it is left out",
                at,
            )
            continue
        tools.append(tool)
    return tools


def _function(entry: Any) -> dict[str, Any]:
    """The function object of a tool entry (``{"function": {...}}`` or the object itself)."""
    if not isinstance(entry, dict):
        return {}
    inner = entry.get("function")
    return inner if isinstance(inner, dict) else entry


def _tool(entry: Any) -> AiosTool | None:
    if isinstance(entry, str):
        parts = [part for part in entry.strip().split("/") if part.strip()]
        return AiosTool(tool_name(parts[-1]), " ".join(entry.split())) if parts else None
    function = _function(entry)
    name = function.get("name")
    if not isinstance(name, str):
        return None
    described = function.get("description")
    note = f"{name}: {described}" if isinstance(described, str) else name
    parameters = function.get("parameters")
    return AiosTool(tool_name(name), note, parameters if isinstance(parameters, dict) else None)


def read_workflow(
    value: Any,
    tools: list[AiosTool],
    report: Reporter,
    locate: Locator,
    available: Mapping[str, Tool] | None = None,
) -> list[AiosStep]:
    """Workflow entries as process steps in order, then a terminal step with the last reply.

    ``available``: the tools flowengine has, if not the installed catalog (which is then
    loaded only when an entry names a tool it could call)."""
    if not isinstance(value, list):
        report.error(
            "aios-workflow",
            '\'workflow\' must be a list of steps (texts or {"message": ..., "tool_use": '
            "[...]}); it is not converted",
            locate.key("workflow"),
        )
        return []
    steps: list[AiosStep] = []
    for number, entry in enumerate(value, start=1):
        step = _workflow_step(number, entry, tools, report, locate, available)
        if step is not None:
            steps.append(step)
    if not steps:
        return []
    for step, following in itertools.pairwise(steps):
        step.transitions = [("next", following.id)]
    steps[-1].transitions = [("next", ANSWER_STEP)]
    answer = AiosStep(ANSWER_STEP, "terminal", "", output="{{ last }}")
    answer.notes.append("AIOS answers with the reply to the last workflow step.")
    return [*steps, answer]


def _workflow_step(
    number: int,
    entry: Any,
    tools: list[AiosTool],
    report: Reporter,
    locate: Locator,
    available: Mapping[str, Tool] | None,
) -> AiosStep | None:
    step_id = f"Step {number}"
    message = entry.get("message") if isinstance(entry, dict) else entry
    if not isinstance(message, str) or not message.strip():
        report.error(
            "aios-workflow",
            f'workflow entry {number} is not a text or {{"message": text, "tool_use": '
            f"[...]}}; it is left out, so the workflow has no '{step_id}'",
            locate.value(_first_text(entry) if isinstance(entry, dict) else entry, "workflow"),
        )
        return None
    at = locate.value(message, "workflow")
    step = AiosStep(step_id, "process", " ".join(message.split()), position=at)
    uses = entry.get("tool_use") if isinstance(entry, dict) else None
    if uses:
        _call_tool(step, uses if isinstance(uses, list) else [uses], tools, report, available)
    return step


def _first_text(entry: dict[str, Any]) -> object:
    """Something of a mapping entry to find it by in the file: its first text value."""
    return next((value for value in entry.values() if isinstance(value, str)), {})


def _call_tool(
    step: AiosStep,
    uses: list[Any],
    tools: list[AiosTool],
    report: Reporter,
    available: Mapping[str, Tool] | None,
) -> None:
    """Call the tool an entry names, when its arguments can be written and flowengine has
    it; else say why not."""
    declared = {tool.name: tool for tool in tools}
    named = [str(use) for use in uses if use]
    where = f"workflow step '{step.id}'"
    missing = [use for use in named if tool_name(use) not in declared]
    if missing:
        report.warning(
            "aios-workflow",
            f"{where} uses {_names(missing)}, which the config's 'tools' does not list; "
            "the step does not call it",
            step.position,
        )
    usable = [declared[tool_name(use)] for use in named if tool_name(use) in declared]
    if len(usable) > 1:
        report.warning(
            "aios-workflow",
            f"{where} lets the model choose among {_names([t.name for t in usable])}; a "
            "flowengine step calls one given tool, so this step calls none and only asks "
            "the model",
            step.position,
        )
        return
    if not usable:
        return
    tool = usable[0]
    args = _arguments(tool)
    if args is None:
        report.warning(
            "aios-workflow",
            f"{where} uses tool '{tool.name}', but the config does not say which arguments it "
            "takes (AIOS lets the model write them); the step only asks the model, without "
            "the tool: add 'tool' and 'args' to it by hand",
            step.position,
        )
        return
    if not _flowengine_takes(step, tool.name, args, report, available):
        return
    step.tool = tool.name
    step.args = args
    if args:
        (parameter,) = args
        step.notes.append(
            f"AIOS lets the model write the '{parameter}' of {tool.name}; here it is the task."
        )


def _arguments(tool: AiosTool) -> dict[str, str] | None:
    """Arguments that can be written without the model: none, or the task as the only one."""
    if tool.parameters is None:
        return None
    properties = tool.parameters.get("properties") or {}
    if not isinstance(properties, dict):
        return None
    if not properties:
        return {}
    if len(properties) == 1:
        (parameter, schema) = next(iter(properties.items()))
        kind = schema.get("type", "string") if isinstance(schema, dict) else "string"
        if kind == "string":
            return {str(parameter): "{{ task }}"}
    return None


def _flowengine_takes(
    step: AiosStep,
    name: str,
    args: dict[str, str],
    report: Reporter,
    available: Mapping[str, Tool] | None,
) -> bool:
    """Whether the written step can call ``name`` with ``args`` and still validate; if not,
    a warning says what to add by hand once it can, and a comment above the step has it.

    ``validate`` checks a call against flowengine's tool of that name (built-in or plugin),
    while the config's parameters describe AIOS's: flowengine may lack it or take others."""
    if available is None:
        from flowengine.tools.catalog import available_tools

        available = available_tools()
    where = f"workflow step '{step.id}'"
    call = f"tool: {name}" + (f", args: {_shown(args)}" if args else "")
    tool = available.get(name)
    if tool is None:
        report.warning(
            "aios-workflow",
            f"{where} uses tool '{name}', which flowengine does not have; the step only "
            f"asks the model: once a plugin provides '{name}' (`flowengine tools` lists the "
            f"tools there are), add '{call}' to the step (the comment above it has the call)",
            step.position,
        )
        step.notes.append(
            f"AIOS calls {name} here, a tool flowengine does not have. Once a plugin "
            f"provides it, add: {call}"
        )
        return False
    unknown = [] if tool.takes_other_arguments else [a for a in args if a not in tool.properties]
    missing = [arg for arg in tool.required if arg not in args]
    if not unknown and not missing:
        return True
    takes = ", ".join(f"'{arg.name}'" for arg in tool.arguments()) or "no arguments"
    given = ", ".join(f"'{arg}'" for arg in args) or "none"
    problem = f"flowengine's {name} takes {takes}, and the config gives {given}"
    report.warning(
        "aios-workflow",
        f"{where} uses tool '{name}', but {problem}; the step only asks the model: add "
        f"'tool: {name}' and the 'args' it takes to the step by hand",
        step.position,
    )
    step.notes.append(f"AIOS calls {name} here, but {problem}.")
    return False


def _shown(args: dict[str, str]) -> str:
    return "{" + ", ".join(f'{name}: "{value}"' for name, value in args.items()) + "}"


def _names(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return ("tool " if len(quoted) == 1 else "tools ") + ", ".join(quoted)
