"""Compile an agent into a networkx DiGraph: one node per step, one edge per transition."""

from __future__ import annotations

import networkx as nx

from flowengine.agentfile.model import Agent
from flowengine.steps.registry import kind_of


def build_graph(agent: Agent) -> nx.DiGraph:
    """The agent's flow as a graph.

    Nodes are step ids with ``kind``, ``text``, ``line`` and the step's settings (tool and
    args, save_as, loop guard, when conditions and default, retry and error route, an
    input step's timeout and whether its answer is structured).
    Edges carry ``label`` (the branch label, or ``next``); two labels of one decision that
    lead to the same step share an edge, listed in ``labels``. Transitions to steps that
    do not exist are left out (the checks report them).
    """
    graph = nx.DiGraph(
        name=agent.name,
        description=agent.description,
        file=agent.file,
        start=agent.start_step,
        max_steps=agent.step_limit,
        tools=list(agent.tools),
    )
    for step in agent.steps.values():
        kind = kind_of(step.type)
        # The kind adds what only it has (a terminal's format, an input's structured answer).
        extra = kind.node_attributes(step) if kind else {"format": None, "structured": False}
        graph.add_node(
            step.id,
            kind=step.type or "unknown",
            text=kind.text(step) if kind else step.text,
            line=agent.key_at("steps", step.id).line,
            tool=step.tool,
            save_as=step.save_as,
            sets=list(step.set),
            max_visits=step.max_visits,
            format=extra["format"],
            # With 'when' but no 'default', the model picks when no condition holds.
            deterministic=bool(step.when) and step.default is not None,
            when=dict(step.when),
            default=step.default,
            args=dict(step.args),
            retry=step.retry,
            on_error=step.on_error,
            error_policy=step.error_policy,
            timeout=step.timeout,
            structured=extra["structured"],
        )
    for step in agent.steps.values():
        for label, target in step.transitions:
            if target not in agent.steps:
                continue
            if graph.has_edge(step.id, target):
                edge = graph.edges[step.id, target]
                edge["labels"].append(label)
                edge["label"] = " / ".join(edge["labels"])
            else:
                graph.add_edge(step.id, target, label=label, labels=[label])
    return graph


def successor(graph: nx.DiGraph, step_id: str, label: str) -> str | None:
    """The step a run goes to when ``step_id`` ends with ``label``: ``next``, a decision's
    branch label, or ``on_error``. None when no edge carries it (a terminal step ends there).

    The interpreter walks the graph through this function only, so the transitions it takes
    are exactly the edges that ``validate`` checked and ``viz`` draws."""
    for _, target, labels in graph.out_edges(step_id, data="labels"):
        if label in labels:
            return str(target)
    return None
