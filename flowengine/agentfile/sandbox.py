"""The bounded Jinja2 sandbox: what a template may call, and how much one render may build.

Every string- or list-building operation available to a template is checked BEFORE it
allocates: a render never holds a value whose text would exceed ``MAX_SIZE`` characters
(a fixed multiple of it in bytes), loops and calls are counted, and a render that runs
longer than ``RENDER_SECONDS`` of CPU time stops. Callables are an allowlist: the methods below on
plain data, ``range`` and ``dict``, and the filters in ``FILTER_RULES``.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import operator
import re
import string
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, TemplateReference
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

MAX_SIZE = 100_000
"""The longest text (in characters) or list any value in a render may have, and the
largest number a filter or ``range`` may be given; a prompt never needs more."""
LOOP_BUDGET = 100_000
"""``range`` items one render may produce in all, so nested loops cannot multiply."""
PRINT_BUDGET = 10 * MAX_SIZE
"""Characters one render may print through ``{{ }}`` in all, macros and blocks included (a
block's pieces are held until it ends, so they are counted as they are printed)."""
STEP_BUDGET = 1_000_000
"""Loop iterations, calls and filter applications one render may make in all."""
RENDER_SECONDS = 0.25
"""CPU time one render may take (its thread's, so a busy machine or other runs' threads
waiting for the GIL never fail an ordinary template); checked at every loop iteration,
call, filter and output piece."""

# Methods a template may call on plain data; any other callable attribute is refused.
_STR_METHOD_NAMES = (
    "capitalize casefold center count endswith expandtabs find format format_map index "
    "isalnum isalpha isascii isdecimal isdigit isidentifier islower isnumeric isprintable "
    "isspace istitle isupper join ljust lower lstrip partition removeprefix removesuffix "
    "replace rfind rindex rjust rpartition rsplit rstrip split splitlines startswith strip "
    "swapcase title upper zfill"
)
STR_METHODS = frozenset(_STR_METHOD_NAMES.split())
ALLOWED_METHODS: dict[type, frozenset[str]] = {
    str: STR_METHODS,
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    LoopContext: frozenset({"cycle", "changed"}),
}


@dataclass
class _Budget:
    deadline: float
    ranges: int = LOOP_BUDGET
    steps: int = STEP_BUDGET
    printed: int = PRINT_BUDGET


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("render_budget")


def render_bounded(render: Callable[[], Any]) -> Any:
    """Run one render (or expression) with a fresh budget of time, loops and calls."""
    token = _budget.set(_Budget(time.thread_time() + RENDER_SECONDS))
    try:
        return render()
    finally:
        _budget.reset(token)


def _tick(count: int = 1) -> None:
    budget = _budget.get(None)
    if budget is None:  # a render outside render_bounded (tests of the environment alone)
        return
    budget.steps -= count
    if budget.steps < 0:
        raise SecurityError(
            f"the template made more than {STEP_BUDGET:,} loop iterations, calls or filter "
            "uses; templates are not for long computations"
        )
    if time.thread_time() > budget.deadline:
        raise SecurityError(
            f"the template computed for longer than {RENDER_SECONDS} s; templates are not for "
            "long computations"
        )


def check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise SecurityError(f"{what} would be {size:,} long; templates are limited to {MAX_SIZE:,}")


# -- measuring values before they are turned into text ----------------------------------

_SEQUENCES = (list, tuple, KeysView, ValuesView, ItemsView)  # dict views print as lists


def text_size(value: Any, undefined_ok: bool = False) -> int:
    """About how long ``str(value)`` is (a fixed multiple at most), counting only until it
    passes ``MAX_SIZE``, so the cost is bounded even for a list holding itself 10^5 times.

    Raises for anything that is not plain data (functions, generators, runtime objects),
    whose text would show a memory address, and for an undefined value unless
    ``undefined_ok`` (a filter such as ``default`` is given one on purpose)."""
    total = 0
    pending: list[Any] = [value]
    while pending and total <= MAX_SIZE:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)  # quotes and commas are counted by the container
        elif item is None or isinstance(item, (bool, float)):
            total += 8
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, _SEQUENCES):
            total += 2 * len(item) + 2
            pending.extend(item)
        elif isinstance(item, dict):
            total += 4 * len(item) + 2
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, range):
            total += 32
        elif isinstance(item, Undefined):
            if not undefined_ok:
                item._fail_with_undefined_error()
            total += 16
        else:
            raise SecurityError(
                f"a {type(item).__name__} is not data a template can print or pass on"
                + (" (add '|list')" if isinstance(item, Iterator) else "")
            )
    return total


