"""Convert AIOS agent configs (``config.json`` with ``Step N:::Type:::text:::label::target``
flow strings) into flowengine YAML.

It accepts what the released configs contain: step references that differ only in case
(``step 2`` for ``Step 2``), branch pairs joined by ``::`` instead of ``:::``, the trailing
``:::`` of terminal steps, ``description`` as a list of strings, free-text ``tool_info``
and empty flows. Anything it cannot convert faithfully is reported with its position in
the JSON file; a broken flow is carried over as written so that validation can locate it.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.agentfile.diagnostics import Position, Reporter
from flowengine.agentfile.yamlsource import YamlLoadError, read_text

_KINDS = {"process": "process", "decision": "decision", "terminal": "terminal"}
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9 _.,'()/?!;%&+=-]*")
_AMBIGUOUS = re.compile(
    r"(?i)(y|yes|n|no|true|false|on|off|null|~)|[-+]?[0-9.][0-9._eE+-]*|.*(: | #).*"
)
WIDTH = 88


@dataclass
class AiosStep:
    id: str
    kind: str
    text: str
    transitions: list[tuple[str, str]] = field(default_factory=list)
    position: Position = field(default_factory=Position)


@dataclass
class Imported:
    """The YAML text written for one config, or None if the config could not be read."""

    name: str
    yaml: str | None


def import_config(path: str, schema_ref: str, report: Reporter) -> Imported:
    """Read the AIOS config at ``path`` and return it as flowengine YAML."""
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
        report.error("aios-config", "an AIOS config is a JSON object with 'name' and 'flow'")
        return Imported("", None)
    locate = _Locator(text)
    name = config.get("name")
    if not isinstance(name, str) or not name.strip():
        report.error("aios-config", "the config has no 'name' (text)", locate.key("name"))
        return Imported("", None)
    description = _join(config.get("description"))
    tools = _tools(config.get("tool_info"), report, locate)
    steps = _steps(config.get("flow"), report, locate)
    yaml_text = _write_yaml(name.strip(), description, tools, steps, Path(path).name, schema_ref)
    return Imported(name.strip(), yaml_text)


def output_filename(agent_name: str) -> str:
    """``TravelAgent`` -> ``travel_agent.yaml``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", agent_name)
    snake = re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").lower()
    return f"{snake or 'agent'}.yaml"


class _Locator:
    """Finds where a JSON string value starts, so diagnostics can point into the file."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0

    def key(self, key: str) -> Position:
        return self._at(self.text.find(json.dumps(key)))

    def value(self, value: str) -> Position:
        needle = json.dumps(value, ensure_ascii=False)[:40]
        found = self.text.find(needle, self.offset)
        if found == -1:
            found = self.text.find(json.dumps(value)[:40], self.offset)
        if found != -1:
            self.offset = found + 1
        return self._at(found)

    def _at(self, offset: int) -> Position:
        if offset < 0:
            return Position()
        line_start = self.text.rfind("\n", 0, offset) + 1
        return Position(self.text.count("\n", 0, offset) + 1, offset - line_start + 1)


def _join(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(" ".join(str(part).split()) for part in value).strip()
    return " ".join(str(value).split()) if isinstance(value, str) else ""


def _tools(value: Any, report: Reporter, locate: _Locator) -> list[tuple[str, str]]:
    """``tool_info`` entries as (name, original text): the name is the text before any
    ``[``, ``(``, ``.`` or ``:``, in snake_case."""
    entries = value if isinstance(value, list) else ([value] if isinstance(value, str) else [])
    tools: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            continue
        head = re.split(r"[\[(.:]", entry.strip(), maxsplit=1)[0]
        name = re.sub(r"[^A-Za-z0-9]+", "_", head).strip("_").lower()
        if not name or name[0].isdigit():
            report.warning(
                "aios-tool",
                f"cannot tell the tool's name from {entry[:40]!r}; it is left out",
                locate.value(entry),
            )
            continue
        if name not in (t[0] for t in tools):
            tools.append((name, " ".join(entry.split())))
    return tools


def _steps(flow: Any, report: Reporter, locate: _Locator) -> list[AiosStep]:
    if not isinstance(flow, list):
        return []
    steps: list[AiosStep] = []
    for entry in flow:
        if not isinstance(entry, str):
            report.error("aios-flow", "a flow entry must be a string", locate.key("flow"))
            continue
        step = _parse_entry(entry, report, locate.value(entry))
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
    kind = _KINDS.get(kind_text.casefold())
    if kind is None or not step_id:
        report.error(
            "aios-flow",
            f"unknown step type {kind_text!r}; AIOS steps are Process, Decision or Terminal",
            at,
        )
        return None
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
    return AiosStep(step_id, kind, " ".join(text.split()), pairs, at)


def _write_yaml(
    name: str,
    description: str,
    tools: list[tuple[str, str]],
    steps: list[AiosStep],
    source_name: str,
    schema_ref: str,
) -> str:
    out = [
        f"# yaml-language-server: $schema={schema_ref}",
        "#",
        f"# Imported from the AIOS agent config {_comment(source_name)} by "
        "'flowengine import-aios'.",
        f"name: {_scalar(name)}",
    ]
    if description:
        out += _long_text("description", description, indent=0)
    if tools:
        out.append("# tool_info in the AIOS config:")
        for _, text in tools:
            out += [f"#   {line}" for line in textwrap.wrap(_comment(text), WIDTH - 4)]
        out.append("tools: [" + ", ".join(name for name, _ in tools) + "]")
    out += ["", "steps:"]
    if not steps:
        out += [
            "  # The AIOS flow is empty: the agent answers the task in one step.",
            "  answer:",
            "    type: terminal",
            "    instruction: Respond to the task.",
        ]
    for step in steps:
        out.append(f"  {_scalar(step.id)}:")
        out.append(f"    type: {step.kind}")
        field = "question" if step.kind == "decision" else "instruction"
        out += _long_text(field, step.text, indent=4)
        if step.kind == "process" and step.transitions:
            out.append(f"    next: {_scalar(step.transitions[0][1])}")
        elif step.kind == "decision":
            out.append("    branches:")
            out += [f"      {_scalar(lbl)}: {_scalar(tgt)}" for lbl, tgt in step.transitions]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _long_text(key: str, text: str, indent: int) -> list[str]:
    pad = " " * indent
    line = f"{pad}{key}: {_scalar(text)}"
    foldable = text == " ".join(text.split()) and not (
        _CONTROL.search(text) or _NOT_YAML_PRINTABLE.search(text)
    )
    if len(line) <= WIDTH or not foldable:
        return [line]
    wrapped = textwrap.wrap(text, WIDTH - indent - 2, break_long_words=False)
    return [f"{pad}{key}: >-", *(f"{pad}  {part}" for part in wrapped)]


def _scalar(text: str) -> str:
    """Plain when that reads back as the same text, else double-quoted."""
    if _PLAIN.fullmatch(text) and not _AMBIGUOUS.fullmatch(text) and text == text.strip():
        return text
    return _NOT_YAML_PRINTABLE.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False)
    )


def _comment(text: str) -> str:
    """Text safe inside a YAML comment: one line, no control characters."""
    return " ".join(_NOT_YAML_PRINTABLE.sub("?", _CONTROL.sub("?", text)).split())


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
# Characters YAML reads as line breaks or does not allow unescaped (JSON escapes only
# those below 0x20).
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")
