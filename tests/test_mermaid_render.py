"""Mermaid output rendered by the real Mermaid: Mermaid in Debian's Chromium for many
diagrams (the agents, the AIOS imports, adversarial names from hypothesis), and the
mermaid-cli users run (``mmdc``) for a batch of real renders in one start."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowengine.agentfile.diagnostics import Reporter
from flowengine.graph import validate_file, validate_text
from flowengine.importers.aios import import_config
from flowengine.viz.labels import edge_caption, one_line
from flowengine.viz.mermaid import MAX_TEXT_SIZE, mermaid_title, to_mermaid
from flowengine.viz.overlay import with_run_path

from .clients import CHROMIUM, MMDC, PUPPETEER_CONFIG, require
from .conftest import AGENT_FILES, AGENTS, AIOS, BROKEN, run_cli

KIND_FILLS = {  # the classDef fills, as the browser computes them
    "process": "rgb(232, 240, 254)",
    "decision": "rgb(255, 244, 214)",
    "terminal": "rgb(227, 244, 225)",
    "input": "rgb(252, 232, 243)",
    "set": "rgb(243, 232, 253)",
}
RED = "rgb(217, 48, 37)"
BLUE = "rgb(26, 115, 232)"


def _graphs() -> dict[str, nx.DiGraph]:
    graphs = {path.name: validate_file(str(path)).graph for path in AGENT_FILES}
    for config in sorted(AIOS.glob("*.json")):
        imported = import_config(str(config), "agent.schema.json", Reporter(str(config)))
        assert imported.yaml is not None
        graphs[config.name] = validate_text(imported.yaml, config.name).graph
    return {name: graph for name, graph in graphs.items() if graph is not None}


def _nodes(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Drawn nodes by our Mermaid id (s0, s1, ...)."""
    found = {}
    for node in result["nodes"]:
        match = re.search(r"flowchart-(s\d+)-\d+$", node["id"])
        if match:
            found[match.group(1)] = node
    return found


def _assert_drawn_faithfully(graph: nx.DiGraph, result: dict[str, Any]) -> None:
    assert result["ok"], result.get("error")
    title = one_line(graph.graph["name"])
    if graph.graph.get("run"):
        title += f" ({one_line(graph.graph['run'])})"
    assert result["title"] == title.replace("<", "‹").replace(">", "›")  # noqa: RUF001
    assert result["title"] == mermaid_title(graph)
    drawn = _nodes(result)
    assert len(drawn) == graph.number_of_nodes()
    for index, (step, attrs) in enumerate(graph.nodes(data=True)):
        node = drawn[f"s{index}"]
        assert node["text"].startswith(one_line(step)), (step, node["text"])
        assert node["fill"] == KIND_FILLS[attrs["kind"]]
    captions = [edge_caption(graph, s, t).text for s, t in graph.edges]
    assert sorted(c for c in result["labels"] if c) == sorted(c for c in captions if c)


def test_the_agents_and_the_aios_imports_render_with_every_step_and_label(mermaid) -> None:
    graphs = _graphs()
    assert len(graphs) == 9
    for name, graph in graphs.items():
        result = mermaid.render(to_mermaid(graph))
        _assert_drawn_faithfully(graph, result)
        # Wrapped once, by us: Mermaid draws as many lines as the label has.
        for node in _nodes(result).values():
            assert node["drawnLines"] == node["writtenLines"], (name, node["text"])


SET_AGENT = """\
name: Sets
state:
  ideas: {default: [], reducer: append}
steps:
  start:
    type: set
    set: {ideas: "{{ task }}", count: "{{ 1 }}"}
    next: think
  think:
    type: process
    instruction: One more idea.
    save_as: ideas
    next: done
  done:
    type: terminal
    output: {ideas: "{{ ideas }}"}
"""


def test_a_set_step_renders_in_its_own_shape_and_colour(mermaid) -> None:
    graph = validate_text(SET_AGENT, "sets.yaml").graph
    assert graph is not None
    text = to_mermaid(graph)
    assert '[/"' in text and "sets ideas, count" in text and "no model, no tool" in text
    _assert_drawn_faithfully(graph, mermaid.render(text))


