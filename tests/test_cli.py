"""The real command line, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from flowengine.graph import validate_file

from .conftest import AGENTS, BROKEN, ROOT, run_cli

LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (error|warning): .+ \[[a-z0-9-]+\]$"
)


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stdout + done.stderr


def test_validate_shipped_agents_exits_0() -> None:
    done = run_cli("validate", "agents/")
    no_traceback(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == "10 files checked: 0 errors, 0 warnings"  # 5 agents, 5 test files


def test_validate_broken_corpus_exits_1_with_located_lines() -> None:
    done = run_cli("validate", str(BROKEN))
    no_traceback(done)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) >= 40
    for line in lines:
        assert LINE.match(line), line


def test_validate_json_format_lists_diagnostic_objects() -> None:
    done = run_cli("validate", str(BROKEN / "unknown_field.yaml"), "--format", "json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data == [
        {
            "file": str(BROKEN / "unknown_field.yaml"),
            "line": 6,
            "column": 5,
            "severity": "error",
            "code": "unknown-field",
            "message": "unknown field 'nxt' in step 'Step 4'; did you mean 'next'?",
        },
        {
            "file": str(BROKEN / "unknown_field.yaml"),
            "line": 10,
            "column": 5,
            "severity": "error",
            "code": "unknown-field",
            "message": "unknown field 'colour' in step 'finish'; "
            "allowed here: type, instruction, output, format, schema, set, progress",
        },
    ]


def test_warnings_pass_unless_strict() -> None:
    path = str(BROKEN / "unguarded_cycle.yaml")
    assert run_cli("validate", path).returncode == 0
    strict = run_cli("validate", "--strict", path)
    assert strict.returncode == 1
    assert ": error: " in strict.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["validate"],
        ["validate", "no/such/path.yaml"],
        ["validate", "--format", "xml", "agents/"],
        ["viz", "agents/travel_agent.yaml", "--format", "gif"],
        ["frobnicate"],
        ["import-aios", "missing.json"],
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    done = run_cli(*args)
    no_traceback(done)
    assert done.returncode == 2
    assert done.stderr.strip()


def test_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("validate", str(tmp_path))
    assert done.returncode == 2
    assert "no *.yaml or *.yml files" in done.stderr


def test_root_cli_py_behaves_as_the_console_script() -> None:
    direct = subprocess.run(
        [sys.executable, "cli.py", "validate", str(BROKEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    script = run_cli("validate", str(BROKEN))
    assert (direct.returncode, direct.stdout, direct.stderr) == (
        script.returncode,
        script.stdout,
        script.stderr,
    )
    helps = [
        subprocess.run(
            [sys.executable, "cli.py", "--help"], cwd=ROOT, capture_output=True, text=True
        ),
        run_cli("--help"),
    ]
    assert helps[0].stdout == helps[1].stdout


def test_help_teaches_each_command() -> None:
    for command in ("validate", "viz", "import-aios"):
        done = run_cli(command, "--help")
        assert done.returncode == 0
        assert "Examples:" in done.stdout


def test_viz_mermaid_draws_shapes_and_branch_labels() -> None:
    done = run_cli("viz", "agents/travel_agent.yaml")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.count("flowchart TD") == 1
    nodes = re.findall(r"^  (s\d+)(\[\"|\{\"|\(\[\")", text, re.M)
    shapes = [shape for _, shape in nodes]
    assert (shapes.count('["'), shapes.count('{"'), shapes.count('(["')) == (17, 6, 1)
    # A branch label, then what chooses it: '#58;' (':') and a when condition, or '(default)'.
    labels = re.findall(r"-->\|([^|]+)\|", text)
    branches = [re.split(r" |#58;", label)[0] for label in labels]
    assert sorted(branches) == sorted(["city", "state", "yes", "no"] + ["yes", "no"] * 4)
    assert sum(label.endswith("#40;default#41;") for label in labels) == 4


def test_viz_json_is_the_node_link_form_of_the_compiled_graph() -> None:
    done = run_cli("viz", "agents/travel_agent.yaml", "--format", "json")
    assert done.returncode == 0
    drawn = nx.node_link_graph(json.loads(done.stdout), edges="edges")
    compiled = validate_file(str(AGENTS / "travel_agent.yaml")).graph
    assert set(drawn.nodes) == {f"Step {i}" for i in range(1, 25)}
    assert dict(drawn.nodes(data=True)) == dict(compiled.nodes(data=True))
    assert list(drawn.edges(data=True)) == list(compiled.edges(data=True))
    assert drawn.graph["start"] == "Step 1" and drawn.graph["name"] == "TravelAgent"


def test_viz_dot_uses_diamonds_for_decisions() -> None:
    done = run_cli("viz", "agents/travel_agent.yaml", "--format", "dot")
    assert done.returncode == 0
    assert done.stdout.count("shape=diamond") == 6
    assert done.stdout.count("rounded,filled,bold") == 1


# On a developer's machine without Graphviz these are skipped; in CI they must run.
needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None and not os.environ.get("CI"),
    reason="Graphviz 'dot' is installed by 'make setup'",
)


@needs_graphviz
def test_viz_png_svg_and_html_are_real_renderings(tmp_path: Path) -> None:
    for fmt in ("png", "svg", "html"):
        out = tmp_path / f"travel.{fmt}"
        done = run_cli("viz", "agents/travel_agent.yaml", "-o", str(out))
        assert done.returncode == 0, done.stderr
        data = out.read_bytes()
        if fmt == "png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert width >= 800 and height >= 1500  # 110 dpi: readable text, not a thumbnail
        else:
            text = data.decode()
            assert "<svg" in text
            for i in range(1, 25):
                assert f">Step {i}<" in text
            if fmt == "html":
                assert text.startswith("<!doctype html>") and '<table id="steps">' in text


@needs_graphviz
def test_viz_png_defaults_to_a_file_named_after_the_agent(tmp_path: Path) -> None:
    done = run_cli("viz", str(AGENTS / "math_agent.yaml"), "--format", "png", cwd=tmp_path)
    assert done.returncode == 0
    assert (tmp_path / "math_agent.png").read_bytes()[:4] == b"\x89PNG"


def test_viz_draws_a_flawed_agent_and_outlines_the_flaws(tmp_path: Path) -> None:
    done = run_cli("viz", str(BROKEN / "unreachable.yaml"), "--format", "dot")
    assert done.returncode == 0
    assert "unreachable-step" in done.stderr and "outlined in red" in done.stderr
    orphan = next(line for line in done.stdout.splitlines() if line.startswith('  "orphan"'))
    assert "#d93025" in orphan


def test_viz_of_an_unloadable_file_exits_1() -> None:
    done = run_cli("viz", str(BROKEN / "alias_bomb.yaml"))
    no_traceback(done)
    assert done.returncode == 1
    assert "yaml-too-complex" in done.stderr


def test_validate_and_viz_do_not_import_a_model_runtime_database_or_language_server() -> None:
    probe = (
        "import sys\n"
        "from flowengine.cli import main\n"
        "main(['validate', 'agents/'])\n"
        "main(['viz', 'agents/travel_agent.yaml', '--format', 'json', '-o', '/dev/null'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'duckdb', 'ctransformers', 'llama_cpp', 'torch', 'tokenizers', 'pygls', 'lsprotocol'})\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_viz_refuses_a_folder_and_an_unwritable_output() -> None:
    folder = run_cli("viz", "agents/")
    assert folder.returncode == 2 and "folder" in folder.stderr
    unwritable = run_cli("viz", "agents/math_agent.yaml", "-o", "/proc/flowengine/x.mmd")
    no_traceback(unwritable)
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr


def test_hostile_inputs_from_the_issue_give_located_errors(tmp_path: Path) -> None:
    files = {
        "empty.yaml": b"",
        "binary.yaml": bytes(range(256)) * 4,
        "a_list.yaml": b"- name: A\n- steps: {}\n",
        "deep.yaml": b"a: " + b"[" * 200_000,
        "bomb.yaml": (BROKEN / "alias_bomb.yaml").read_bytes(),
        "latin1.yaml": "name: caf\u00e9\n".encode("latin-1"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with (tmp_path / "huge.yaml").open("wb") as handle:  # 50 MB, sparse: written in no time
        handle.truncate(50 * 1024 * 1024)
    done = run_cli("validate", str(tmp_path), timeout=60)
    no_traceback(done)
    assert done.returncode == 1
    codes = {
        Path(line.split(":")[0]).name: line.rsplit("[", 1)[1] for line in done.stdout.splitlines()
    }
    assert codes == {
        "a_list.yaml": "not-an-agent]",
        "binary.yaml": "binary-file]",
        "bomb.yaml": "yaml-too-complex]",
        "deep.yaml": "yaml-too-complex]",
        "empty.yaml": "empty-file]",
        "huge.yaml": "file-too-large]",
        "latin1.yaml": "not-utf8]",
    }
