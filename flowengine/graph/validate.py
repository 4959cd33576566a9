"""Validation of agent files: load, compile and check, in one call."""

from __future__ import annotations

import bisect
import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import networkx as nx

from flowengine.agentfile.diagnostics import Diagnostic, Reporter, Severity
from flowengine.agentfile.loader import load_agent, parse_agent
from flowengine.agentfile.model import Agent
from flowengine.graph.build import build_graph
from flowengine.graph.checks import check_agent
from flowengine.steps.schema import installed_schema
from flowengine.tools.base import Tool


@dataclass
class Validated:
    """The outcome of validating one file: the agent and graph when they could be built."""

    file: str
    agent: Agent | None
    graph: nx.DiGraph | None
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    def steps_with_errors(self) -> frozenset[str]:
        """The steps whose definitions hold an error's line (drawings outline them)."""
        if self.graph is None:
            return frozenset()
        starts = sorted((line, node) for node, line in self.graph.nodes(data="line") if line)
        lines = [line for line, _ in starts]
        found = set()
        for diagnostic in self.errors:
            index = bisect.bisect_right(lines, diagnostic.line) - 1
            if index >= 0:
                found.add(starts[index][1])
        return frozenset(found)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document is built.

    Loading makes millions of small acyclic objects, and each collection would scan them
    all again: without the pause, time grows faster than the file (measured in bench/).
    Reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def validate_file(
    path: str, display_name: str | None = None, tools: Mapping[str, Tool] | None = None
) -> Validated:
    """Load, compile and check the agent file at ``path``; ``tools``: the tools a run can
    call, if not the installed catalog."""
    with _gc_paused():
        loaded = load_agent(path, display_name, installed_schema())
        return _finish(display_name or path, loaded.agent, loaded.diagnostics, tools)


def validate_text(
    text: str, file: str = "<text>", tools: Mapping[str, Tool] | None = None
) -> Validated:
    """Validate YAML given as text; diagnostics name it ``file``."""
    with _gc_paused():
        report = Reporter(file)
        agent = parse_agent(text, report, installed_schema())
        return _finish(file, agent, report.diagnostics, tools)


def _finish(
    file: str,
    agent: Agent | None,
    diagnostics: list[Diagnostic],
    tools: Mapping[str, Tool] | None = None,
) -> Validated:
    if agent is None:
        return Validated(file, None, None, sorted(diagnostics, key=lambda d: d.sort_key))
    graph = build_graph(agent)
    report = Reporter(file)
    report.diagnostics = list(diagnostics)
    check_agent(agent, graph, report, tools)
    return Validated(file, agent, graph, sorted(report.diagnostics, key=lambda d: d.sort_key))
