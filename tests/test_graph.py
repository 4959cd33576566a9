"""Compiling to networkx: nodes, attributes and labelled edges."""

from __future__ import annotations

import networkx as nx

from flowengine.graph import validate_file, validate_text

from .conftest import AGENT_FILES, AGENTS


def test_travel_agent_compiles_to_24_steps_and_29_transitions() -> None:
    graph = validate_file(str(AGENTS / "travel_agent.yaml")).graph
    assert isinstance(graph, nx.DiGraph)
    assert graph.number_of_nodes() == 24 and graph.number_of_edges() == 29
    assert graph.graph["start"] == "Step 1"
    kinds = nx.get_node_attributes(graph, "kind")
    assert sorted(n for n, k in kinds.items() if k == "decision") == [
        "Step 13", "Step 2", "Step 20", "Step 22", "Step 23", "Step 7",
    ]  # fmt: skip
    assert [n for n, k in kinds.items() if k == "terminal"] == ["Step 18"]
    assert graph.edges["Step 2", "Step 4"]["label"] == "city"
    assert graph.edges["Step 2", "Step 3"]["label"] == "state"
    assert graph.edges["Step 1", "Step 2"]["label"] == "next"
    assert graph.nodes["Step 3"]["max_visits"] == 4
    assert graph.nodes["Step 18"]["format"] == "json"


def test_node_lines_point_at_the_step_definitions() -> None:
    graph = validate_file(str(AGENTS / "travel_agent.yaml")).graph
    lines = (AGENTS / "travel_agent.yaml").read_text().splitlines()
    for node, line in graph.nodes(data="line"):
        assert lines[line - 1].strip() == f"{node}:"


def test_two_labels_to_one_step_share_an_edge_listing_both() -> None:
    text = """name: A
max_steps: 5
steps:
  ask:
    type: decision
    question: Sure?
    branches: {yes: done, maybe: done, no: ask}
  done:
    type: terminal
    output: ok
"""
    graph = validate_text(text).graph
    assert graph.edges["ask", "done"]["labels"] == ["yes", "maybe"]
    assert graph.edges["ask", "done"]["label"] == "yes / maybe"
    assert graph.has_edge("ask", "ask")


def test_every_shipped_agent_is_clean() -> None:
    files = AGENT_FILES
    assert [f.name for f in files] == [
        "math_agent.yaml", "narrative_agent.yaml", "rec_agent.yaml", "travel_agent.yaml",
        "travel_agent_confirm.yaml",
    ]  # fmt: skip
    for path in files:
        result = validate_file(str(path))
        assert result.diagnostics == [], [d.format() for d in result.diagnostics]
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/agent.schema.json"
        assert (AGENTS / "../schemas/agent.schema.json").resolve().is_file()
