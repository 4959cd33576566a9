"""Convert AIOS agent configs into flowengine YAML.

Two formats: the released configs' ``flow`` of ``Step N:::Type:::text:::label::target``
strings with free-text ``tool_info``, and the newer ``workflow`` and ``tools`` lists
(``aios_newer``). For the first it accepts what the released configs contain: step
references that differ only in case (``step 2`` for ``Step 2``), branch pairs joined by
``::`` instead of ``:::``, the trailing ``:::`` of terminal steps, ``description`` as a
list of strings, a header line in ``tool_info`` and empty flows. Anything it cannot
convert faithfully is reported with its position in the JSON file; a broken flow is
carried over as written (an unknown step type included) so that validation locates it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowengine.agentfile.diagnostics import Position, Reporter
from flowengine.agentfile.yamlsource import YamlLoadError, read_text
from flowengine.importers.aios_newer import read_tools, read_workflow
from flowengine.importers.aios_parts import AiosStep, AiosTool, Locator, tool_name
from flowengine.importers.aios_yaml import KINDS, write_yaml
from flowengine.tools.base import Tool

# A line such as "Available tools:" that introduces the entries after it.
_HEADER = re.compile(r"[^\[\](){}:]*(\s|tools?)[^\[\](){}:]*:", re.IGNORECASE)


@dataclass
class Imported:
    """The YAML text written for one config, or None if the config could not be read."""

    name: str
    yaml: str | None


def import_config(
    path: str, schema_ref: str, report: Reporter, available: Mapping[str, Tool] | None = None
) -> Imported:
    """Read the AIOS config at ``path`` and return it as flowengine YAML.

    ``available``: the tools flowengine has, if not the installed catalog; a workflow step
    calls a tool only if it is one of them."""
    try:
        text = read_text(path)
    except YamlLoadError as exc:
        report.error(exc.code, exc.message, exc.position)
        return Imported("", None)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        report.error("aios-json", f"not valid JSON: {exc.msg}", Position(exc.lineno, exc.colno))
        return Imported("", None)
    except RecursionError:
        report.error("aios-json", "the JSON is nested too deeply")
        return Imported("", None)
    if not isinstance(config, dict):
        report.error(
            "aios-config",
            "an AIOS config is a JSON object with a 'name', and a 'flow' or a 'workflow'",
        )
        return Imported("", None)
    locate = Locator(text)
    name = config.get("name")
    if not isinstance(name, str) or not name.strip():
        report.error("aios-config", "the config has no 'name' (text)", locate.key("name"))
        return Imported("", None)
    description = _join(config.get("description"))
    tools = _merge(
        _tool_info(config.get("tool_info"), report, locate),
        read_tools(config.get("tools"), report, locate),
    )
    if "flow" in config:
        steps = _steps(config.get("flow"), report, locate)
        if "workflow" in config:
            report.warning(
                "aios-workflow",
                "the config has both a 'flow' and a 'workflow'; the flow is converted and "
                "the workflow is left out",
                locate.key("workflow"),
            )
    else:
        workflow = config.get("workflow")
        steps = read_workflow(
            [] if workflow is None else workflow, tools, report, locate, available
        )
    _note_code(config.get("build"), report, locate)
    yaml_text = write_yaml(name.strip(), description, tools, steps, Path(path).name, schema_ref)
    return Imported(name.strip(), yaml_text)


def output_filename(agent_name: str) -> str:
    """``TravelAgent`` -> ``travel_agent.yaml``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", agent_name)
    snake = re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").lower()
    return f"{snake or 'agent'}.yaml"


