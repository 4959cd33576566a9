"""Static checks over a compiled agent, all reported in one pass with stable codes.

Each check is a function of the agent and its graph that reports into a Reporter.
Checks skip what an earlier error already explains (a step that failed the schema,
an edge to a step that does not exist) so that one mistake gives one diagnostic.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from flowengine.agentfile.diagnostics import Position, Reporter, Vocabulary, did_you_mean
from flowengine.agentfile.model import BUILTIN_VARIABLES, TOOL_RESULT, Agent, Step
from flowengine.agentfile.reducers import REDUCER_VARIABLES, REDUCERS, is_named
from flowengine.agentfile.schema_validation import schema_is_valid, schema_templates
from flowengine.agentfile.templates import (
    TemplateProblem,
    attribute_reads,
    expression_variables,
    guarded_variables,
    template_variables,
)
from flowengine.agentfile.yamlsource import Path
from flowengine.graph.tool_checks import check_tools
from flowengine.steps.registry import kind_of
from flowengine.tools.base import Tool

TEMPLATE_FIELDS = ("instruction", "question", "ask", "output")

RESULT = "result"
"""In a step's ``set`` values, the step's result."""


@dataclass
class _Facts:
    """What several checks need, computed once: they must stay linear in the flow's size."""

    step_ids: Vocabulary
    components: list[set[str]]
    loops: list[list[str]]
    """Cycles (strongly connected components with an edge inside), each in file order."""


def check_agent(
    agent: Agent,
    graph: nx.DiGraph,
    report: Reporter,
    tools: Mapping[str, Tool] | None = None,
) -> None:
    """Run every check; diagnostics go to ``report``. ``tools``: the tools a run can call
    (default: the installed catalog, built-ins and plugins)."""
    components = list(nx.strongly_connected_components(graph))
    facts = _Facts(Vocabulary(agent.steps), components, _loops(agent, graph, components))
    _check_targets(agent, facts, report)
    _check_steps(agent, report)
    _check_state(agent, report)
    check_tools(agent, tools, report)
    templates = list(_templates(agent))
    uses, unguarded = _check_templates(agent, templates, report)
    started = _check_start(agent, facts, report)
    if started:
        _check_reachability(agent, graph, facts, report)
    _check_cycles(agent, facts, report)
    _check_variables(agent, graph, facts, uses, report, unguarded if started else None)
    _check_attributes(agent, templates, tools, report)


def _step_path(step: Step, *rest: str | int) -> Path:
    return ("steps", step.id, *rest)


def _check_targets(agent: Agent, facts: _Facts, report: Reporter) -> None:
    for step in agent.steps.values():
        for label, target in step.transitions:
            if target in agent.steps:
                continue
            field: Path = (
                ("on_error",)
                if label == "on_error"
                else ("next",)
                if not _branches_by_label(step)
                else ("branches", label)
            )
            report.error(
                "unknown-target",
                f"step '{step.id}' goes to '{target}', which is not a step"
                + (did_you_mean(target, facts.step_ids) or "; check the step ids under 'steps'"),
                agent.value_at(*_step_path(step, *field)),
            )


def _branches_by_label(step: Step) -> bool:
    kind = kind_of(step.type)
    return kind is not None and kind.branches_by_label


def _finishes(step: Step) -> bool:
    kind = kind_of(step.type)
    return kind is not None and kind.finishes


def _check_start(agent: Agent, facts: _Facts, report: Reporter) -> bool:
    if not agent.steps:
        return False
    if agent.start is not None and agent.start not in agent.steps:
        report.error(
            "unknown-start",
            f"start step '{agent.start}' is not a step"
            + (did_you_mean(agent.start, facts.step_ids) or "; name one of the steps"),
            agent.value_at("start"),
        )
        return False
    return True


def _check_steps(agent: Agent, report: Reporter) -> None:
    for step in agent.steps.values():
        if step.broken:
            continue
        kind = kind_of(step.type)
        if kind is not None:
            kind.check(agent, step, report)


STEP_VALUE_NAMES = frozenset({"result", TOOL_RESULT})
"""What a step's ``set:`` expressions call its own result and its tool's."""