def test_problem_steps_keep_their_colour_and_get_a_red_outline(mermaid) -> None:
    graph = validate_file(str(BROKEN / "unreachable.yaml")).graph
    index = list(graph.nodes).index("orphan")
    result = mermaid.render(to_mermaid(graph, frozenset({"orphan"})))
    assert result["ok"], result.get("error")
    orphan = _nodes(result)[f"s{index}"]
    assert "problem" in orphan["classes"]
    assert orphan["stroke"] == RED
    assert orphan["fill"] == KIND_FILLS[graph.nodes["orphan"]["kind"]]


def test_a_run_path_draws_visited_steps_in_blue_under_a_title_with_a_colon(mermaid) -> None:
    graph = validate_file(str(AGENTS / "math_agent.yaml")).graph
    path = ["operation", "write_expression", "calculate", "check", "explain", "answer"]
    drawn = with_run_path(graph, path, "run 3f2a: completed after 6 steps")
    result = mermaid.render(to_mermaid(drawn))
    _assert_drawn_faithfully(drawn, result)
    nodes = _nodes(result)
    for index, step in enumerate(drawn.nodes):
        visited = step in path
        assert ("visited" in nodes[f"s{index}"]["classes"]) == visited
        assert (nodes[f"s{index}"]["stroke"] == BLUE) == visited
    assert sum(edge["stroke"] == BLUE for edge in result["edges"]) == len(path) - 1


ON_ERROR_AGENT = """\
name: "Recover: #1 [try]"
tools: [calculator]
steps:
  lookup:
    type: process
    tool: calculator
    args: {expression: "1 + 1"}
    on_error: recover
    next: finish
  recover:
    type: process
    instruction: Apologise.
    next: finish
  finish:
    type: terminal
    output: ok
"""


def test_error_routes_are_dotted_red_and_labelled_in_mermaid_and_dot(mermaid) -> None:
    graph = validate_text(ON_ERROR_AGENT).graph
    result = mermaid.render(to_mermaid(graph))
    _assert_drawn_faithfully(graph, result)
    error_edges = [e for e in result["edges"] if "_s0_s1_" in e["id"]]
    assert len(error_edges) == 1 and "edge-pattern-dotted" in error_edges[0]["classes"]
    assert error_edges[0]["stroke"] == RED
    assert "on error" in result["labels"]
    plain = [e for e in result["edges"] if "_s0_s2_" in e["id"]]
    assert "edge-pattern-solid" in plain[0]["classes"]
    from flowengine.viz.dot import to_dot

    dot = to_dot(graph)
    assert '"lookup" -> "recover" [style=dashed' in dot and "on error" in dot
    assert '"lookup" -> "finish";' in dot


_TRICKY = [
    '"',
    "'",
    ":",
    ": ",
    "#",
    "#quot;",
    "#35;",
    "&amp;",
    "&",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    "|",
    "<b>",
    "</div>",
    "<script>alert(1)</script>",
    "end",
    "graph",
    "class",
    "style",
    "classDef",
    "subgraph",
    "click",
    "-->",
    "---",
    ";",
    "`",
    "\n",
    "\t",
    "é",
    "名前",
    "🙂",
    "\\",
    "%%",
    "style: x#35;",
    "A-->B",
    "::",
]
_text = st.lists(
    st.one_of(
        st.sampled_from(_TRICKY),
        st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=6),
    ),
    min_size=1,
    max_size=6,
).map("".join)
_name = _text.filter(lambda s: one_line(s) != "")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=_name,
    ids=st.lists(_name, min_size=4, max_size=4, unique_by=one_line),
    labels=st.lists(_name, min_size=2, max_size=2, unique_by=lambda s: s.strip().casefold()),
    texts=st.lists(_text, min_size=3, max_size=3),
)
def test_adversarial_names_and_labels_render_as_written(mermaid, name, ids, labels, texts) -> None:
    first, choose, fix, done = ids
    document = {
        "name": name,
        "steps": {
            first: {"type": "process", "instruction": texts[0], "next": choose},
            choose: {
                "type": "decision",
                "question": texts[1],
                "branches": {labels[0]: done, labels[1]: fix},
            },
            fix: {"type": "process", "instruction": "again", "next": done, "on_error": first},
            done: {"type": "terminal", "output": texts[2]},
        },
    }
    graph = validate_text(yaml.safe_dump(document, allow_unicode=True)).graph
    assume(graph is not None and graph.number_of_nodes() == 4)
    drawn = with_run_path(graph, [first, choose], f"run x: {name}")
    for candidate in (graph, drawn):
        _assert_drawn_faithfully(candidate, mermaid.render(to_mermaid(candidate, frozenset({fix}))))


