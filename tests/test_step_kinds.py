"""Step kinds as units: the registry, the entry-point group ``flowengine.steps`` that
registers them (flowengine's own four, and plugins), broken plugins giving one warning
line each, never a traceback, and a real plugin kind (``tests/data/step_plugin``, 'echo',
installed with pip into a folder put on PYTHONPATH) in validate, run, viz, lsp and ui."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pytest

from flowengine.steps import registry
from flowengine.steps.base import StepKind
from flowengine.steps.registry import BUILTIN_ENTRY_POINTS, GROUP, kind_of, kinds

from .conftest import ROOT, flowengine_command

BROKEN_MODULES = {
    "flowengine_steps_crash.py": "import a_dependency_that_is_not_installed\n",
    "flowengine_steps_misc.py": (
        "from flowengine.steps.process import Process\n"
        "class Again(Process):\n"
        "    pass\n"
        "NOT_A_KIND = {'name': 'dict'}\n"
    ),
}
BROKEN_ENTRY_POINTS = {
    "crash": "flowengine_steps_crash:KIND",
    "clash": "flowengine_steps_misc:Again",
    "notakind": "flowengine_steps_misc:NOT_A_KIND",
}


def cli(*args: str, path: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
    """``flowengine ARGS`` with extra folders (where plugins are) in front of PYTHONPATH."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    folders = [str(p) for p in path] + [p for p in [env.get("PYTHONPATH", "")] if p]
    if folders:
        env["PYTHONPATH"] = os.pathsep.join(folders)
    return subprocess.run(
        [*flowengine_command(), *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution of broken step-kind plugins, its metadata written by hand."""
    site = tmp_path_factory.mktemp("broken-steps")
    info = site / "flowengine_broken_steps-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flowengine-broken-steps\nVersion: 0.1\n"
    )
    lines = [f"[{GROUP}]"] + [f"{name} = {value}" for name, value in BROKEN_ENTRY_POINTS.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, text in BROKEN_MODULES.items():
        (site / name).write_text(text)
    return site


def test_the_built_in_kinds_are_registered_through_the_entry_point_group() -> None:
    # What was installed from pyproject.toml (make server re-installs when it changes).
    installed = metadata.distribution("flowengine").entry_points.select(group=GROUP)
    assert {ep.name: ep.value for ep in installed} == BUILTIN_ENTRY_POINTS
    assert f'[project.entry-points."{GROUP}"]' in (ROOT / "pyproject.toml").read_text()
    assert list(kinds()) == ["process", "decision", "terminal", "input", "set"]
    assert all(isinstance(kind, StepKind) for kind in kinds().values())
    assert kind_of("decision") is kinds()["decision"]
    assert kind_of("") is None and kind_of("proces") is None


def test_each_kind_is_one_module_that_knows_its_name() -> None:
    for name, value in BUILTIN_ENTRY_POINTS.items():
        module = value.split(":")[0]
        assert module == f"flowengine.steps.{name}"
        assert (ROOT / "flowengine" / "steps" / f"{name}.py").is_file()


def test_a_broken_plugin_gives_one_warning_line_and_the_rest_works(broken_site: Path) -> None:
    done = cli("validate", "agents/rec_agent.yaml", path=[broken_site])
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "step-kind plugin" in line]
    assert len(warnings) == 3, done.stderr
    by_name = {name: [w for w in warnings if f"'{name}'" in w] for name in BROKEN_ENTRY_POINTS}
    assert all(len(found) == 1 for found in by_name.values()), warnings
    assert "ModuleNotFoundError" in by_name["crash"][0]
    assert "a step kind named 'process' already exists" in by_name["clash"][0]
    assert "not a flowengine.steps.base.StepKind" in by_name["notakind"][0]
    assert all(w.startswith("flowengine: warning: ") for w in warnings)
    assert all("fix or uninstall flowengine-broken-steps" in w for w in warnings)


def test_built_in_kinds_load_without_installed_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkout never installed has no entry points at all; the built-ins still load.
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [])
    assert list(registry.kinds.__wrapped__()) == ["process", "decision", "terminal", "input", "set"]


# -- a real plugin: tests/data/step_plugin, the 'echo' kind ------------------------------

STEP_PLUGIN_SOURCE = Path(__file__).resolve().parent / "data" / "step_plugin"

ECHO_AGENT = """\
name: Echoer
steps:
  greet:
    type: echo
    say: "Hello, {{ task }}!"
    save_as: greeting
    next: answer
  answer:
    type: terminal
    output: "{{ greeting }} (echoed)"
"""

BAD_ECHO_AGENT = """\
name: Echoer
steps:
  greet:
    type: echo
    say: "   "
    next: answer
  answer:
    type: terminal
    output: done
  quiet:
    type: echo
    next: answer
"""


@pytest.fixture(scope="session")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/step_plugin installed with pip (offline, no build isolation) into a folder."""
    base = tmp_path_factory.mktemp("step-plugin")
    source = base / "source"  # a copy: building writes build/ and *.egg-info beside it
    shutil.copytree(STEP_PLUGIN_SOURCE, source)
    site = base / "site"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--target", str(site), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (site / "flowengine_echo-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


def _with_plugin(echo_site: Path) -> str:
    return os.pathsep.join([str(echo_site), *[p for p in [os.environ.get("PYTHONPATH")] if p]])


def test_a_plugin_kind_is_validated_by_its_schema_piece_and_its_checks(
    echo_site: Path, tmp_path: Path
) -> None:
    good, bad = tmp_path / "echo.yaml", tmp_path / "bad.yaml"
    good.write_text(ECHO_AGENT)
    bad.write_text(BAD_ECHO_AGENT)
    valid = cli("validate", str(good), path=[echo_site])
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "Traceback" not in valid.stderr
    invalid = cli("validate", str(bad), path=[echo_site])
    assert invalid.returncode == 1
    lines = invalid.stdout.splitlines()
    # the kind's own check, and its schema piece (a missing field), each at file:line:col
    assert (
        f"{bad}:5:10: error: echo step 'greet' says nothing; give 'say' some text "
        "[invalid-value]" in lines
    )
    assert f"{bad}:10:3: error: step 'quiet' is missing the required field 'say' " in (
        invalid.stdout
    )
    # without the plugin, the kind is unknown
    unknown = cli("validate", str(good))
    assert unknown.returncode == 1 and "type" in unknown.stdout


def test_a_plugin_kind_runs_and_is_drawn_in_every_format(echo_site: Path, tmp_path: Path) -> None:
    agent = tmp_path / "echo.yaml"
    agent.write_text(ECHO_AGENT)
    script = tmp_path / "script.json"
    script.write_text('{"default": "unused"}')
    db = tmp_path / "runs.duckdb"
    args = ["--backend", "scripted", "--script", str(script), "--db", str(db), "--json"]
    ran = cli("run", str(agent), "--input", "Ada", *args, path=[echo_site])
    assert ran.returncode == 0, ran.stderr
    [outcome] = json.loads(ran.stdout)
    assert outcome["status"] == "completed"
    assert outcome["output"] == "Hello, Ada! (echoed)"
    assert outcome["path"] == ["greet", "answer"]

    mermaid = cli("viz", str(agent), path=[echo_site]).stdout
    assert "  classDef echo fill:#e6f4ea,stroke:#12b5cb" in mermaid
    assert '  s0{{"<b>greet</b><br/>say#58; Hello, #123;#123; task #125;#125;!' in mermaid
    assert mermaid.splitlines()[-2:] == ["  start --> s0", "  s0 --> s1"]
    dot = cli("viz", str(agent), "--format", "dot", path=[echo_site]).stdout
    assert '"greet" [shape=hexagon, style="filled", fillcolor="#e6f4ea"' in dot
    page = tmp_path / "echo.html"
    drawn = cli("viz", str(agent), "--format", "html", "-o", str(page), path=[echo_site])
    assert drawn.returncode == 0, drawn.stderr
    html = page.read_text()
    assert "<td>echo</td>" in html and "say: Hello, {{ task }}!" in html
    assert "polygon" in html  # Graphviz drew the hexagon into the page's SVG


def test_the_language_server_offers_and_describes_a_plugin_kind(
    echo_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .clients.lsp import LspClient

    monkeypatch.setenv("PYTHONPATH", _with_plugin(echo_site))
    client = LspClient([*flowengine_command(), "lsp"], ROOT)
    try:
        text = ECHO_AGENT
        uri = client.open(tmp_path / "echo.yaml", text)
        assert client.wait_for_diagnostics(uri) == []
        line = text.splitlines().index("    type: echo")
        completion = client.at("textDocument/completion", uri, line, len("    type: "))
        items = completion["items"] if isinstance(completion, dict) else completion
        offered = {item["label"]: item.get("detail") for item in items}
        assert set(offered) >= {"process", "decision", "terminal", "input", "echo"}
        assert offered["echo"] == "say a template's text, without the model"
        kind = client.at("textDocument/hover", uri, line, len("    type: ec"))
        assert (
            kind["contents"]["value"] == "**echo** step: say a template's text, without the model"
        )
        step = client.at("textDocument/hover", uri, text.splitlines().index("  greet:"), 3)
        value = step["contents"]["value"]
        assert "**greet** · echo" in value and "say: Hello, {{ task }}!" in value
        assert "says its text; no model is asked" in value
    finally:
        client.shutdown()


def test_the_web_page_shows_a_run_with_a_plugin_kind(
    echo_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "echo.yaml"
    agent.write_text(ECHO_AGENT)
    script = tmp_path / "script.json"
    script.write_text('{"default": "unused"}')
    db = tmp_path / "runs.duckdb"
    args = ["--backend", "scripted", "--script", str(script), "--db", str(db), "--json"]
    ran = cli("run", str(agent), "--input", "Ada", *args, path=[echo_site])
    [outcome] = json.loads(ran.stdout)
    monkeypatch.setenv("PYTHONPATH", _with_plugin(echo_site))
    process = subprocess.Popen(
        [*flowengine_command(), "ui", "--port", "0", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        found = re.search(r"http://[\d.]+:\d+/", process.stdout.readline())
        assert found is not None
        url = found.group(0).rstrip("/")
        with urllib.request.urlopen(f"{url}/runs/{outcome['run_id']}", timeout=60) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "greet" in page and "Hello, Ada!" in page
        assert 'fill="#12b5cb"' in page  # the echo step's bar, in the kind's colour
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
