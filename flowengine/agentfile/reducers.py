"""Reducers: how a new value written to a declared state variable combines with its
current one (LangGraph's per-key reducers, Step Functions' Assign).

A reducer is one of the names below, or a Jinja2 expression over ``current`` and
``value`` (``"current + [value] if value not in current else current"``). ``combine``
applies a named one; the runtime evaluates an expression one in its sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REDUCERS: dict[str, str] = {
    "replace": "the new value replaces the current one (the default)",
    "append": "the new value is added at the end of the list",
    "extend": "the new value's items (a list) are added at the end of the list",
    "merge": "the new value's keys (a mapping) are merged into the mapping",
    "add": "the new value (a number) is added to the number",
    "max": "the larger of the two is kept",
    "min": "the smaller of the two is kept",
}
"""The named reducers, with what each does (README's table; ``flowengine lsp`` hover)."""

REDUCER_VARIABLES = frozenset({"current", "value"})
"""The names an expression reducer may read."""

UNSET: Any = object()
"""``current`` for a variable no step has set and that declares no default."""


class ReducerError(ValueError):
    """A value a reducer cannot combine (appending to a number, merging a list...)."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _append(current: Any, value: Any) -> Any:
    if current is UNSET or current is None:
        return [value]
    if not isinstance(current, list):
        raise ReducerError(
            f"'append' needs a list to append to, and the variable holds {_kind(current)}"
        )
    return [*current, value]


def _extend(current: Any, value: Any) -> Any:
    if not isinstance(value, list):
        raise ReducerError(f"'extend' needs a list of items to add, and got {_kind(value)}")
    if current is UNSET or current is None:
        return list(value)
    if not isinstance(current, list):
        raise ReducerError(
            f"'extend' needs a list to extend, and the variable holds {_kind(current)}"
        )
    return [*current, *value]


def _merge(current: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ReducerError(f"'merge' needs a mapping to merge in, and got {_kind(value)}")
    if current is UNSET or current is None:
        return dict(value)
    if not isinstance(current, dict):
        raise ReducerError(
            f"'merge' needs a mapping to merge into, and the variable holds {_kind(current)}"
        )
    return {**current, **value}


def _arithmetic(name: str, how: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def reduce(current: Any, value: Any) -> Any:
        if not _number(value):
            raise ReducerError(f"'{name}' needs a number, and got {_kind(value)}")
        if current is UNSET or current is None:
            return value
        if not _number(current):
            raise ReducerError(f"'{name}' needs a number, and the variable holds {_kind(current)}")
        return how(current, value)

    return reduce


_NAMED: dict[str, Callable[[Any, Any], Any]] = {
    "replace": lambda current, value: value,
    "append": _append,
    "extend": _extend,
    "merge": _merge,
    "add": _arithmetic("add", lambda a, b: a + b),
    "max": _arithmetic("max", max),
    "min": _arithmetic("min", min),
}


def is_named(reducer: str) -> bool:
    return reducer in _NAMED


def combine(reducer: str, current: Any, value: Any) -> Any:
    """The variable's new value under the named ``reducer`` (``current`` may be UNSET)."""
    return _NAMED[reducer](current, value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _number(value):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
