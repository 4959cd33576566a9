"""Jinja2 templates and ``when:`` expressions: the sandboxed environment and static parsing."""

from __future__ import annotations

import contextvars
import functools
import operator
import re
from collections.abc import Callable
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.errors import FlowengineError

MAX_SIZE = 100_000
"""The largest number a template may pass to a filter or ``range``, and the longest string
or list its ``*``, ``**`` and ``%`` may build; a prompt never needs more."""
LOOP_BUDGET = 100_000
"""``range`` items one render may produce in all, so nested loops cannot multiply."""
# Globals that build objects (cycler, joiner, namespace) or text on demand (lipsum) are not
# needed by prompts, so they are not offered at all.
ALLOWED_GLOBALS = ("dict",)
_loop_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("loop_budget")


class TemplateProblem(FlowengineError):
    """A template or expression that cannot be parsed; ``lineno`` is 1-based in its text."""

    code = "template-syntax"

    def __init__(self, message: str, lineno: int = 1) -> None:
        super().__init__(message)
        self.lineno = lineno


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with limits on what one render may compute.

    The sandbox already refuses ``_``-attributes, ``str.format`` tricks and mutation; these
    limits stop a template from hanging or filling memory (``range`` in nested loops,
    ``"x" * 10**9``, ``9 ** 9 ** 9``, ``center(10**9)``)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                _check_size(left.bit_length() * right, "the power (in bits)")
            return left**right
        if op == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    _check_size(len(sequence) * count, "the repeated text or list")
            return left * right
        if isinstance(left, str):
            _check_size(sum(int(n) for n in re.findall(r"\d+", left)), "the % format")
        return operator.mod(left, right)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise SecurityError(f"{what} would be {size:,} long; templates are limited to {MAX_SIZE:,}")


def _bounded_range(*args: int) -> range:
    items = range(*args)
    budget = _loop_budget.get(None) or [LOOP_BUDGET]
    budget[0] -= len(items)
    if len(items) > MAX_SIZE or budget[0] < 0:
        raise SecurityError(
            f"range() would loop more than {LOOP_BUDGET:,} times in one template; "
            "templates are not for long computations"
        )
    return items


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value comes first, after the context or environment if it takes one.
    skip = 2 if getattr(function, "jinja_pass_arg", None) else 1

    @functools.wraps(function)  # also copies jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[skip:], *kwargs.values()):
            if _is_number(value) and abs(value) > MAX_SIZE:
                raise SecurityError(
                    f"filter '{function.__name__}' got {value}; numbers given to filters are "
                    f"limited to {MAX_SIZE:,}"
                )
        return function(*args, **kwargs)

    return bounded


@functools.cache
def environment() -> BoundedSandbox:
    """The one environment templates are parsed and rendered in: sandboxed, strict, bounded.

    Built once and shared (it is never changed after this, and Jinja2 environments are
    safe to use from several threads)."""
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals = {name: env.globals[name] for name in ALLOWED_GLOBALS}
    env.globals["range"] = _bounded_range
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    return env


@functools.lru_cache(maxsize=1024)
def compiled_template(source: str) -> Template:
    """``source`` compiled once: a run renders the same step templates at every visit."""
    return environment().from_string(source)


@functools.lru_cache(maxsize=1024)
def compiled_expression(source: str) -> TemplateExpression:
    """A ``when:`` expression or a lone ``{{ x }}`` tool argument, compiled once."""
    return environment().compile_expression(source, undefined_to_none=False)


def render_bounded(render: Callable[[], Any]) -> Any:
    """Run one render (or expression) with a fresh ``range`` budget."""
    token = _loop_budget.set([LOOP_BUDGET])
    try:
        return render()
    finally:
        _loop_budget.reset(token)


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


_REMOVED_GLOBALS = frozenset({"cycler", "joiner", "namespace", "lipsum"})


def _checked_variables(tree: nodes.Template) -> frozenset[str]:
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
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateProblem(f"unknown {what} '{node.name}'", node.lineno)
    return frozenset(meta.find_undeclared_variables(tree))
