"""Jinja2 templates and ``when:`` expressions: the sandboxed environment and static parsing."""

from __future__ import annotations

import functools
import re

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.defaults import DEFAULT_NAMESPACE
from jinja2.environment import TemplateExpression
from jinja2.parser import Parser

from flowengine.agentfile.sandbox import (
    FILTER_RULES,
    LOOP_BUDGET,
    MAX_SIZE,
    RENDER_SECONDS,
    STEP_BUDGET,
    BoundedSandbox,
    bounded_filter,
    bounded_range,
    checked_text,
    plain_data,
    render_bounded,
)
from flowengine.errors import FlowengineError

__all__ = [
    "LOOP_BUDGET",
    "MAX_SIZE",
    "RENDER_SECONDS",
    "STEP_BUDGET",
    "TemplateProblem",
    "attribute_reads",
    "compiled_expression",
    "compiled_template",
    "environment",
    "expression_variables",
    "guarded_variables",
    "parsed_template_variables",
    "plain_data",
    "render_bounded",
    "template_variables",
]

# Globals that build objects (cycler, joiner, namespace) or text on demand (lipsum) are not
# needed by prompts, so they are not offered at all.
ALLOWED_GLOBALS = ("dict",)


class TemplateProblem(FlowengineError):
    """A template or expression that cannot be parsed; ``lineno`` is 1-based in its text."""

    code = "template-syntax"

    def __init__(self, message: str, lineno: int = 1) -> None:
        super().__init__(message)
        self.lineno = lineno


@functools.cache
def environment() -> BoundedSandbox:
    """The one environment templates are parsed and rendered in: sandboxed, strict, bounded.

    Built once and shared (it is never changed after this, and Jinja2 environments are
    safe to use from several threads)."""
    env = BoundedSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=checked_text,
    )
    env.globals = {name: env.globals[name] for name in ALLOWED_GLOBALS}
    env.globals["range"] = bounded_range
    env.filters = {
        name: bounded_filter(name, function)
        for name, function in env.filters.items()
        if name in FILTER_RULES
    }
    return env


@functools.lru_cache(maxsize=1024)
def compiled_template(source: str) -> Template:
    """``source`` compiled once: a run renders the same step templates at every visit."""
    return environment().from_string(source)


@functools.lru_cache(maxsize=1024)
def compiled_expression(source: str) -> TemplateExpression:
    """A ``when:`` expression or a lone ``{{ x }}`` tool argument, compiled once."""
    return environment().compile_expression(source, undefined_to_none=False)


# ``{{ name }}`` or ``{{ name.attr }}``, not glued to another brace; ``_`` attributes go
# through the parser, which refuses them.
_SIMPLE_SUBSTITUTION = re.compile(
    r"(?<!\{)\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z][A-Za-z0-9_]*)*\s*-?\}\}"
)
_EXPRESSION_WORDS = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None"}
)


def template_variables(source: str) -> frozenset[str]:
    """Names a template reads from its context; raises TemplateProblem if it does not parse.

    Plain text and text with only ``{{ name }}`` substitutions (most prompts) are read
    without the Jinja2 parser, which is a hundred times slower; tests check that both
    ways agree.
    """
    if "{" not in source:
        return frozenset()
    names = _SIMPLE_SUBSTITUTION.findall(source)
    rest = _SIMPLE_SUBSTITUTION.sub("", source)
    if (
        not any(tag in rest for tag in ("{{", "{%", "{#"))
        and _EXPRESSION_WORDS.isdisjoint(names)
        and _REMOVED_GLOBALS.isdisjoint(names)  # refused below, with a line
    ):
        return frozenset(names)
    return parsed_template_variables(source)


def parsed_template_variables(source: str) -> frozenset[str]:
    """``template_variables`` through the Jinja2 parser, always."""
    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or "syntax error", exc.lineno or 1) from None
    except RecursionError:
        raise TemplateProblem("the template is nested too deeply") from None
    return _checked_variables(tree)


def guarded_variables(source: str, is_expression: bool = False) -> frozenset[str]:
    """Names the template reads only under a guard somewhere: the subject of an
    ``is defined``/``is undefined`` test or of a ``default`` filter. Such a read does not
    need the variable set on every path (the definite-assignment check skips it). Empty
    when the source does not parse (its syntax error is reported elsewhere)."""
    if "defined" not in source and "default" not in source and "d(" not in source:
        return frozenset()
    try:
        tree = _expression_tree(source) if is_expression else environment().parse(source)
    except (TemplateSyntaxError, TemplateProblem, RecursionError):
        return frozenset()
    found = set()
    for node in tree.find_all((nodes.Test, nodes.Filter)):
        guard = (
            node.name in ("defined", "undefined")
            if isinstance(node, nodes.Test)
            else node.name in ("default", "d")
        )
        if guard and isinstance(node.node, nodes.Name):
            found.add(node.node.name)
    return frozenset(found)


