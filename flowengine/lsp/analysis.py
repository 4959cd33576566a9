"""What the language server knows about one open agent file, as plain data (no LSP types).

Diagnostics come from ``validate_text``, the same call as ``flowengine validate``, so the
codes and positions are the same. Completion, definition and hover read the last version
of the file that loaded, so that they keep working while a line is half typed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from flowengine.agentfile.diagnostics import Diagnostic
from flowengine.agentfile.model import BUILTIN_VARIABLES, Agent, Step
from flowengine.graph import validate_text
from flowengine.lsp.catalog import tool_catalog
from flowengine.steps.registry import kind_of, kinds

TARGET_KEYS = frozenset({"next", "on_error", "start"})
ERROR_POLICIES = ("fail", "continue")
_KEY_LINE = re.compile(
    r"^(?P<indent>\s*)(?:-\s+)?(?P<key>[^#:\s][^#:]*?)\s*:(?:\s+|$)(?P<value>.*)$"
)


@dataclass
class Analysis:
    """One version of a document: its diagnostics, and the agent if it loaded."""

    text: str
    diagnostics: list[Diagnostic]
    agent: Agent | None


@dataclass(frozen=True)
class Span:
    """A 0-based line and start/end columns in the document."""

    line: int
    start: int
    end: int


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str
    """``step``, ``variable``, ``field``, ``tool``, ``branch`` or ``value``."""
    detail: str = ""
    insert: str = ""
    """What replaces the word at the cursor, when not the label (``refund.value`` for the
    field ``value``: the word runs from the variable's name)."""


@dataclass
class Context:
    """Where the cursor is: the key of its line, the keys above it, and the word at it."""

    key: str | None
    parents: list[str]
    before: str
    """The line up to the cursor."""
    word: str
    span: Span
    value_part: bool
    """The cursor is in the value, after the line's ``key:``."""
    value: str = ""
    """The whole value of the line's ``key:``, unquoted, without a trailing comment."""
    value_span: Span | None = None

    @property
    def replaced(self) -> Span:
        """What a completion replaces: the whole value after ``key:`` (step ids may hold
        spaces), or the word at the cursor inside a template or a ``[...]`` list."""
        if self.value_span and not _in_template(self.before) and "[" not in self.before:
            return self.value_span
        return self.span

    @property
    def step(self) -> str | None:
        """The id of the step whose block holds the cursor, if any."""
        if len(self.parents) >= 2 and self.parents[0] == "steps":
            return self.parents[1]
        return None


def analyse(text: str, file: str) -> Analysis:
    """Validate ``text`` as ``validate`` would (same codes, same positions); a test file
    (``*.test.yaml``) is checked as one, against the agent it names."""
    if file.endswith((".test.yaml", ".test.yml")):
        from pathlib import Path

        from flowengine.testing.spec import load_test_text

        return Analysis(text, load_test_text(text, Path(file)).diagnostics, None)
    validated = validate_text(text, file)
    return Analysis(text, validated.diagnostics, validated.agent)


def context_at(text: str, line: int, character: int) -> Context:
    """The YAML context of a 0-based position, read from the lines (works on broken YAML)."""
    lines = text.splitlines() or [""]
    current = lines[line] if 0 <= line < len(lines) else ""
    character = max(0, min(character, len(current)))
    before = current[:character]
    match = _KEY_LINE.match(current)
    key = _unquote(match.group("key")) if match else None
    value_part = match is not None and character >= match.start("value") and ":" in before
    stripped = current.lstrip()
    indent = len(current) - len(stripped)
    parents = _parents(lines, line, indent if stripped else character)
    start = character
    while start > 0 and _word_char(current[start - 1]):
        start -= 1
    end = character
    while end < len(current) and _word_char(current[end]):
        end += 1
    word = current[start:end].strip().strip("'\"")
    value, value_span = "", None
    if match:
        raw = re.split(r"\s#", match.group("value"))[0].rstrip()
        value = _unquote(raw)
        value_span = Span(line, match.start("value"), match.start("value") + len(raw))
    return Context(
        key, parents, before, word, Span(line, start, end), value_part, value, value_span
    )


def completions(analysis: Analysis, context: Context) -> list[Completion]:
    """What may be written at the cursor: step ids, branch labels, variables or tools."""
    agent = analysis.agent
    steps = list(agent.steps) if agent else []
    if _in_template(context.before):
        fields = _field_completions(agent, context)
        return fields if fields is not None else _variables(agent)
    under = context.parents[-1] if context.parents else None
    if context.value_part and context.key in TARGET_KEYS:
        found = [Completion(s, "step", _step_detail(agent, s)) for s in steps]
        if context.key == "on_error":
            found += [Completion(p, "value", "error policy") for p in ERROR_POLICIES]
        return found
    if context.value_part and under == "branches":
        return [Completion(s, "step", _step_detail(agent, s)) for s in steps]
    if context.value_part and context.key == "default":
        step = _step_around(agent, context)
        return [Completion(label, "branch") for label in (step.branches if step else {})]
    if context.value_part and context.key == "type":
        return [Completion(name, "value", kind.summary) for name, kind in kinds().items()]
    if (context.value_part and context.key == "tool") or (
        context.key == "tools" or under == "tools"
    ):
        return [Completion(t.name, "tool", t.summary) for t in tool_catalog().values()]
    if context.value_part and under == "when":
        return _variables(agent)
    return []


def definition(analysis: Analysis, context: Context) -> Span | None:
    """Where the step id at the cursor is defined (its key under ``steps``)."""
    agent = analysis.agent
    if agent is None:
        return None
    target = _step_id_at(agent, context)
    if target is None:
        return None
    position = agent.key_at("steps", target)
    return Span(position.line - 1, position.column - 1, position.column - 1 + len(target))


def hover(analysis: Analysis, context: Context) -> str | None:
    """Markdown for the step id or tool name at the cursor."""
    agent = analysis.agent
    tools = tool_catalog()
    if context.word in tools and (
        context.key == "tool" or context.key == "tools" or "tools" in context.parents[-1:]
    ):
        return tools[context.word].markdown()
    kind = kind_of(context.value) if context.value_part and context.key == "type" else None
    if kind is not None:  # a step's type: what its kind does (plugin kinds too)
        return f"**{kind.name}** step: {kind.summary}"
    if agent is None:
        return None
    step_id = _step_id_at(agent, context)
    if step_id is None:
        return None
    return step_summary(agent.steps[step_id])


def step_summary(step: Step) -> str:
    """A step in a few Markdown lines: kind, what it says, where it goes and its settings."""
    kind = kind_of(step.type)
    text = kind.text(step) if kind else step.text
    lines = [f"**{step.id}** · {step.type or 'step without a type'}"]
    if text:
        lines += ["", _short(text, 300)]
    facts = []
    if step.tool:
        args = ", ".join(f"{k}={v!r}" for k, v in step.args.items())
        facts.append(f"calls `{step.tool}({args})`")
    for label, target in step.transitions:
        if label == "on_error":
            facts.append(f"on error → `{target}`")
        elif label == "next":
            facts.append(f"next → `{target}`")
        else:
            condition = step.when.get(label)
            chosen = (
                f" when `{condition}`"
                if condition
                else " (default)"
                if step.default == label
                else ""
            )
            facts.append(f"`{label}`{chosen} → `{target}`")
    if step.save_as:
        facts.append(f"saves `{step.save_as}`")
    if step.max_visits:
        facts.append(f"at most {step.max_visits} visits")
    if step.retry:
        facts.append(f"retries {step.retry} times")
    if kind is not None and kind.has_error_policy:
        facts.append(f"a failure left after retries: {step.error_policy}")
    if kind is not None:
        facts += kind.hover_facts(step)
    if facts:
        lines.append("")
        lines.extend(f"- {fact}" for fact in facts)
    return "\n".join(lines)


def _step_id_at(agent: Agent, context: Context) -> str | None:
    """The step id the cursor is on: a target value, a branch target, or a step's key.
    Step ids may hold spaces, so the whole value (or key) is the id, not the word."""
    under = context.parents[-1] if context.parents else None
    if context.value_part and (context.key in TARGET_KEYS or under == "branches"):
        return context.value if context.value in agent.steps else None
    if not context.value_part and context.parents == ["steps"] and context.key in agent.steps:
        return context.key
    return None


def yaml_scalar(text: str) -> str:
    """``text`` as a YAML value: as it is when plain YAML reads it back the same, else quoted."""
    plain = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_ .-]*", text) and text == text.strip()
    reserved = text.lower() in {"true", "false", "null", "~", "yes", "no", "on", "off"}
    return text if plain and not reserved and not text[0].isdigit() else json.dumps(text)


