"""AIOS import: the four released configs, their quirks, the newer workflow/tools format,
and faithful round trips."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flowengine.agentfile.diagnostics import Reporter
from flowengine.agentfile.templates import compiled_template
from flowengine.graph import validate_file, validate_text
from flowengine.importers.aios import import_config, output_filename
from flowengine.tools.base import Tool

from .conftest import AGENTS, AIOS, run_cli

NEWER = AIOS / "newer"


def labelled_edges(graph) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {(u, v, label) for u, v, d in graph.edges(data=True) for label in d["labels"]}


def imported(config: Path, available: dict[str, Tool] | None = None) -> tuple[str, Reporter]:
    report = Reporter(str(config))
    result = import_config(str(config), "../schemas/agent.schema.json", report, available)
    assert result.yaml is not None
    return result.yaml, report


def test_all_four_configs_import_from_the_cli(aios_dir: Path, tmp_path: Path) -> None:
    configs = sorted(str(p) for p in aios_dir.glob("*.json"))
    assert len(configs) == 4
    done = run_cli("import-aios", *configs, "-o", str(tmp_path))
    assert "Traceback" not in done.stderr
    assert done.returncode == 1  # MathAgent's own flow is broken, and validate says so
    written = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert written == [
        "math_agent.yaml",
        "narrative_agent.yaml",
        "rec_agent.yaml",
        "travel_agent.yaml",
    ]
    for name in ("narrative_agent.yaml", "rec_agent.yaml", "travel_agent.yaml"):
        assert validate_file(str(tmp_path / name)).errors == []
    again = run_cli("import-aios", configs[0], "-o", str(tmp_path))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("import-aios", configs[2], "-o", str(tmp_path), "--force").returncode == 0


def test_math_agent_unreachable_steps_are_named_with_their_lines(
    aios_dir: Path, tmp_path: Path
) -> None:
    done = run_cli("import-aios", str(aios_dir / "MathAgent.json"), "-o", str(tmp_path))
    assert done.returncode == 1
    written = (tmp_path / "math_agent.yaml").read_text().splitlines()
    unreachable = [line for line in done.stderr.splitlines() if "[unreachable-step]" in line]
    assert len(unreachable) == 6
    for number, line in zip(range(4, 10), unreachable, strict=True):
        file, lineno, _ = line.split(":", 2)
        assert file == str(tmp_path / "math_agent.yaml")
        assert f"step 'Step {number}' is unreachable" in line
        assert written[int(lineno) - 1].strip() == f"Step {number}:"


ASSEMBLED = "Step 18"
"""TravelAgent's terminal step: its output is assembled from state (issue 25), not
written by the model from the AIOS instruction."""


def test_imported_travel_agent_graph_equals_the_hand_written_one(aios_dir: Path) -> None:
    text, report = imported(aios_dir / "TravelAgent.json")
    assert report.diagnostics == []
    ours = validate_text(text).graph
    hand = validate_file(str(AGENTS / "travel_agent.yaml")).graph
    assert set(ours.nodes) == set(hand.nodes)
    assert labelled_edges(ours) == labelled_edges(hand)
    assert dict(ours.nodes(data="kind")) == dict(hand.nodes(data="kind"))
    # The hand-written agent adds tools and 'when' conditions, and keeps every AIOS text
    # but Step 18's, which assembles the plan from the run's state (quoted in a comment).
    for node, text in ours.nodes(data="text"):
        if node == ASSEMBLED:
            assert f'AIOS: "{text}"' in (AGENTS / "travel_agent.yaml").read_text()
        else:
            assert text in hand.nodes[node]["text"]


def test_hand_written_travel_agent_keeps_the_aios_texts(aios_dir: Path) -> None:
    config = json.loads((aios_dir / "TravelAgent.json").read_text())
    hand = validate_file(str(AGENTS / "travel_agent.yaml")).agent
    for entry in config["flow"]:
        step_id, kind, text = entry.split(":::")[:3]
        step = hand.steps[step_id]
        assert step.type == kind.lower()
        if step_id == ASSEMBLED:
            assert step.output_data is not None  # the plan, from state
            continue
        assert (step.instruction or step.question or "").startswith(text)


def test_quirks_case_references_double_colons_and_trailing_separators(aios_dir: Path) -> None:
    travel = validate_text(imported(aios_dir / "TravelAgent.json")[0]).graph
    assert travel.has_edge("Step 1", "Step 2")  # written 'step 2'
    assert travel.has_edge("Step 24", "Step 4")  # written 'step 4'
    assert travel.out_degree("Step 18") == 0  # 'Output all the plans in json.:::'
    math = validate_text(imported(aios_dir / "MathAgent.json")[0]).graph
    assert labelled_edges(math) >= {("Step 4", "Step 5", "yes"), ("Step 4", "Step 6", "no")}


def test_description_list_and_tool_info(aios_dir: Path) -> None:
    math = validate_text(imported(aios_dir / "MathAgent.json")[0]).agent
    assert math.tools == ["wolfram_alpha"]
    assert math.description.startswith("You are an expert who is good at solving mathematical")
    assert "sub-problems. Solve a part" in math.description
    travel = validate_text(imported(aios_dir / "TravelAgent.json")[0]).agent
    assert travel.tools == ["google_search"]
    assert "  " not in travel.description


def test_empty_flows_become_a_one_step_agent_that_validates(aios_dir: Path) -> None:
    for name in ("NarrativeAgent", "RecAgent"):
        result = validate_text(imported(aios_dir / f"{name}.json")[0])
        assert result.diagnostics == []
        assert [s.type for s in result.agent.steps.values()] == ["terminal"]


def test_output_filenames() -> None:
    assert output_filename("TravelAgent") == "travel_agent.yaml"
    assert output_filename("My Agent 2") == "my_agent_2.yaml"
    assert output_filename("!!!") == "agent.yaml"


def test_broken_config_is_reported_at_its_position(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{\n  "name": "Bad",\n  "flow": [\n    "Step 1:::Wander:::x"\n  ]\n}\n')
    report = Reporter(str(config))
    import_config(str(config), "x", report)
    (diagnostic,) = report.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("aios-flow", 4, 5)
    config.write_text('{"name": "Bad", "flow": [}')
    report = Reporter(str(config))
    assert import_config(str(config), "x", report).yaml is None
    assert report.diagnostics[0].code == "aios-json"


# ':' next to a separator is ambiguous in the AIOS format itself, so texts avoid it there.
texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1
).filter(
    lambda s: (
        s.strip()
        and "::" not in s
        and not s.strip().startswith(":")
        and not s.strip().endswith(":")
    )
)


@given(
    name=texts,
    question=texts,
    instruction=texts,
    labels=st.lists(texts.map(str.strip), min_size=2, max_size=3, unique=True),
)
def test_any_texts_survive_the_round_trip(
    tmp_path_factory, name: str, question: str, instruction: str, labels: list[str]
) -> None:  # type: ignore[no-untyped-def]
    branches = ":::".join(f"{label}::Step 2" for label in labels)
    config = {
        "name": name,
        "description": [instruction],
        "flow": [
            f"Step 1:::Decision:::{question}:::{branches}",
            f"Step 2:::Terminal:::{instruction}:::",
        ],
    }
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    report = Reporter(str(path))
    result = import_config(str(path), "x", report)
    if result.yaml is None:
        assert report.diagnostics
        return
    agent = validate_text(result.yaml).agent
    assert agent is not None, result.yaml
    norm = lambda s: " ".join(s.split())  # noqa: E731 - the importer folds white space
    # Texts are templates: any '{{', '{%' or '{#' is escaped, so each renders as written.
    rendered = lambda s: compiled_template(s).render()  # noqa: E731
    assert agent.name == name.strip()
    step1 = agent.steps["Step 1"]
    assert rendered(step1.question) == norm(question)
    assert list(step1.branches) == labels
    assert rendered(agent.steps["Step 2"].instruction) == norm(instruction)
    assert rendered(agent.description) == norm(instruction)


def test_texts_that_look_like_templates_are_kept_as_text(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"name": "J", "workflow": ["Reply {{ like this }} or {% if %} or {# not #}"]},
    )
    text, report = imported(config)
    result = validate_text(text)
    assert report.diagnostics == [] and result.diagnostics == []
    instruction = result.agent.steps["Step 1"].instruction
    assert (
        compiled_template(instruction).render() == "Reply {{ like this }} or {% if %} or {# not #}"
    )


def test_a_refused_import_writes_nothing(aios_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "travel_agent.yaml").write_text("keep me")
    configs = [str(aios_dir / "MathAgent.json"), str(aios_dir / "TravelAgent.json")]
    done = run_cli("import-aios", *configs, "-o", str(tmp_path))
    assert done.returncode == 2 and "--force" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["travel_agent.yaml"]
    assert (tmp_path / "travel_agent.yaml").read_text() == "keep me"


def test_import_to_stdout_prints_valid_yaml(aios_dir: Path) -> None:
    done = run_cli("import-aios", str(aios_dir / "TravelAgent.json"), "-o", "-")
    assert done.returncode == 0, done.stderr
    assert validate_text(done.stdout).errors == []


def write_config(folder: Path, config: dict | str, name: str = "config.json") -> Path:
    path = folder / name
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


def test_an_unknown_step_type_fails_the_import_and_stays_in_the_written_file(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        '{\n  "name": "Wanderer",\n  "flow": [\n'
        '    "Step 1:::Process:::Start.:::next::Step 2",\n'
        '    "Step 2:::Wander:::Look around.:::next::Step 3",\n'
        '    "Step 3:::Terminal:::Done.:::"\n  ]\n}\n',
    )
    out = tmp_path / "out"
    done = run_cli("import-aios", str(config), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert f"{config}:5:5: error: step 'Step 2' has the unknown step type 'Wander'" in done.stderr
    written = out / "wanderer.yaml"
    lines = written.read_text().splitlines()
    # The step is kept with its type as written, so the file does not validate clean.
    (diagnostic,) = validate_file(str(written)).errors
    assert diagnostic.code == "invalid-value"
    assert lines[diagnostic.line - 1].strip() == "type: Wander"
    assert "'Wander'" in diagnostic.message
    assert f"{written}:{diagnostic.line}:" in done.stderr
    again = run_cli("validate", str(written))
    assert again.returncode == 1


def test_an_unknown_step_type_printed_to_stdout_also_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"name": "W", "flow": ["Step 1:::Terminally:::Done.:::"]})
    done = run_cli("import-aios", str(config), "-o", "-")
    assert done.returncode == 1
    assert "type: Terminally" in done.stdout
    assert "[invalid-value]" in done.stderr and "[aios-flow]" in done.stderr


@pytest.mark.parametrize(
    "tool_info",
    [
        ["Avaiable tools: ", "google_search", "wolfram alpha ['question']. Parameter: 'question'"],
        "Available tools:\ngoogle_search\nwolfram alpha ['question']",
        ["Tools:", "google_search", "wolfram_alpha"],
    ],
)
def test_a_tool_info_header_line_is_not_a_tool(tmp_path: Path, tool_info: list | str) -> None:
    config = write_config(tmp_path, {"name": "T", "flow": [], "tool_info": tool_info})
    text, report = imported(config)
    assert report.diagnostics == []
    assert validate_text(text).agent.tools == ["google_search", "wolfram_alpha"]


def test_newer_configs_import_through_the_cli(tmp_path: Path) -> None:
    configs = sorted(NEWER.glob("*.json"))
    assert [p.name for p in configs] == [
        "academic_agent.json",
        "fitness_trainer.json",
        "math_agent.json",
    ]
    done = run_cli("import-aios", *map(str, configs), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # The only findings: AIOS tools that flowengine does not have (no step calls them).
    findings = [line for line in done.stderr.splitlines() if not line.startswith("wrote ")]
    assert findings and all("[unknown-declared-tool]" in line for line in findings), findings
    agents = {}
    for name in ("academic_agent", "fitness_trainer", "math_agent"):
        result = validate_file(str(tmp_path / f"{name}.yaml"))
        assert {d.code for d in result.diagnostics} <= {"unknown-declared-tool"}
        assert not result.errors
        agents[name] = result.agent
    # Real configs: tools as author/name paths, as function objects, and no workflow.
    assert agents["math_agent"].tools == ["wolfram_alpha", "currency_converter"]
    assert agents["academic_agent"].tools == ["arxiv"]
    assert agents["fitness_trainer"].tools == ["text_to_image", "text_to_speech"]
    assert [s.type for s in agents["fitness_trainer"].steps.values()] == ["terminal"]


@pytest.mark.parametrize("name", ["math_agent", "academic_agent"])
def test_a_workflow_becomes_process_steps_in_order_then_a_terminal_step(name: str) -> None:
    config = json.loads((NEWER / f"{name}.json").read_text())
    text, report = imported(NEWER / f"{name}.json")
    assert report.diagnostics == []
    result = validate_text(text)
    assert {d.code for d in result.diagnostics} <= {"unknown-declared-tool"}
    agent = result.agent
    workflow = [" ".join(entry.split()) for entry in config["workflow"]]
    ids = [f"Step {n}" for n in range(1, len(workflow) + 1)]
    assert list(agent.steps) == [*ids, "answer"]
    for step_id, message, following in zip(ids, workflow, [*ids[1:], "answer"], strict=True):
        step = agent.steps[step_id]
        assert (step.type, step.instruction, step.next) == ("process", message, following)
    answer = agent.steps["answer"]
    # AIOS's answer is the reply to the last workflow step.
    assert (answer.type, answer.output) == ("terminal", "{{ last }}")
    assert agent.description == " ".join(" ".join(config["description"]).split())


def a_tool(name: str, parameters: dict) -> Tool:
    """A tool flowengine has, as a plugin would give it (never called here)."""
    return Tool(name, name, {"type": "object", **parameters}, lambda **_: None)


def test_a_workflow_entry_naming_a_tool_calls_it_when_its_arguments_can_be_written(
    tmp_path: Path,
) -> None:
    arxiv = {
        "type": "function",
        "function": {
            "name": "arxiv",
            "description": "Query articles or topics in arxiv",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
    clock = {"type": "function", "function": {"name": "clock", "parameters": {}}}
    config = write_config(
        tmp_path,
        {
            "name": "Researcher",
            "workflow": [
                {"message": "Gather information from arxiv", "tool_use": ["arxiv"]},
                {"message": "Note the time", "tool_use": ["clock"]},
                {"message": "Pick a source", "tool_use": ["imdb_top_movies", "arxiv"]},
                {"message": "Pre-calculate", "tool_use": ["wolfram_alpha"]},
                {"message": "Search the web", "tool_use": ["bing"]},
                {"message": "Write a summary", "tool_use": None},
            ],
            "tools": [arxiv, clock, "imdb/imdb_top_movies", "wolfram/wolfram_alpha"],
        },
    )
    # As if plugins provided arxiv and clock: a step calls a tool only if flowengine has it.
    available = {
        "arxiv": a_tool("arxiv", {"properties": {"query": {"type": "string"}}}),
        "clock": a_tool("clock", {}),
    }
    text, report = imported(config, available)
    lines = config.read_text().splitlines()
    warned = {}
    for diagnostic in report.diagnostics:
        assert (diagnostic.severity.value, diagnostic.code) == ("warning", "aios-workflow")
        warned[diagnostic.message.split("'")[1]] = diagnostic
        assert lines[diagnostic.line - 1][diagnostic.column - 1 :].startswith('"')
    assert sorted(warned) == ["Step 3", "Step 4", "Step 5"]
    assert "choose among tools 'imdb_top_movies', 'arxiv'" in warned["Step 3"].message
    assert '"Pick a source"' in lines[warned["Step 3"].line - 1]
    assert "does not say which arguments" in warned["Step 4"].message
    assert "'bing', which the config's 'tools' does not list" in warned["Step 5"].message
    result = validate_text(text, tools=available)
    steps = result.agent.steps
    assert (steps["Step 1"].tool, steps["Step 1"].args) == ("arxiv", {"query": "{{ task }}"})
    assert steps["Step 1"].instruction == "Gather information from arxiv"
    assert (steps["Step 2"].tool, steps["Step 2"].args) == ("clock", {})
    assert [steps[f"Step {n}"].tool for n in range(3, 7)] == [None] * 4
    # imdb_top_movies and wolfram_alpha are declared, not called: warnings only.
    assert result.errors == []


def test_a_workflow_tool_flowengine_does_not_have_is_a_warning_and_the_file_validates(
    tmp_path: Path,
) -> None:
    """Issue 33: the step called tool 'a', which flowengine does not have, so the written
    file did not validate although the import reported nothing."""
    config = write_config(
        tmp_path,
        {
            "name": "N",
            "workflow": [
                {"message": "0", "tool_use": ["a"]},
                {"message": "Look it up", "tool_use": ["arxiv"]},
            ],
            "tools": [
                {"type": "function", "function": {"name": "a", "parameters": {"properties": {}}}},
                {
                    "type": "function",
                    "function": {
                        "name": "arxiv",
                        "parameters": {"properties": {"query": {"type": "string"}}},
                    },
                },
            ],
        },
    )
    out = tmp_path / "out"
    done = run_cli("import-aios", str(config), "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = config.read_text().splitlines()
    warnings = [line for line in done.stderr.splitlines() if "[aios-workflow]" in line]
    assert len(warnings) == 2  # one per tool, at the entry that uses it
    for warning, (tool, message, call) in zip(
        warnings,
        [("a", '"0"', "tool: a"), ("arxiv", '"Look it up"', 'args: {query: "{{ task }}"}')],
        strict=True,
    ):
        file, line, column, rest = warning.split(":", 3)
        assert file == str(config)
        assert lines[int(line) - 1][int(column) - 1 :].startswith(message)
        assert f"uses tool '{tool}', which flowengine does not have" in rest
        assert "once a plugin provides" in rest and call in rest
    written = out / "n.yaml"
    result = validate_file(str(written))
    assert result.errors == []
    assert {d.code for d in result.diagnostics} == {"unknown-declared-tool"}
    assert result.agent.tools == ["a", "arxiv"]
    assert [step.tool for step in result.agent.steps.values()] == [None, None, None]
    text = written.read_text()
    assert "# AIOS calls a here" in text and 'args: {query: "{{ task }}"}' in text
    assert run_cli("validate", str(written)).returncode == 0


def test_a_workflow_tool_flowengine_has_is_not_called_with_arguments_it_does_not_take(
    tmp_path: Path,
) -> None:
    calculator = {
        "type": "function",
        "function": {"name": "calculator", "parameters": {"properties": {"q": {}}}},
    }
    config = write_config(
        tmp_path,
        {
            "name": "C",
            "workflow": [{"message": "Add", "tool_use": ["calculator"]}],
            "tools": [calculator],
        },
    )
    text, report = imported(config)
    (warning,) = report.diagnostics
    assert (warning.code, warning.line) == ("aios-workflow", 5)
    assert "flowengine's calculator takes 'expression', and the config gives 'q'" in (
        warning.message
    )
    result = validate_text(text)
    assert result.diagnostics == [] and result.agent.steps["Step 1"].tool is None


def test_an_imported_workflow_tool_call_really_runs(tmp_path: Path) -> None:
    calculator = {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
            },
        },
    }
    config = write_config(
        tmp_path,
        {
            "name": "Calc",
            "workflow": [
                {"message": "Calculate the expression", "tool_use": ["calculator"]},
                "Explain the result",
            ],
            "tools": [calculator],
        },
    )
    assert run_cli("import-aios", str(config), "-o", str(tmp_path)).returncode == 0
    script = write_config(tmp_path, {"default": "The result is 14."}, "script.json")
    db = tmp_path / "runs.duckdb"
    done = run_cli(
        "run",
        str(tmp_path / "calc.yaml"),
        "--input",
        "(3+4)*2",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--db",
        str(db),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["path"] == ["Step 1", "Step 2", "answer"]
    assert outcome["output"] == "The result is 14."
    with duckdb.connect(str(db), read_only=True) as con:
        calls = con.execute("SELECT tool, ok, result->>'value' FROM tool_calls").fetchall()
    assert calls == [("calculator", True, "14")]


def test_what_a_newer_config_cannot_keep_is_reported_where_it_is(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "name": "Odd",
            "flow": [],
            "workflow": ["Never converted"],
            "tools": ["/", 7, "local/wikipedia"],
            "build": {"entry": "agent.py", "module": "OddAgent"},
        },
    )
    text, report = imported(config)
    lines = config.read_text().splitlines()
    found = {(d.severity.value, d.code, lines[d.line - 1].strip()) for d in report.diagnostics}
    assert found == {
        ("warning", "aios-workflow", '"workflow": ['),
        ("warning", "aios-tool", '"/",'),
        ("warning", "aios-tool", "7,"),
        ("warning", "aios-config", '"build": {'),
    }
    assert "'agent.py' (class OddAgent) is not converted" in " ".join(
        d.message for d in report.diagnostics
    )
    assert validate_text(text).agent.tools == ["wikipedia"]


def test_a_workflow_entry_that_is_not_a_step_fails_the_import(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, {"name": "Bad", "workflow": ["First", {"tool_use": ["x"], "note": "?"}, 3]}
    )
    done = run_cli("import-aios", str(config), "-o", "-")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "[aios-workflow]" in line]
    assert len(errors) == 2
    assert "workflow entry 2 is not a text" in errors[0] and ":9:15:" in errors[0]
    assert "workflow entry 3" in errors[1] and ":11:5:" in errors[1]
    workflow_not_a_list = write_config(tmp_path, {"name": "B", "workflow": "do it"}, "b.json")
    report = Reporter(str(workflow_not_a_list))
    assert import_config(str(workflow_not_a_list), "x", report).yaml is not None
    assert [d.code for d in report.diagnostics] == ["aios-workflow"] and report.has_errors


workflow_entries = st.one_of(
    texts,
    st.fixed_dictionaries(
        {"message": texts},
        optional={
            "tool_use": st.one_of(
                st.none(), st.lists(st.sampled_from(["a", "b", "zz", "calculator"]))
            )
        },
    ),
    st.integers(),
    st.none(),
)
tool_entries = st.one_of(
    st.text(max_size=20),
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                # calculator: a tool flowengine has, taking 'expression'
                {"name": st.sampled_from(["a", "b", "1x", "", "calculator"])},
                optional={
                    "parameters": st.fixed_dictionaries(
                        {
                            "properties": st.dictionaries(
                                st.sampled_from(["q", "n", "expression"]),
                                st.fixed_dictionaries(
                                    {"type": st.sampled_from(["string", "integer"])}
                                ),
                            )
                        }
                    )
                },
            ),
        }
    ),
    st.integers(),
)


@given(
    workflow=st.one_of(st.lists(workflow_entries, max_size=6), st.text(max_size=5)),
    tools=st.one_of(st.lists(tool_entries, max_size=5), st.none(), st.text(max_size=5)),
)
# Issue 33: a step called a tool flowengine does not have, and the import said nothing.
@example(
    workflow=[{"message": "0", "tool_use": ["a"]}],
    tools=[{"type": "function", "function": {"name": "a", "parameters": {"properties": {}}}}],
)
def test_any_newer_config_imports_to_yaml_that_loads_or_says_why(
    tmp_path_factory, workflow: object, tools: object
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(json.dumps({"name": "N", "workflow": workflow, "tools": tools}))
    report = Reporter(str(path))
    result = import_config(str(path), "x", report)
    assert result.yaml is not None
    checked = validate_text(result.yaml)
    assert checked.agent is not None, result.yaml
    if not report.has_errors:
        assert checked.errors == [], result.yaml


def test_tool_names_that_yaml_reads_as_other_values_stay_text(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "name": "Words",
            "workflow": [{"message": "Check", "tool_use": ["true"]}],
            "tools": [{"function": {"name": "true", "parameters": {}}}, "x/null", "on"],
            "tool_info": ["yes: says yes"],
        },
    )
    available = {"true": a_tool("true", {})}  # so that the step calls it
    text, report = imported(config, available)
    result = validate_text(text, tools=available)
    assert report.diagnostics == []
    assert result.errors == []
    assert result.agent.tools == ["yes", "true", "null", "on"]
    assert result.agent.steps["Step 1"].tool == "true"
