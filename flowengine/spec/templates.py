"""Jinja2 templates and ``when:`` expressions: the sandboxed environment and static parsing."""

from __future__ import annotations

import functools
import re

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateProblem(Exception):
    """A template or expression that cannot be parsed; ``lineno`` is 1-based in its text."""

    def __init__(self, message: str, lineno: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.lineno = lineno


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one environment templates are parsed and rendered in: sandboxed, strict."""
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


# ``{{ name }}`` or ``{{ name.attr }}``, not glued to another brace.
_SIMPLE_SUBSTITUTION = re.compile(
    r"(?<!\{)\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*\s*-?\}\}"
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
    if not any(tag in rest for tag in ("{{", "{%", "{#")) and _EXPRESSION_WORDS.isdisjoint(names):
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


def _checked_variables(tree: nodes.Template) -> frozenset[str]:
    env = environment()
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateProblem(f"unknown {what} '{node.name}'", node.lineno)
    return frozenset(meta.find_undeclared_variables(tree))
