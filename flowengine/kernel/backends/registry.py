"""The model backends flowengine can run on: built-ins and plugins, found through the
``flowengine.backends`` entry-point group, each a :class:`BackendPlugin`.

A backend is a unit: its module says what it can do (:class:`Capability`), which command
line options it takes (:class:`Option`, plain data the CLI turns into flags, so this layer
knows nothing of argparse), and how it opens (:attr:`BackendPlugin.open`). A plugin is an
installed distribution whose ``pyproject.toml`` says::

    [project.entry-points."flowengine.backends"]
    canned = "flowengine_canned:PLUGIN"

A plugin that fails to load, gives something else, or reuses a built-in's name or one of
its option flags is skipped with one warning line on the ``flowengine.backends`` logger.
``FLOWENGINE_BACKEND_PLUGINS`` names the plugin distributions to load (unset: all).
Loading a plugin imports only its module: model runtimes are imported when it opens.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flowengine.kernel.backends.base import Backend, BackendError, Capability
from flowengine.plugins import Provider, entry_points, one_line

GROUP = "flowengine.backends"
PLUGINS_VARIABLE = "FLOWENGINE_BACKEND_PLUGINS"
BUILTIN_ENTRY_POINTS = {
    "ctransformers": "flowengine.kernel.backends.ctransformers:PLUGIN",
    "llama-cpp": "flowengine.kernel.backends.llamacpp:PLUGIN",
    "openai": "flowengine.kernel.backends.openai:PLUGIN",
    "scripted": "flowengine.kernel.backends.scripted:PLUGIN",
}
"""flowengine's own entry points, as ``pyproject.toml`` declares them (a test holds the two
equal)."""
DEFAULT = "ctransformers"

log = logging.getLogger("flowengine.backends")


@dataclass(frozen=True)
class Option:
    """A command line option a backend takes: ``--flag VALUE``, stored under ``dest``."""

    flag: str
    help: str
    kind: Literal["text", "count", "seconds", "file"] = "text"
    """``count``: a whole number of at least 1; ``seconds``: a positive number;
    ``file``: the path of a file that exists."""
    metavar: str = "VALUE"
    required: bool = False
    """Needed unless the run replays a stored one (``--replay``)."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class BackendSettings:
    """What a backend is opened with: the common settings, and its own options by
    ``Option.dest`` (None for one not given)."""

    model: str | None = None
    """A GGUF file (``model="file"`` backends) or the name a server is asked for."""
    context_length: int = 2048
    threads: int | None = None
    pool_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, dest: str, default: Any = None) -> Any:
        value = self.options.get(dest)
        return default if value is None else value

    @property
    def model_path(self) -> Path | None:
        return Path(self.model) if self.model else None


@dataclass(frozen=True)
class BackendPlugin:
    """A backend as a unit: its name, one line of help, capabilities, options, opener."""

    name: str
    help: str
    capabilities: frozenset[Capability]
    open: Callable[[BackendSettings], Backend]
    options: tuple[Option, ...] = ()
    model: Literal["file", "name", None] = "file"
    """What ``--model`` means for it: a GGUF file, a model name, or nothing."""


@dataclass
class Registry:
    """Every backend by name, who provides each, and the plugins that could not load."""

    backends: dict[str, BackendPlugin] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def available_backends() -> dict[str, BackendPlugin]:
    """The backends of this environment by name, built-ins first."""
    return dict(registry().backends)


def backend_plugin(name: str) -> BackendPlugin:
    """The backend called ``name``, or a one-line error naming the ones there are."""
    backends = registry().backends
    if name not in backends:
        raise BackendError(
            f"no backend called '{name}'; the backends here are: {', '.join(backends)}"
        )
    return backends[name]


@functools.cache
def registry() -> Registry:
    """Load the entry points once per process; warn about each one that fails."""
    loaded = Registry()
    for entry_point, provider in entry_points(GROUP, BUILTIN_ENTRY_POINTS, PLUGINS_VARIABLE):
        where = f"backend plugin '{provider.plugin}' ({entry_point.value}, from {provider})"
        fix = "" if provider.builtin else f"; fix or uninstall {provider.distribution}"
        try:
            plugin = entry_point.load()
            if callable(plugin) and not isinstance(plugin, BackendPlugin):
                plugin = plugin()
            if not isinstance(plugin, BackendPlugin):
                raise TypeError(
                    f"it gives {type(plugin).__name__}, not a "
                    "flowengine.kernel.backends.registry.BackendPlugin"
                )
        except (Exception, SystemExit) as exc:  # a plugin's bug must not stop flowengine
            loaded.problems.append(f"{where} was skipped: {one_line(exc)}{fix}")
            continue
        clash = _clash(loaded, plugin)
        if clash:
            loaded.problems.append(f"{where} was skipped: {clash}{fix}")
            continue
        loaded.backends[plugin.name] = plugin
        loaded.providers[plugin.name] = provider
    for problem in loaded.problems:
        log.warning("flowengine: warning: %s", problem)
    return loaded


def _clash(loaded: Registry, plugin: BackendPlugin) -> str | None:
    if plugin.name in loaded.backends:
        return f"{loaded.providers[plugin.name]} already provides a backend '{plugin.name}'"
    taken = {option.flag: name for name, b in loaded.backends.items() for option in b.options}
    for option in plugin.options:
        if option.flag in COMMON_FLAGS:
            return f"its option {option.flag} is one of flowengine's own"
        if option.flag in taken and not _same_option(loaded, taken[option.flag], option):
            return f"its option {option.flag} is backend '{taken[option.flag]}'s already"
    return None


def _same_option(loaded: Registry, owner: str, option: Option) -> bool:
    """Two backends may share a flag only if it means the same (``--max-inflight``...)."""
    return option in loaded.backends[owner].options


COMMON_FLAGS = frozenset(
    {
        "--backend",
        "--model",
        "--replay",
        "--scheduler",
        "--quantum",
        "--pool",
        "--context-length",
        "--max-tokens",
        "--threads",
        "--no-prefix-reuse",
        "--db",
    }
)
"""Flags every backend shares, which no backend may declare as its own."""