def checked_text(value: Any) -> Any:
    """``value`` if its text fits the limit (the environment's ``finalize``)."""
    _tick()
    size = len(value) if isinstance(value, str) else text_size(value)
    check_size(size, "the printed text")
    budget = _budget.get(None)
    if budget is not None:
        budget.printed -= size
        if budget.printed < 0:
            raise SecurityError(
                f"the template printed more than {PRINT_BUDGET:,} characters in all (loops and "
                f"macros included); templates are limited to {MAX_SIZE:,} of output"
            )
    return value


def plain_data(value: Any) -> Any:
    """``value`` as JSON data (tuples become lists), or SecurityError saying why it is not.

    Tool arguments pass through here: a nested undefined name raises its own error."""
    check_size(text_size(value), "the value")
    return _to_data(value)


MAX_INT_BITS = 13_000
"""About 3,900 digits: Python refuses to write an integer of more than 4,300 as text
(so as JSON, or into a row), which would fail a run after its step had changed state."""


def _to_data(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise SecurityError(
                f"a whole number of {value.bit_length():,} bits is too large to keep; "
                f"values are limited to about {MAX_INT_BITS * 3 // 10:,} digits"
            )
        return value
    if value is None or isinstance(value, (str, bool)):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SecurityError(f"{value} is not a JSON number")
        return value
    if isinstance(value, _SEQUENCES):
        return [_to_data(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise SecurityError("a mapping with keys that are not text is not JSON data")
        return {key: _to_data(item) for key, item in value.items()}
    raise SecurityError(f"a {type(value).__name__} is not JSON data (add '|list')")


def _materialized(value: Any) -> Any:
    """A one-shot iterator (``map``, ``select``) as a list, measured item by item as it is
    drawn, so ``items|map('center', 99999)|list`` stops at the limit, not after."""
    if not isinstance(value, Iterator) or isinstance(value, str):
        return value
    items = []
    total = 0
    for item in value:
        _tick()
        total += text_size(item, undefined_ok=True) + 2
        check_size(total, "the list")
        items.append(item)
    return items


# -- size estimates for the operations that build text -----------------------------------

_PERCENT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])", re.ASCII
)


def _largest_argument(arguments: Iterable[Any]) -> int:
    return max((text_size(argument) for argument in arguments), default=0)


def percent_size(text: str, arguments: Any) -> int:
    """An upper estimate of ``text % arguments``: each field at most its width, precision
    and the longest argument."""
    if isinstance(arguments, Mapping):
        values: list[Any] = list(arguments.values())
    elif isinstance(arguments, tuple):
        values = list(arguments)
    else:
        values = [arguments]
    widest = _largest_argument(values)
    size = len(text)
    for width, precision, kind in _PERCENT_SPEC.findall(text):
        if "*" in (width, precision):
            raise SecurityError("'*' widths in % formats are not allowed; write the number")
        if kind != "%":
            size += int(width or 0) + int(precision or 0) + widest
        if size > MAX_SIZE:
            break
    return size


def format_size(text: str, arguments: Iterable[Any]) -> int:
    """An upper estimate of ``text.format(...)``: literal text, and each field at most the
    numbers in its format spec and the longest argument."""
    widest = _largest_argument(arguments)
    size = 0
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return len(text)  # str.format will raise the same error without building anything
    for literal, field, spec, _conversion in fields:
        size += len(literal)
        if field is None:
            continue
        if spec and "{" in spec:
            raise SecurityError("nested '{}' in a format spec are not allowed; write the number")
        size += widest + sum(int(number) for number in re.findall(r"\d+", spec or ""))
        if size > MAX_SIZE:
            break
    return size


def replace_size(text: str, old: str, new: str, count: int | None = None) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def join_size(separator: str, items: list[Any]) -> int:
    return len(separator) * max(len(items) - 1, 0) + text_size(items)