def _variables(agent: Agent | None) -> list[Completion]:
    names: dict[str, str] = {name: "built-in" for name in sorted(BUILTIN_VARIABLES)}
    if agent is not None:
        for name in agent.inputs:
            names.setdefault(name, "input")
        for name, spec in agent.state.items():
            names.setdefault(name, f"state ({spec.reducer})")
        for step in agent.steps.values():
            if step.save_as:
                names.setdefault(step.save_as, f"saved by step '{step.id}'")
            for name in step.set:
                names.setdefault(name, f"set by step '{step.id}'")
    return [Completion(name, "variable", detail) for name, detail in names.items()]


_DOTTED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\.([A-Za-z0-9_]*)$")


def _field_completions(agent: Agent | None, context: Context) -> list[Completion] | None:
    """After ``name.`` in a template: the fields ``name`` has where its type is known (a
    tool's result, a JSON step's schema, declared state); None when not after a dot."""
    match = _DOTTED.search(context.before)
    if match is None:
        return None
    if agent is None:
        return []
    from flowengine.graph.checks import known_fields

    chain = tuple(part for part in match.group(2).split(".") if part)
    fields = known_fields(agent, match.group(1), chain, context.step)
    prefix = match.group(1) + match.group(2)
    return [
        Completion(name, "field", f"field of {prefix}", insert=f"{prefix}.{name}")
        for name in fields
    ]