def _check_state(agent: Agent, report: Reporter) -> None:
    """Each declared variable: a valid schema, a default that matches it, a known reducer
    (a name, or an expression over ``current`` and ``value`` that parses)."""
    for name, spec in agent.state.items():
        taken = (
            "an input of the agent"
            if name in agent.inputs
            else "a built-in variable"
            if name in BUILTIN_VARIABLES
            else "what a step's own value is called in its set:"
            if name in STEP_VALUE_NAMES
            else None
        )
        if taken is not None:
            report.error(
                "state-name-taken",
                f"state '{name}' has the name of {taken}, which would hide it or be hidden "
                "by it; give the state variable another name",
                agent.key_at("state", name),
            )
        valid = True
        if spec.schema is not None:
            problem = schema_is_valid(spec.schema)
            if problem:
                valid = False
                report.error(
                    "invalid-state-schema",
                    f"the schema of state '{name}' is not a valid JSON Schema: {problem}",
                    agent.value_at("state", name, "schema"),
                )
        if valid and spec.schema is not None and spec.has_default:
            from jsonschema import Draft202012Validator

            wrong = next(Draft202012Validator(spec.schema).iter_errors(spec.default), None)
            if wrong is not None:
                report.error(
                    "invalid-state-default",
                    f"the default of state '{name}' does not match its schema: {wrong.message}",
                    agent.value_at("state", name, "default"),
                )
        if is_named(spec.reducer):
            continue
        at = agent.value_at("state", name, "reducer")
        if spec.reducer.isidentifier() and spec.reducer not in REDUCER_VARIABLES:
            report.error(
                "invalid-reducer",
                f"state '{name}' has reducer '{spec.reducer}', which is not a reducer"
                + (
                    did_you_mean(spec.reducer, list(REDUCERS))
                    or f"; use one of {', '.join(REDUCERS)}, or an expression over "
                    "'current' and 'value'"
                ),
                at,
            )
            continue
        try:
            names = expression_variables(spec.reducer)
        except TemplateProblem as problem:
            report.error(
                "invalid-reducer",
                f"the reducer of state '{name}' does not parse: {problem.message}",
                at,
            )
            continue
        other = sorted(names - REDUCER_VARIABLES)
        if other:
            report.error(
                "invalid-reducer",
                f"the reducer of state '{name}' reads '{other[0]}'; a reducer expression may "
                "read only 'current' (the variable's value) and 'value' (the new one)",
                at,
            )


def _check_templates(
    agent: Agent, templates: list[tuple[Path, str, bool]], report: Reporter
) -> tuple[dict[str, dict[str, Position]], dict[str, set[str]]]:
    """Parse every template and expression; return step id -> variable -> first use, and
    step id -> the variables it reads only where a guard (``is defined``, ``default``)
    covers them."""
    uses: dict[str, dict[str, Position]] = {}
    unguarded: dict[str, set[str]] = {}
    for path, source, is_expression in templates:
        try:
            names = expression_variables(source) if is_expression else template_variables(source)
        except TemplateProblem as problem:
            kind = "expression" if is_expression else "template"
            report.error(
                f"{kind}-syntax",
                f"{kind} in {_describe_field(path)} does not parse: {problem.message}",
                _line_in_value(agent, path, problem.lineno),
            )
            continue
        sid = str(path[1]) if path[0] == "steps" else ""
        if len(path) > 2 and path[2] == "set":
            # ``set`` values see the step's result, and what its save_as just wrote.
            step = agent.steps[sid]
            names = names - {RESULT, step.save_as or RESULT}
            if step.tool:
                names = names - {TOOL_RESULT}
        step_uses = uses.setdefault(sid, {})
        for name in sorted(names):
            step_uses.setdefault(name, agent.value_at(*path))
        guarded = guarded_variables(source, is_expression) if names else frozenset()
        unguarded.setdefault(sid, set()).update(names - guarded)
    return uses, unguarded


def _templates(agent: Agent) -> Iterator[tuple[Path, str, bool]]:
    if agent.description:
        yield ("description",), agent.description, False
    for step in agent.steps.values():
        for field in TEMPLATE_FIELDS:
            source = getattr(step, field)
            if source:
                yield _step_path(step, field), source, False
        yield from _arg_templates(_step_path(step, "args"), step.args)
        for path, template in schema_templates(step.schema or {}):
            yield _step_path(step, "schema", *path), template, False
        for label, expression in step.when.items():
            yield _step_path(step, "when", label), expression, True
        yield from _arg_templates(_step_path(step, "set"), step.set)
        if step.output_data is not None:
            yield from _arg_templates(_step_path(step, "output"), step.output_data)