def attribute_reads(
    source: str, is_expression: bool = False
) -> list[tuple[str, tuple[str, ...], int]]:
    """``(name, (attr, ...), line)`` for each ``name.attr.attr`` the template reads of a
    variable from its context (not of a loop or ``set`` variable). Empty when it does not
    parse (its syntax error is reported elsewhere)."""
    if "." not in source:
        return []
    try:
        tree = _expression_tree(source) if is_expression else environment().parse(source)
    except (TemplateSyntaxError, TemplateProblem, RecursionError):
        return []
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: dict[tuple[str, tuple[str, ...]], int] = {}
    for node in tree.find_all(nodes.Getattr):
        chain: list[str] = []
        inner: nodes.Node = node
        while isinstance(inner, nodes.Getattr):
            chain.append(inner.attr)
            inner = inner.node
        if isinstance(inner, nodes.Name) and inner.ctx == "load" and inner.name not in local:
            found.setdefault((inner.name, tuple(reversed(chain))), node.lineno)
    return [(name, chain, line) for (name, chain), line in found.items()]


def _expression_tree(source: str) -> nodes.Template:
    env = environment()
    parser = Parser(env, source, state="variable")
    return nodes.Template([nodes.Output([parser.parse_expression()])], lineno=1)


def expression_variables(source: str) -> frozenset[str]:
    """Names a ``when:`` expression reads; raises TemplateProblem if it does not parse."""
    env = environment()
    try:
        parser = Parser(env, source, state="variable")
        expression = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateProblem(f"unexpected '{token.value}' after the expression", token.lineno)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or "syntax error", exc.lineno or 1) from None
    except RecursionError:
        raise TemplateProblem("the expression is nested too deeply") from None
    tree = nodes.Template([nodes.Output([expression])], lineno=1)
    tree.set_environment(env)
    return _checked_variables(tree)


# Every global Jinja2 offers except the ones kept (cycler, joiner, namespace, lipsum).
_REMOVED_GLOBALS = frozenset(DEFAULT_NAMESPACE) - {"range", *ALLOWED_GLOBALS}
_OTHER_TEMPLATES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _checked_variables(tree: nodes.Template) -> frozenset[str]:
    # A long chain such as 1 + 1 + ... parses in a loop but makes a deep tree, which
    # Jinja2 walks recursively.
    try:
        return _walk_checked(tree)
    except RecursionError:
        raise TemplateProblem("the template is nested too deeply") from None


def _walk_checked(tree: nodes.Template) -> frozenset[str]:
    env = environment()
    for found in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(found, nodes.Getattr):
            name: object = found.attr
        else:
            name = getattr(getattr(found, "arg", None), "value", "")
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateProblem(
                f"'{name}' is not allowed: names starting with '_' are private to Python",
                found.lineno,
            )
    # The sandbox would refuse these at run time too; refusing them here tells the author
    # at validate time, with a line, instead of failing a run halfway.
    for filtered in tree.find_all(nodes.Filter):
        named = filtered.args[0] if filtered.name == "attr" and filtered.args else None
        if isinstance(named, nodes.Const) and str(named.value).startswith("_"):
            raise TemplateProblem(
                f"'{named.value}' is not allowed: names starting with '_' are private to Python",
                filtered.lineno,
            )
    for keyword in tree.find_all(nodes.Keyword):  # dict(__class__=1)|first spells a name
        if keyword.key.startswith("_"):
            raise TemplateProblem(
                f"'{keyword.key}' is not allowed: names starting with '_' are private to Python",
                keyword.lineno,
            )
    for constant in tree.find_all(nodes.Const):
        if isinstance(constant.value, str) and "__" in constant.value:
            raise TemplateProblem(
                "a string inside '{{ }}' may not contain '__': it is how format-string tricks"
                " reach Python internals",
                constant.lineno,
            )
    for used in tree.find_all(nodes.Name):
        if used.name in _REMOVED_GLOBALS and used.ctx == "load":
            raise TemplateProblem(
                f"'{used.name}' is not available in templates; use plain loops and variables",
                used.lineno,
            )
    for other in tree.find_all(_OTHER_TEMPLATES):
        raise TemplateProblem(
            "templates cannot include, import or extend other templates; put the text in this one",
            other.lineno,
        )
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateProblem(f"unknown {what} '{node.name}'", node.lineno)
    return frozenset(meta.find_undeclared_variables(tree))