def _bounded_str_method(method: Any) -> Callable[..., Any] | None:
    """A size-checked stand-in for a str method that can build a longer string."""
    text: str = method.__self__
    name: str = method.__name__

    def estimate(*args: Any, **kwargs: Any) -> int:
        if name in ("center", "ljust", "rjust", "zfill"):
            width = args[0] if args else kwargs.get("width", 0)
            return max(len(text), width if isinstance(width, int) else 0)
        if name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            return len(text) + text.count("\t") * max(size if isinstance(size, int) else 0, 0)
        if name == "replace":
            old, new = [*args, kwargs.get("old", ""), kwargs.get("new", "")][:2]
            count = args[2] if len(args) > 2 else kwargs.get("count")
            if isinstance(old, str) and isinstance(new, str):
                return replace_size(text, old, new, count if isinstance(count, int) else None)
            return len(text)
        raise AssertionError(name)

    if name not in ("center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join"):
        return None

    @functools.wraps(method)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name == "join":
            items = list(_materialized(args[0])) if args else []
            check_size(join_size(text, items), f"the result of str.{name}")
            return method(items)
        check_size(estimate(*args, **kwargs), f"the result of str.{name}")
        return method(*args, **kwargs)

    return bounded


# -- ranges, loops and the output ----------------------------------------------------------


def bounded_range(*args: int) -> range:
    items = range(*args)
    budget = _budget.get(None) or _Budget(float("inf"))
    budget.ranges -= len(items)
    if len(items) > MAX_SIZE or budget.ranges < 0:
        raise SecurityError(
            f"range() would loop more than {LOOP_BUDGET:,} times in one template; "
            "templates are not for long computations"
        )
    return items


def guarded_loop(iterable: Any) -> Iterator[Any]:
    """What a template's ``for`` loop iterates: counted and timed, item by item."""
    if isinstance(iterable, Undefined):
        iterable._fail_with_undefined_error()
    # A generator is drawn into a measured list first: ``loop.length`` would list it anyway.
    for item in _materialized(iterable):
        _tick()
        yield item


def bounded_concat(pieces: Iterable[str]) -> str:
    """Join a render's output pieces, failing once they pass the limit (not after)."""
    total = 0
    kept = []
    for piece in pieces:
        _tick()
        total += len(piece)
        check_size(total, "the rendered text")
        kept.append(piece)
    return "".join(kept)


def bounded_str_join(values: Iterable[Any]) -> str:
    """The ``~`` operator: each side measured before it becomes text."""
    return bounded_concat(str(checked_text(value)) for value in values)


class BoundedCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with every ``for`` loop counted and ``~`` size-checked."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        guarded = copy.copy(node)  # the iterable, as environment.guarded_loop(iterable)
        loop = nodes.EnvironmentAttribute("guarded_loop", lineno=node.lineno)
        guarded.iter = nodes.Call(loop, [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(guarded, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_str_join((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


# -- filters: an allowlist, each measured before it runs --------------------------------


def _filter_estimate(name: str, values: list[Any], kwargs: dict[str, Any]) -> int:
    """The size a text-building filter would produce, from its (measured) arguments."""
    value = values[0] if values else ""
    text = value if isinstance(value, str) else ""
    if name == "format":
        return percent_size(text, tuple(values[1:]) if len(values) > 1 else kwargs)
    if name == "join":
        separator = values[1] if len(values) > 1 else kwargs.get("d", "")
        items = list(value) if isinstance(value, (list, tuple, str, dict)) else []
        return join_size(str(separator), items)
    if name == "replace":
        old, new = [*values[1:3], "", ""][:2]
        count = values[3] if len(values) > 3 else kwargs.get("count")
        return replace_size(str(value), str(old), str(new), count)
    if name == "indent":
        width = values[1] if len(values) > 1 else kwargs.get("width", 4)
        prefix = len(width) if isinstance(width, str) else int(width)
        return len(str(value)) + (str(value).count("\n") + 1) * prefix
    if name == "wordwrap":
        width = values[1] if len(values) > 1 else kwargs.get("width", 79)
        wrap = values[3] if len(values) > 3 else kwargs.get("wrapstring")
        lines = len(text.split()) + text.count("\n") + len(text) // max(int(width), 1) + 1
        return len(text) + lines * len(wrap or "\n")
    return 0


# Filters a template may use: no ``urlize``/``xmlattr`` (HTML), nothing that reaches files.
_FILTER_NAMES = (
    "abs attr batch capitalize center count d default dictsort e escape filesizeformat first "
    "float forceescape format groupby indent int items join last length list lower map max "
    "min pprint random reject rejectattr replace reverse round safe select selectattr slice "
    "sort string striptags sum title tojson trim truncate unique upper urlencode wordcount "
    "wordwrap"
)
FILTER_RULES = frozenset(_FILTER_NAMES.split())
_TEXT_BUILDERS = frozenset({"format", "join", "replace", "indent", "wordwrap"})


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value comes first, after the context or environment if it takes one.
    skip = 1 if getattr(function, "jinja_pass_arg", None) else 0

    @functools.wraps(function)  # also copies jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        passed, values = list(args[:skip]), [_materialized(v) for v in args[skip:]]
        kwargs = {key: _materialized(v) for key, v in kwargs.items()}
        for index, value in enumerate((*values, *kwargs.values())):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # The filtered value may be any number; a number given to a filter is a
                # width, count or precision.
                if index and abs(value) > MAX_SIZE:
                    raise SecurityError(
                        f"filter '{name}' got {value}; numbers given to filters are "
                        f"limited to {MAX_SIZE:,}"
                    )
            else:
                check_size(text_size(value, undefined_ok=True), f"the input of filter '{name}'")
        if name in _TEXT_BUILDERS:
            check_size(_filter_estimate(name, values, kwargs), f"the result of filter '{name}'")
        return function(*passed, *values, **kwargs)

    return bounded


# -- the environment --------------------------------------------------------------------------


class _DataFormatter(SandboxedFormatter):
    """Jinja2's sandboxed ``str.format``, which also refuses to print what is not data
    (``'{0.upper}'.format(x)`` would show a method and its memory address)."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        text_size(value)
        return super().format_field(value, format_spec)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with an allowlist of callables and limits on each render.

    The sandbox already refuses ``_``-attributes, ``str.format`` tricks and mutation; these
    limits stop a template from hanging or filling memory (``range`` in nested loops,
    ``"x" * 10**9``, ``9 ** 9 ** 9``, ``"%99999999s" % 1``, ``center(10**9)``)."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(bounded_concat)
    guarded_loop = staticmethod(guarded_loop)
    bounded_str_join = staticmethod(bounded_str_join)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if not callable(value):
            return True
        for kind, names in ALLOWED_METHODS.items():
            if isinstance(obj, kind):
                return attr in names
        # A block of the template itself ({{ self.body() }}) is the only other callable.
        return isinstance(obj, TemplateReference)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:  # not str.format or str.format_map
            if callable(value) and isinstance(getattr(value, "__self__", None), str):
                return _bounded_str_method(value)
            return None
        text: str = value.__self__
        is_map = value.__name__ == "format_map"
        formatter = _DataFormatter(self)

        @functools.wraps(value)
        def bounded(*args: Any, **kwargs: Any) -> str:
            _tick()
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                positional: tuple[Any, ...] = ()
                named: Mapping[str, Any] = args[0]
            else:
                positional, named = args, kwargs
            given = [*positional, *named.values()]
            check_size(format_size(text, given), "the result of str.format")
            return type(text)(formatter.vformat(text, positional, named))

        return bounded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        if isinstance(getattr(__obj, "__self__", None), str):  # e.g. from x|attr('ljust')
            __obj = __self.wrap_str_format(__obj) or __obj
        # dict(...) or a macro would draw a generator argument in full: measure it first.
        args = tuple(_materialized(argument) for argument in args)
        kwargs = {name: _materialized(argument) for name, argument in kwargs.items()}
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        _tick()
        if op == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                check_size(left.bit_length() * right, "the power (in bits)")
            return left**right
        if op == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    check_size(len(sequence) * count, "the repeated text or list")
            return left * right
        if op == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                check_size(len(left) + len(right), "the joined text or list")
            return left + right
        if isinstance(left, str):
            check_size(percent_size(left, right), "the % format")
        return operator.mod(left, right)