def _arg_templates(path: Path, value: Any) -> Iterator[tuple[Path, str, bool]]:
    if isinstance(value, str):
        yield path, value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _arg_templates((*path, key), item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _arg_templates((*path, index), item)


def _describe_field(path: Path) -> str:
    if path[0] == "steps":
        return f"'{'.'.join(str(p) for p in path[2:])}' of step '{path[1]}'"
    return f"'{path[0]}'"


def _line_in_value(agent: Agent, path: Path, lineno: int) -> Position:
    """Map a line inside a template to the file: block scalars start on the next line."""
    mark = agent.source.values.get(path)
    if mark is None:
        return agent.value_at(*path)
    block = mark.style in ("|", ">")
    line = mark.position.line + (lineno - 1) + (1 if block else 0)
    column = mark.position.column if lineno == 1 and not block else 1
    return Position(line, column)


def _reachable(graph: nx.DiGraph, sources: Iterable[str], reverse: bool = False) -> set[str]:
    """Nodes reached from ``sources`` by one edge or more (``reverse``: against the edges)."""
    step = graph.predecessors if reverse else graph.successors
    seen: set[str] = set()
    queue = deque(n for s in sources for n in step(s))
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(step(node))
    return seen


def _check_reachability(agent: Agent, graph: nx.DiGraph, facts: _Facts, report: Reporter) -> None:
    start = agent.start_step
    assert start is not None
    reachable = _reachable(_with_intended_edges(agent, graph, facts), [start]) | {start}
    for step in agent.steps.values():
        if step.id not in reachable:
            report.error(
                "unreachable-step",
                f"step '{step.id}' is unreachable: no path from the start step '{start}' "
                "leads to it; link to it with 'next' or a branch, or delete it",
                agent.key_at(*_step_path(step)),
            )
    for step in agent.steps.values():
        kind = kind_of(step.type)
        if kind and kind.needs_way_out and not step.broken and not step.transitions:
            report.error(
                "dead-end",
                f"{step.type} step '{step.id}' has no way out; add 'next: <step id>'",
                agent.key_at(*_step_path(step)),
            )
    terminals = [s.id for s in agent.steps.values() if _finishes(s)]
    if not terminals:
        report.error(
            "no-terminal",
            "the agent has no terminal step, so no run can finish; "
            "add a step with 'type: terminal'",
            agent.key_at("steps"),
        )
        return
    can_finish = _reachable(graph, terminals, reverse=True) | set(terminals)
    explained = can_finish | {
        s.id for s in agent.steps.values() if s.broken or _has_unknown_target(agent, s)
    }
    for loop in facts.loops:
        if loop[0] in reachable and explained.isdisjoint(loop):
            report.error(
                "cannot-finish",
                f"{_name_steps(loop)} loop forever: no path from "
                f"{'it' if len(loop) == 1 else 'them'} reaches a terminal step; "
                "add a branch that leads out of the loop",
                agent.key_at(*_step_path(agent.steps[loop[0]])),
            )


def _with_intended_edges(agent: Agent, graph: nx.DiGraph, facts: _Facts) -> nx.DiGraph:
    """The graph plus the edges a typo hides: an unknown target read as its closest step
    id, and any step id written in a step that failed the schema (``nxt: finish``).
    Reachability over it reports a step as unreachable only if no fix of an error
    already reported would reach it."""
    extra = []
    for step in agent.steps.values():
        for _, target in step.transitions:
            if target not in agent.steps:
                guess = facts.step_ids.closest(target)
                if guess:
                    extra.append((step.id, guess))
        if step.broken:
            raw = agent.source.data.get("steps", {}).get(step.id)
            extra += [(step.id, t) for t in _strings_in(raw) if t in agent.steps]
    if not extra:
        return graph
    widened = graph.copy()
    widened.add_edges_from(extra)
    return widened


def _strings_in(value: Any, depth: int = 2) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and depth:
        for item in value.values():
            yield from _strings_in(item, depth - 1)


def _has_unknown_target(agent: Agent, step: Step) -> bool:
    return any(target not in agent.steps for _, target in step.transitions)


def _loops(agent: Agent, graph: nx.DiGraph, components: list[set[str]]) -> list[list[str]]:
    order = {sid: i for i, sid in enumerate(agent.steps)}
    loops = []
    for component in components:
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            loops.append(sorted(component, key=order.__getitem__))
    return sorted(loops, key=lambda loop: order[loop[0]])


def _name_steps(ids: list[str], limit: int = 6) -> str:
    if len(ids) == 1:
        return f"step '{ids[0]}' (a self-loop) would"
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"steps {shown}{more}"


def _check_cycles(agent: Agent, facts: _Facts, report: Reporter) -> None:
    if agent.max_steps is not None:
        return  # the run-level guard bounds every loop
    for loop in facts.loops:
        if any(agent.steps[sid].max_visits for sid in loop):
            continue
        subject = _name_steps(loop).removesuffix(" would")
        report.warning(
            "unguarded-cycle",
            f"{subject} form a loop with no guard; set 'max_visits' on one of them, or "
            f"'max_steps' on the agent (without it a run stops after {agent.step_limit} steps)",
            agent.key_at(*_step_path(agent.steps[loop[0]])),
        )


def _writes(step: Step) -> list[str]:
    """The variables a step sets: its ``save_as``, then its ``set`` names."""
    return ([step.save_as] if step.save_as else []) + list(step.set)


def _check_variables(
    agent: Agent,
    graph: nx.DiGraph,
    facts: _Facts,
    uses: dict[str, dict[str, Position]],
    report: Reporter,
    unguarded: dict[str, set[str]] | None,
) -> None:
    """Every variable a step reads: provided by something (else ``undefined-variable``, a
    warning), and, unless guarded, set on every path from the start that reaches the step
    (else ``maybe-undefined``, an error naming such a path). ``unguarded`` is None when
    the start step is unknown (the paths cannot be followed)."""
    always = (
        BUILTIN_VARIABLES
        | set(agent.inputs)
        | {name for name, spec in agent.state.items() if spec.has_default}
    )
    hidden = BUILTIN_VARIABLES | set(agent.inputs) | {TOOL_RESULT}
    providers: dict[str, list[str]] = {}
    for step in agent.steps.values():
        for name in _writes(step):
            providers.setdefault(name, []).append(step.id)
            if name in hidden:
                at = (
                    agent.value_at(*_step_path(step, "save_as"))
                    if name == step.save_as
                    else agent.key_at(*_step_path(step, "set", name))
                )
                report.warning(
                    "shadowed-variable",
                    f"step '{step.id}' saves into '{name}', which hides the "
                    f"{'input' if name in agent.inputs else 'built-in'} "
                    "of that name; pick another name",
                    at,
                )
    writes = {s.id: set(_writes(s)) for s in agent.steps.values()}
    pending = [
        (sid, name, at)
        for sid, names in uses.items()
        for name, at in names.items()
        if name not in always
        # ``tool_result`` is set in a step that calls a tool, for that step's own templates.
        and not (name == TOOL_RESULT and sid and agent.steps[sid].tool)
        # Most uses read what every step just before set: settled without the analysis.
        and not (
            sid
            and sid != agent.start_step
            and any(True for _ in graph.predecessors(sid))
            and all(name in writes[p] for p in graph.predecessors(sid))
        )
    ]
    wanted = {name for _, name, _ in pending}
    bits, saved_before = _saved_before(agent, graph, facts, wanted)
    must = _assigned_before(agent, graph, bits) if unguarded is not None else {}
    known = Vocabulary(sorted(always | set(providers)))
    for sid, name, at in pending:
        where = f"step '{sid}'" if sid else "'description'"
        if saved_before.get(sid, 0) & bits.get(name, 0):
            if (
                unguarded is None
                or not sid
                or name not in unguarded.get(sid, set())
                or sid not in must  # unreachable: reported as such
                or must[sid] & bits[name]
            ):
                continue
            path = _path_missing(agent, graph, sid, name)
            shown = " -> ".join(f"'{p}'" for p in path)
            report.error(
                "maybe-undefined",
                f"{where} uses '{name}', but a run can reach it without setting it: "
                f"{shown}; set it on that path too, give it a default under 'state:', or "
                f"guard the use ({name} is defined, {name} | default(...))",
                at,
            )
            continue
        if name == TOOL_RESULT:
            reason = "it is set only in a step that calls a tool (that tool's result)"
        elif name in providers:
            reason = "no earlier step saves it"
        else:
            reason = "no input, built-in or step's 'save_as' provides it"
            reason += did_you_mean(name, known)
        report.warning("undefined-variable", f"{where} uses '{name}', but {reason}", at)


def _assigned_before(agent: Agent, graph: nx.DiGraph, bit: dict[str, int]) -> dict[str, int]:
    """For each step reachable from the start, the mask of wanted variables that every
    path from the start sets before the step runs (definite assignment: the meet is an
    intersection; a fixed point over a worklist, in file order)."""
    start = agent.start_step
    if not bit or start is None or start not in graph:
        return {}
    full = sum(bit.values())
    sets = {s.id: sum(bit.get(name, 0) for name in set(_writes(s))) for s in agent.steps.values()}
    before: dict[str, int] = {start: 0}
    queue = deque([start])
    queued = {start}
    while queue:
        node = queue.popleft()
        queued.discard(node)
        out = before[node] | sets.get(node, 0)
        for following in graph.successors(node):
            old = before.get(following, full)
            new = 0 if following == start else old & out
            if following not in before or new != old:
                before[following] = new
                if following not in queued:
                    queued.add(following)
                    queue.append(following)
    return before


def _path_missing(agent: Agent, graph: nx.DiGraph, target: str, name: str) -> list[str]:
    """A path from the start to ``target`` on which no step before it sets ``name``."""
    start = agent.start_step
    assert start is not None
    came: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == target and (node != start or came[node] is None):
            break
        if name in _writes(agent.steps[node]) and node != target:
            continue
        for following in graph.successors(node):
            if following not in came:
                came[following] = node
                queue.append(following)
    path: list[str] = []
    at: str | None = target
    while at is not None and at in came:
        path.append(at)
        at = came[at]
    return path[::-1]


def _saved_before(
    agent: Agent, graph: nx.DiGraph, facts: _Facts, wanted: set[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Each wanted variable's bit, and for each step the mask of those that some path may
    have saved before the step runs.

    One pass over the graph's condensation in topological order, with variable sets as
    bit masks: every step of a loop can run after every other, so a loop shares one set.
    """
    bit = {name: 1 << i for i, name in enumerate(sorted(wanted))}
    if not bit:
        return bit, {}
    saves = {s.id: sum(bit.get(n, 0) for n in set(_writes(s))) for s in agent.steps.values()}
    condensed = nx.condensation(graph, scc=facts.components)
    before: dict[int, int] = {}
    out: dict[int, int] = {}
    for component in nx.topological_sort(condensed):
        members = condensed.nodes[component]["members"]
        inside = 0
        for member in members:
            inside |= saves[member]
        incoming = 0
        for predecessor in condensed.predecessors(component):
            incoming |= out[predecessor]
        cyclic = len(members) > 1 or any(graph.has_edge(m, m) for m in members)
        before[component] = incoming | (inside if cyclic else 0)
        out[component] = before[component] | inside
    mapping = condensed.graph["mapping"]
    return bit, {sid: before[mapping[sid]] for sid in agent.steps}


_DOTTED_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.")

MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
"""What a template may call on a mapping: never a misspelt field."""

_UNKNOWN: Any = None
"""A writer whose value's type cannot be known (free text, a set value...)."""


def _check_attributes(
    agent: Agent,
    templates: list[tuple[Path, str, bool]],
    tools: Mapping[str, Tool] | None,
    report: Reporter,
) -> None:
    """``{{ name.field }}`` against what ``name`` holds, where every step that sets it
    says: a tool's declared result, a JSON step's closed output schema, a declared state
    schema. A field none of them has is ``unknown-attribute``, with "did you mean";
    where a writer's type cannot be known (free text), nothing is said."""
    types = _variable_types(agent, tools)
    if not types:
        return
    for path, source, is_expression in templates:
        step = agent.steps.get(str(path[1])) if path[0] == "steps" else None
        local = types
        if step is not None and step.tool:  # a copy only where tool_result is bound
            local = {**types, TOOL_RESULT: [_tool_result(step, tools)]}
        # Parsing is costly: only a template that names a typed variable with a dot.
        if "{" not in source and not is_expression:
            continue
        if local.keys().isdisjoint(_DOTTED_NAME.findall(source)):
            continue
        said: set[str] = set()
        for name, chain, lineno in attribute_reads(source, is_expression):
            schemas = local.get(name)
            if not schemas or any(schema is _UNKNOWN for schema in schemas):
                continue
            misses = [_missing_field(schema, chain) for schema in schemas]
            if any(miss is None for miss in misses):
                continue
            index = min(miss[0] for miss in misses if miss is not None)
            fields = sorted({f for miss in misses if miss and miss[0] == index for f in miss[1]})
            wrong = chain[index]
            read = ".".join((name, *chain[: index + 1]))
            what = ".".join((name, *chain[:index])) if index else name
            where = f"step '{path[1]}'" if step is not None else "'description'"
            if read in said:  # a.b.c and a.b miss at the same field
                continue
            said.add(read)
            report.error(
                "unknown-attribute",
                f"{where} reads '{read}', but {what} has no field '{wrong}'"
                + (did_you_mean(wrong, fields) or "")
                + f" (its fields: {', '.join(fields)})",
                _line_in_value(agent, path, lineno),
            )


def _tool_result(step: Step, tools: Mapping[str, Tool] | None) -> Any:
    if tools is None:
        from flowengine.tools.catalog import available_tools

        tools = available_tools()
    tool = tools.get(step.tool or "")
    if tool is None or tool.result is None:
        return _UNKNOWN
    # A tool step that goes on after a failure keeps {"error": ...} instead.
    return {"anyOf": [tool.result, _ERROR_RESULT]} if step.error_policy != "fail" else tool.result


_ERROR_RESULT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"error": {"type": "string"}},
}


def _variable_types(agent: Agent, tools: Mapping[str, Tool] | None) -> dict[str, list[Any]]:
    """Variable -> the schema each of its writers gives (``_UNKNOWN`` where none can be
    known); a declared state schema is the variable's, whoever writes it."""
    types: dict[str, list[Any]] = {}
    for step in agent.steps.values():
        if step.broken:
            continue
        if step.save_as:
            types.setdefault(step.save_as, []).append(_saved_type(step, tools))
        for name in step.set:
            types.setdefault(name, []).append(_UNKNOWN)
    for name in agent.inputs:
        types[name] = [_UNKNOWN]
    for name, spec in agent.state.items():
        if spec.schema is not None:
            types[name] = [spec.schema]
        elif name in types or spec.has_default:
            types[name] = [_UNKNOWN]
    for name in BUILTIN_VARIABLES | {TOOL_RESULT}:
        types.pop(name, None)
    return {name: found for name, found in types.items() if _UNKNOWN not in found}


def _saved_type(step: Step, tools: Mapping[str, Tool] | None) -> Any:
    if step.tool:
        return _tool_result(step, tools)  # save_as keeps the tool's result
    if step.format == "json" and step.schema is not None and step.type in ("process", "input"):
        return step.schema
    return _UNKNOWN


def _missing_field(schema: Any, chain: tuple[str, ...]) -> tuple[int, list[str]] | None:
    """Where ``chain`` leaves what ``schema`` allows: (index of the field, the fields
    there); None when it does not, or when the schema does not close its fields."""
    node = schema
    for index, field in enumerate(chain):
        if not isinstance(node, dict):
            return None
        options = node.get("anyOf")
        if isinstance(options, list):
            misses = [_missing_field(option, chain[index:]) for option in options]
            if any(miss is None for miss in misses):
                return None
            fields = sorted({f for miss in misses if miss and miss[0] == 0 for f in miss[1]})
            first = min(miss[0] for miss in misses if miss is not None)
            return (index + first, fields)
        properties = node.get("properties")
        closed = node.get("additionalProperties") is False
        if node.get("type") not in (None, "object") or not isinstance(properties, dict):
            return None
        if field in properties:
            node = properties[field]
            continue
        if not closed or field in MAPPING_METHODS:
            return None
        return (index, sorted(properties))
    return None


def known_fields(
    agent: Agent,
    variable: str,
    chain: tuple[str, ...] = (),
    step_id: str | None = None,
    tools: Mapping[str, Tool] | None = None,
) -> list[str]:
    """The fields ``variable.chain...`` can have where its type is known (the language
    server completes them); empty where it is not (free text, an open object)."""
    types = _variable_types(agent, tools)
    step = agent.steps.get(step_id or "")
    if step is not None and step.tool:
        types[TOOL_RESULT] = [_tool_result(step, tools)]
    found: set[str] = set()
    for schema in types.get(variable, []):
        found.update(_fields_at(schema, chain))
    return sorted(found)


def _fields_at(schema: Any, chain: tuple[str, ...]) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    if isinstance(schema.get("anyOf"), list):
        return {f for option in schema["anyOf"] for f in _fields_at(option, chain)}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return set()
    if not chain:
        return set(properties)
    return _fields_at(properties.get(chain[0]), chain[1:])
