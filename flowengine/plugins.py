"""Entry-point plugins: the entry points of one group, flowengine's own first, and who
provides each; the tool catalog and the backend registry are built on it.

flowengine's own entry points are declared in ``pyproject.toml`` like any plugin's, and
given again to :func:`entry_points` so that a source checkout that was never installed
still finds them (a test holds the two equal). An environment variable, when set, names
the plugin distributions to load (comma separated; empty: none), as ``LLM_LOAD_PLUGINS``
does for Simon Willison's ``llm``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

DISTRIBUTION = "flowengine"


@dataclass(frozen=True)
class Provider:
    """Where a plugin came from: an entry point's name, and the distribution declaring it."""

    plugin: str
    distribution: str

    @property
    def builtin(self) -> bool:
        return self.distribution == DISTRIBUTION

    def __str__(self) -> str:
        return "built-in" if self.builtin else f"plugin {self.plugin} ({self.distribution})"


def entry_points(
    group: str, builtins: Mapping[str, str], variable: str
) -> list[tuple[metadata.EntryPoint, Provider]]:
    """The group's entry points: built-ins first, then plugins sorted by distribution and
    name, so the order (and which of two plugins of one name wins) never depends on
    ``sys.path``; only the distributions ``variable`` names, when it is set."""
    wanted = _wanted_distributions(variable)
    found_builtins: list[tuple[metadata.EntryPoint, Provider]] = []
    plugins: list[tuple[metadata.EntryPoint, Provider]] = []
    for entry_point in metadata.entry_points(group=group):
        distribution = entry_point.dist.name if entry_point.dist is not None else "unknown"
        provider = Provider(entry_point.name, distribution)
        if provider.builtin:
            found_builtins.append((entry_point, provider))
        elif wanted is None or _normal(distribution) in wanted:
            plugins.append((entry_point, provider))
    if not found_builtins:  # running from a source checkout: no installed metadata to read
        found_builtins = [
            (metadata.EntryPoint(name, value, group), Provider(name, DISTRIBUTION))
            for name, value in builtins.items()
        ]
    found_builtins.sort(key=lambda pair: pair[1].plugin)
    plugins.sort(key=lambda pair: (pair[1].distribution, pair[1].plugin))
    return found_builtins + plugins


def _wanted_distributions(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {_normal(name) for name in value.split(",") if name.strip()}


def _normal(distribution: str) -> str:
    return distribution.strip().lower().replace("_", "-").replace(".", "-")


def one_line(exc: BaseException) -> str:
    """An exception as one line, for a plugin that could not be loaded."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"
