"""Type name -> step kind: the one place every part of flowengine asks what a kind means.

Kinds come from the entry-point group ``flowengine.steps``, as tools come from
``flowengine.tools``: flowengine's own four are declared in its ``pyproject.toml``, and an
installed package may add more::

    [project.entry-points."flowengine.steps"]
    echo = "flowengine_echo:KIND"

The object named is a :class:`~flowengine.steps.base.StepKind` instance, or a subclass of
it (instantiated without arguments). A plugin that fails to load, gives something else, or
names a kind that already exists is skipped with a one-line warning on the
``flowengine.steps`` logger (printed to stderr when logging is not configured); the
built-in kinds always win.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata
from typing import Any

from flowengine.steps.base import StepKind

GROUP = "flowengine.steps"
DISTRIBUTION = "flowengine"

BUILTIN_ENTRY_POINTS = {
    "process": "flowengine.steps.process:KIND",
    "decision": "flowengine.steps.decision:KIND",
    "terminal": "flowengine.steps.terminal:KIND",
    "input": "flowengine.steps.input:KIND",
    "set": "flowengine.steps.set:KIND",
}
"""flowengine's own kinds, in the order the schema and the drawings list them, as
``pyproject.toml`` declares them (a test holds the two equal). Loaded from here, so that
their order and presence never depend on installed metadata."""

log = logging.getLogger("flowengine.steps")


@functools.cache
def builtin_kinds() -> tuple[StepKind, ...]:
    """flowengine's own kinds, whatever plugins are installed (the committed schema's)."""
    return tuple(
        _as_kind(metadata.EntryPoint(name, value, GROUP).load())
        for name, value in BUILTIN_ENTRY_POINTS.items()
    )


@functools.cache
def kinds() -> dict[str, StepKind]:
    """Every kind, by its YAML ``type``: the built-ins, then plugins by distribution and
    name. Loaded once per process; each plugin that fails is named in one warning."""
    found = {kind.name: kind for kind in builtin_kinds()}
    problems = []
    for entry_point, distribution in _plugin_entry_points():
        where = f"step-kind plugin '{entry_point.name}' ({entry_point.value}, from {distribution})"
        fix = f"; fix or uninstall {distribution}"
        try:
            kind = _as_kind(entry_point.load())
        except (Exception, SystemExit) as exc:  # a plugin's bug must not stop flowengine
            problems.append(f"{where} was skipped: {_one_line(exc)}{fix}")
            continue
        if kind.name in found:
            problems.append(
                f"{where} was skipped: a step kind named '{kind.name}' already exists{fix}"
            )
            continue
        found[kind.name] = kind
    for problem in problems:
        log.warning("flowengine: warning: %s", problem)
    return found


def kind_of(name: str) -> StepKind | None:
    """The kind named ``name``; None for a step without a (known) type."""
    return kinds().get(name)


def _plugin_entry_points() -> list[tuple[metadata.EntryPoint, str]]:
    """The group's entry points from other distributions, sorted so that the order does not
    depend on sys.path."""
    found = []
    for entry_point in metadata.entry_points(group=GROUP):
        distribution = entry_point.dist.name if entry_point.dist is not None else "unknown"
        if distribution != DISTRIBUTION:
            found.append((entry_point, distribution))
    return sorted(found, key=lambda pair: (pair[1], pair[0].name))


def _as_kind(value: Any) -> StepKind:
    if isinstance(value, type) and issubclass(value, StepKind):
        value = value()
    if not isinstance(value, StepKind):
        raise TypeError(f"it gives {type(value).__name__}, not a flowengine.steps.base.StepKind")
    name = getattr(value, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"its kind's name {name!r} is not a plain name")
    return value


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"
