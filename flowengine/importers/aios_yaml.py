"""Write converted AIOS agents as flowengine YAML that reads back as the same texts."""

from __future__ import annotations

import json
import re
import textwrap

from flowengine.importers.aios_parts import AiosStep, AiosTool

KINDS = ("process", "decision", "terminal")
WIDTH = 88
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9 _.,'()/?!;%&+=-]*")
_AMBIGUOUS = re.compile(
    r"(?i)(y|yes|n|no|true|false|on|off|null|~)|[-+]?[0-9.][0-9._eE+-]*|.*(: | #).*"
)


def write_yaml(
    name: str,
    description: str,
    tools: list[AiosTool],
    steps: list[AiosStep],
    source_name: str,
    schema_ref: str,
) -> str:
    out = [
        f"# yaml-language-server: $schema={schema_ref}",
        "#",
        f"# Imported from the AIOS agent config {comment(source_name)} by "
        "'flowengine import-aios'.",
        f"name: {scalar(name)}",
    ]
    if description:
        out += _long_text("description", literal(description), indent=0)
    if tools:
        out.append("# The tools as the AIOS config describes them:")
        for tool in tools:
            out += [f"#   {line}" for line in textwrap.wrap(comment(tool.note), WIDTH - 4)]
        out.append("tools: [" + ", ".join(scalar(tool.name) for tool in tools) + "]")
    out += ["", "steps:"]
    if not steps:
        out += [
            "  # The AIOS config has no steps: the agent answers the task in one step.",
            "  answer:",
            "    type: terminal",
            "    instruction: Respond to the task.",
        ]
    for step in steps:
        out += _step(step)
    return "\n".join(out).rstrip() + "\n"


def _step(step: AiosStep) -> list[str]:
    out = [f"  # {line}" for note in step.notes for line in textwrap.wrap(comment(note), WIDTH - 4)]
    out.append(f"  {scalar(step.id)}:")
    out.append(f"    type: {scalar(step.kind)}")
    if step.tool:
        out.append(f"    tool: {scalar(step.tool)}")
        if step.args:
            pairs = ", ".join(f"{scalar(k)}: {scalar(v)}" for k, v in step.args.items())
            out.append(f"    args: {{{pairs}}}")
    if step.output is not None:
        out.append(f"    output: {scalar(step.output)}")
    else:
        field = "question" if step.kind == "decision" else "instruction"
        out += _long_text(field, literal(step.text), indent=4)
    transitions = step.transitions
    if step.kind == "decision" or (step.kind not in KINDS and len(transitions) > 1):
        out.append("    branches:")
        out += [f"      {scalar(label)}: {scalar(target)}" for label, target in transitions]
    elif step.kind != "terminal" and transitions:
        out.append(f"    next: {scalar(transitions[0][1])}")
    out.append("")
    return out


def literal(text: str) -> str:
    """AIOS text as a Jinja2 template that renders as that text: each ``{{``, ``{%`` and
    ``{#`` is written as an expression printing it, so that it is not read as a tag."""
    return _JINJA_OPENER.sub(lambda m: "{{ '" + m.group() + "' }}", text)


def _long_text(key: str, text: str, indent: int) -> list[str]:
    pad = " " * indent
    line = f"{pad}{key}: {scalar(text)}"
    foldable = text == " ".join(text.split()) and not (
        _CONTROL.search(text) or _NOT_YAML_PRINTABLE.search(text)
    )
    if len(line) <= WIDTH or not foldable:
        return [line]
    wrapped = textwrap.wrap(text, WIDTH - indent - 2, break_long_words=False)
    return [f"{pad}{key}: >-", *(f"{pad}  {part}" for part in wrapped)]


def scalar(text: str) -> str:
    """Plain when that reads back as the same text, else double-quoted."""
    if _PLAIN.fullmatch(text) and not _AMBIGUOUS.fullmatch(text) and text == text.strip():
        return text
    return _NOT_YAML_PRINTABLE.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False)
    )


def comment(text: str) -> str:
    """Text safe inside a YAML comment: one line, no control characters."""
    return " ".join(_NOT_YAML_PRINTABLE.sub("?", _CONTROL.sub("?", text)).split())


_JINJA_OPENER = re.compile(r"\{[{%#]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
# Characters YAML reads as line breaks or does not allow unescaped (JSON escapes only
# those below 0x20).
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")