def _join(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(" ".join(str(part).split()) for part in value).strip()
    return " ".join(str(value).split()) if isinstance(value, str) else ""


def _tool_info(value: Any, report: Reporter, locate: Locator) -> list[AiosTool]:
    """``tool_info`` entries as tools: the name is the text before any ``[``, ``(``, ``.``
    or ``:``, in snake_case. A header line ("Available tools:") is not a tool."""
    entries = value if isinstance(value, list) else ([value] if isinstance(value, str) else [])
    lines = [line for entry in entries if isinstance(entry, str) for line in entry.splitlines()]
    tools: list[AiosTool] = []
    for entry in lines:
        if not entry.strip() or _HEADER.fullmatch(entry.strip()):
            continue
        name = tool_name(re.split(r"[\[(.:]", entry.strip(), maxsplit=1)[0])
        if not name or name[0].isdigit():
            report.warning(
                "aios-tool",
                f"cannot tell the tool's name from {entry[:40]!r}; it is left out",
                locate.value(entry, "tool_info"),
            )
            continue
        tools.append(AiosTool(name, " ".join(entry.split())))
    return tools


def _merge(*groups: list[AiosTool]) -> list[AiosTool]:
    """Tools in order, each name once (the first description of it is kept)."""
    seen: dict[str, AiosTool] = {}
    for tool in (tool for group in groups for tool in group):
        seen.setdefault(tool.name, tool)
    return list(seen.values())


def _note_code(build: Any, report: Reporter, locate: Locator) -> None:
    """Say that an agent's own Python code (``build``) is not part of the conversion."""
    if not isinstance(build, dict):
        return
    entry = build.get("entry")
    module = build.get("module")
    code = " ".join(
        part
        for part in (
            f"'{entry}'" if isinstance(entry, str) else "",
            f"(class {module})" if isinstance(module, str) else "",
        )
        if part
    )
    report.warning(
        "aios-config",
        f"the agent's own code {code or 'named in build'} is not converted, only its "
        "description, tools and workflow; check the imported steps against it",
        locate.key("build"),
    )


def _steps(flow: Any, report: Reporter, locate: Locator) -> list[AiosStep]:
    if not isinstance(flow, list):
        return []
    steps: list[AiosStep] = []
    for entry in flow:
        if not isinstance(entry, str):
            report.error("aios-flow", "a flow entry must be a string", locate.key("flow"))
            continue
        step = _parse_entry(entry, report, locate.value(entry, "flow"))
        if step:
            steps.append(step)
    canonical = {" ".join(s.id.split()).casefold(): s.id for s in steps}
    for step in steps:
        step.transitions = [
            (label, canonical.get(" ".join(target.split()).casefold(), target))
            for label, target in step.transitions
        ]
    return steps


def _parse_entry(entry: str, report: Reporter, at: Position) -> AiosStep | None:
    parts = entry.split(":::")
    if len(parts) < 3:
        report.error(
            "aios-flow",
            "a flow entry reads 'Step N:::Process|Decision|Terminal:::text:::label::target'; "
            f"this one has {len(parts)} part(s)",
            at,
        )
        return None
    step_id, kind_text, text = (p.strip() for p in parts[:3])
    if not step_id:
        report.error("aios-flow", "a flow entry has no step id before its first ':::'", at)
        return None
    kind = kind_text.casefold()
    notes = []
    if kind not in KINDS:
        report.error(
            "aios-flow",
            f"step '{step_id}' has the unknown step type {kind_text!r}; AIOS steps are "
            "Process, Decision or Terminal (the step is written with this type, so that "
            "validation points at it too)",
            at,
        )
        kind = kind_text
        notes.append(f"AIOS step type {kind_text!r} is not Process, Decision or Terminal.")
    # Branch pairs are joined by ':::' in most configs and by '::' in MathAgent.
    tokens = [t.strip() for t in re.split(r":{2,}", ":::".join(parts[3:])) if t.strip()]
    if len(tokens) % 2:
        report.error(
            "aios-flow",
            f"step '{step_id}' has an unpaired label or target {tokens[-1]!r}; "
            "transitions come in 'label::target' pairs",
            at,
        )
        tokens = tokens[:-1]
    pairs = list(zip(tokens[::2], tokens[1::2], strict=True))
    if kind == "terminal" and pairs:
        report.warning(
            "aios-flow", f"terminal step '{step_id}' has transitions; they are dropped", at
        )
        pairs = []
    if kind == "process" and len(pairs) > 1:
        report.warning(
            "aios-flow",
            f"process step '{step_id}' has {len(pairs)} transitions; only the first is kept",
            at,
        )
        pairs = pairs[:1]
    return AiosStep(step_id, kind, " ".join(text.split()), pairs, at, notes=notes)