def _step_around(agent: Agent | None, context: Context) -> Step | None:
    if agent is None or context.step is None:
        return None
    return agent.steps.get(context.step)


def _step_detail(agent: Agent | None, step_id: str) -> str:
    if agent is None or step_id not in agent.steps:
        return ""
    step = agent.steps[step_id]
    return f"{step.type}: {_short(step.text, 60)}" if step.text else step.type


def _in_template(before: str) -> bool:
    """The cursor is inside an unclosed ``{{`` or ``{%`` of a template."""
    opened = max(before.rfind("{{"), before.rfind("{%"))
    closed = max(before.rfind("}}"), before.rfind("%}"))
    return opened > closed


def _parents(lines: list[str], line: int, indent: int) -> list[str]:
    """The keys of the mappings that hold ``line``, outermost first."""
    found: list[str] = []
    for index in range(min(line, len(lines)) - 1, -1, -1):
        text = lines[index]
        stripped = text.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        level = len(text) - len(stripped)
        if level < indent:
            match = _KEY_LINE.match(text)
            if match:
                found.append(_unquote(match.group("key")))
            indent = level
            if level == 0:
                break
    return list(reversed(found))


def _word_char(char: str) -> bool:
    return char.isalnum() or char in "_-."


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "Analysis",
    "Completion",
    "Context",
    "Span",
    "analyse",
    "completions",
    "context_at",
    "definition",
    "hover",
    "step_summary",
    "yaml_scalar",
]
