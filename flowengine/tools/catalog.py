"""The tools flowengine knows: built-ins and plugins, found through the ``flowengine.tools``
entry-point group, loaded once per process, each by its static metadata only.

A plugin is an installed distribution whose ``pyproject.toml`` says::

    [project.entry-points."flowengine.tools"]
    weather = "flowengine_weather:TOOLS"

The object named may be a :class:`~flowengine.tools.base.Tool`, a list of them, or a
function with no arguments that returns either. flowengine's own tools are registered the
same way (see ``pyproject.toml``). A plugin that fails to load, or gives something else,
is skipped with a one-line warning on the ``flowengine.tools`` logger (printed to stderr
when logging is not configured); the other tools stay available.

``FLOWENGINE_TOOL_PLUGINS``, when set, names the plugin distributions to load (comma
separated; empty: none), as ``LLM_LOAD_PLUGINS`` does for Simon Willison's ``llm``; the
built-in tools are always there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from flowengine.plugins import Provider, entry_points, one_line
from flowengine.tools.base import Tool

GROUP = "flowengine.tools"
PLUGINS_VARIABLE = "FLOWENGINE_TOOL_PLUGINS"

BUILTIN_ENTRY_POINTS = {
    "calculator": "flowengine.tools.calculator:TOOL",
    "travel": "flowengine.tools.travel:TOOLS",
}
"""flowengine's own entry points, as ``pyproject.toml`` declares them (a test holds the two
equal). Used as they are when flowengine runs from a checkout that was never installed."""

log = logging.getLogger("flowengine.tools")


@dataclass
class Catalog:
    """Every tool by name, who provides each, and the plugins that could not be loaded."""

    tools: dict[str, Tool] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def available_tools() -> dict[str, Tool]:
    """The tools agents can use in this environment, by name (metadata and callable)."""
    return dict(catalog().tools)


def builtin_tools() -> list[Tool]:
    """The tools that ship with flowengine, whatever plugins are installed."""
    found = catalog()
    return [tool for name, tool in found.tools.items() if found.providers[name].builtin]


@functools.cache
def catalog() -> Catalog:
    """Load the entry points once per process; warn about each one that fails."""
    loaded = Catalog()
    for entry_point, provider in _entry_points():
        _add(loaded, entry_point, provider)
    for problem in loaded.problems:
        log.warning("flowengine: warning: %s", problem)
    return loaded


def _entry_points() -> list[tuple[metadata.EntryPoint, Provider]]:
    return entry_points(GROUP, BUILTIN_ENTRY_POINTS, PLUGINS_VARIABLE)


def _add(loaded: Catalog, entry_point: metadata.EntryPoint, provider: Provider) -> None:
    where = f"tool plugin '{provider.plugin}' ({entry_point.value}, from {provider.distribution})"
    fix = "" if provider.builtin else f"; fix or uninstall {provider.distribution}"
    try:
        tools = _as_tools(entry_point.load())
        for tool in tools:
            _check_parameters(tool)
    except (Exception, SystemExit) as exc:  # a plugin's bug must not stop flowengine
        loaded.problems.append(f"{where} was skipped: {one_line(exc)}{fix}")
        return
    for tool in tools:
        if tool.name in loaded.tools:
            loaded.problems.append(
                f"{where}: tool '{tool.name}' is skipped: {loaded.providers[tool.name]} "
                f"already provides a tool of that name{fix}"
            )
            continue
        loaded.tools[tool.name] = tool
        loaded.providers[tool.name] = provider


def _as_tools(value: Any) -> list[Tool]:
    if callable(value) and not isinstance(value, Tool):
        value = value()
    if isinstance(value, Tool):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | dict):
        items = list(value)
        if items and all(isinstance(item, Tool) for item in items):
            return items
    raise TypeError(
        f"it gives {type(value).__name__}, not a flowengine.tools.base.Tool or a list of them"
    )


def _check_parameters(tool: Tool) -> None:
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(tool.parameters)
    except SchemaError as exc:
        raise ValueError(
            f"tool {tool.name}: parameters is not a valid JSON Schema: {exc.message}"
        ) from None
