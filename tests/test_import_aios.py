"""AIOS import: the four released configs, their quirks, and faithful round trips."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from flowengine.agentfile.diagnostics import Reporter
from flowengine.graph import validate_file, validate_text
from flowengine.importers.aios import import_config, output_filename

from .conftest import AGENTS, run_cli


def labelled_edges(graph) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {(u, v, label) for u, v, d in graph.edges(data=True) for label in d["labels"]}


def imported(config: Path) -> tuple[str, Reporter]:
    report = Reporter(str(config))
    result = import_config(str(config), "../schemas/agent.schema.json", report)
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


def test_imported_travel_agent_graph_equals_the_hand_written_one(aios_dir: Path) -> None:
    text, report = imported(aios_dir / "TravelAgent.json")
    assert report.diagnostics == []
    ours = validate_text(text).graph
    hand = validate_file(str(AGENTS / "travel_agent.yaml")).graph
    assert set(ours.nodes) == set(hand.nodes)
    assert labelled_edges(ours) == labelled_edges(hand)
    assert dict(ours.nodes(data="kind")) == dict(hand.nodes(data="kind"))
    # The hand-written agent adds tools and 'when' conditions, and keeps every AIOS text.
    for node, text in ours.nodes(data="text"):
        assert text in hand.nodes[node]["text"]


def test_hand_written_travel_agent_keeps_the_aios_texts(aios_dir: Path) -> None:
    config = json.loads((aios_dir / "TravelAgent.json").read_text())
    hand = validate_file(str(AGENTS / "travel_agent.yaml")).agent
    for entry in config["flow"]:
        step_id, kind, text = entry.split(":::")[:3]
        step = hand.steps[step_id]
        assert step.kind == kind.lower()
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
        assert [s.kind for s in result.agent.steps.values()] == ["terminal"]


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
    assert agent.name == name.strip()
    step1 = agent.steps["Step 1"]
    assert step1.question == norm(question)
    assert list(step1.branches) == labels
    assert agent.steps["Step 2"].instruction == norm(instruction)


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