def _large_agent(steps: int) -> str:
    lines = ["name: Large", "steps:"]
    for index in range(steps):
        lines += [
            f"  s{index}:",
            "    type: process",
            f"    instruction: Step number {index}, where the agent looks up one more fact.",
        ]
        lines.append(f"    next: s{index + 1}")
    lines += [f"  s{steps}:", "    type: terminal", "    output: done"]
    return "\n".join(lines) + "\n"


def test_a_diagram_over_mermaids_size_limit_is_refused_by_mermaid_and_warned_about(
    mermaid, tmp_path: Path
) -> None:
    agent = tmp_path / "large.yaml"
    agent.write_text(_large_agent(450))
    done = run_cli("viz", str(agent), "-o", str(tmp_path / "large.mmd"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "large.mmd").read_text()
    assert len(text) > MAX_TEXT_SIZE
    assert "warning: the diagram is" in done.stderr and "maxTextSize" in done.stderr
    result = mermaid.render(text)  # Mermaid draws its refusal instead of the diagram
    assert "Maximum text size in diagram exceeded" in (result.get("error") or result["svg"])
    small = run_cli("viz", str(AGENTS / "travel_agent.yaml"), "-o", str(tmp_path / "t.mmd"))
    assert "maxTextSize" not in small.stderr


def test_mermaid_cli_renders_every_agent_and_a_run_in_one_start(tmp_path: Path) -> None:
    require(MMDC, CHROMIUM)
    graphs = _graphs()
    run = with_run_path(
        graphs["math_agent.yaml"], ["operation", "write_expression"], "run 1: failed: no model"
    )
    diagrams = [*graphs.values(), run]
    source = tmp_path / "all.md"
    source.write_text(
        "".join(f"## {i}\n\n```mermaid\n{to_mermaid(g)}```\n\n" for i, g in enumerate(diagrams))
    )
    done = subprocess.run(
        [
            str(MMDC),
            "-q",
            "-p",
            str(PUPPETEER_CONFIG),
            "-i",
            str(source),
            "-o",
            str(tmp_path / "out.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for index, graph in enumerate(diagrams, start=1):
        svg = (tmp_path / f"out-{index}.svg").read_text()
        assert svg.startswith("<svg") and "Syntax error" not in svg
        for step in graph.nodes:
            assert f"<b>{step}</b>" in svg


def test_viz_of_a_stored_run_as_mermaid_renders_with_its_colon_title(mermaid, tmp_path) -> None:
    from .test_run import PENS, _run

    [outcome], db = _run(tmp_path, str(AGENTS / "math_agent.yaml"), "--input", PENS)
    done = run_cli(
        "viz", str(AGENTS / "math_agent.yaml"), "--run", "latest", "--db", db, "--format", "mermaid"
    )
    assert done.returncode == 0, done.stderr
    result = mermaid.render(done.stdout)
    assert result["ok"], result.get("error")
    assert result["title"] == f"MathAgent (run {outcome['run_id']}: completed after 6 steps)"
    visited = [n for n in _nodes(result).values() if "visited" in n["classes"]]
    assert len(visited) == len(set(outcome["path"]))
    assert all(n["stroke"] == BLUE for n in visited)


def test_viz_to_a_markdown_file_writes_a_fenced_block_mermaid_cli_renders(tmp_path: Path) -> None:
    require(MMDC, CHROMIUM)
    page = tmp_path / "plan.md"
    done = run_cli("viz", str(AGENTS / "math_agent.yaml"), "-o", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("```mermaid\n---\n") and text.endswith("\n```\n")
    rendered = subprocess.run(
        [
            str(MMDC),
            "-q",
            "-p",
            str(PUPPETEER_CONFIG),
            "-i",
            str(page),
            "-o",
            str(tmp_path / "out.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rendered.returncode == 0, rendered.stderr
    svg = (tmp_path / "out-1.svg").read_text()
    assert svg.startswith("<svg") and "<b>write_expression</b>" in svg
    assert "![diagram](./out-1.svg)" in (tmp_path / "out.md").read_text()
