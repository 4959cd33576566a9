"""Tools as a layer: the catalog (built-ins and plugins through entry points), the
``flowengine tools`` command, and ``validate`` knowing every tool and its arguments.

The plugin is a real distribution (``tests/data/plugin/``), installed once per session
with pip into a temporary folder that the CLI subprocesses get on PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import duckdb
import pytest

from flowengine.graph import validate_text
from flowengine.tools import catalog as catalog_module
from flowengine.tools.base import Tool, describe_type
from flowengine.tools.catalog import BUILTIN_ENTRY_POINTS, GROUP, available_tools
from flowengine.tools.registry import ToolRegistry

from .conftest import ROOT, flowengine_command, install_plugin

PLUGIN_SOURCE = Path(__file__).resolve().parent / "data" / "plugin"
BUILTINS = {
    "calculator",
    "plan_trip",
    "search_flights",
    "search_distance",
    "search_restaurants",
    "search_accommodations",
    "search_attractions",
}

GREET_AGENT = """\
name: Greeter
tools: [greet]
steps:
  hello:
    type: process
    tool: greet
    args: {name: "{{ task }}", times: 2}
    save_as: greeting
    next: answer
  answer:
    type: terminal
    output: "{{ greeting.greeting }}"
"""

# Each broken plugin fails differently; the good one beside them must still load.
BROKEN_MODULES = {
    "flowengine_broken_crash.py": "import a_dependency_that_is_not_installed\n",
    "flowengine_broken_badname.py": (
        "from flowengine.tools.base import Tool\n"
        "TOOL = Tool('greet me', 'spaces in a name', {'type': 'object'}, print)\n"
    ),
    "flowengine_broken_misc.py": (
        "from flowengine.tools.base import Tool\n"
        "NOT_A_TOOL = {'name': 'dict'}\n"
        "CLASH = Tool('calculator', 'a second calculator', {'type': 'object'}, print)\n"
        "BAD_SCHEMA = Tool('odd', 'odd', {'type': 'object', 'properties': {'x': "
        "{'type': 'strin'}}}, print)\n"
    ),
}
BROKEN_ENTRY_POINTS = {
    "crash": "flowengine_broken_crash:TOOLS",
    "badname": "flowengine_broken_badname:TOOL",
    "notatool": "flowengine_broken_misc:NOT_A_TOOL",
    "clash": "flowengine_broken_misc:CLASH",
    "badschema": "flowengine_broken_misc:BAD_SCHEMA",
}


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/plugin installed with pip (offline, no build isolation) into a folder."""
    site = install_plugin(PLUGIN_SOURCE, tmp_path_factory.mktemp("plugin"))
    assert (site / "flowengine_hello-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution of broken plugins, its metadata written by hand."""
    site = tmp_path_factory.mktemp("broken-site")
    info = site / "flowengine_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowengine-broken\nVersion: 0.1\n")
    lines = [f"[{GROUP}]"] + [f"{name} = {value}" for name, value in BROKEN_ENTRY_POINTS.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, text in BROKEN_MODULES.items():
        (site / name).write_text(text)
    return site


def cli(
    *args: str, path: Sequence[Path] = (), plugins: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``flowengine ARGS`` with extra folders on PYTHONPATH (where plugins are installed)."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    env.pop("FLOWENGINE_TOOL_PLUGINS", None)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if plugins is not None:
        env["FLOWENGINE_TOOL_PLUGINS"] = plugins
    return subprocess.run(
        [*flowengine_command(), *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout
    assert "internal error" not in done.stderr


# -- the built-ins ------------------------------------------------------------------------


def test_builtins_are_registered_through_the_entry_point_group_in_pyproject() -> None:
    # What pip installed from pyproject.toml (make setup re-installs when it changes).
    installed = metadata.distribution("flowengine").entry_points.select(group=GROUP)
    assert {ep.name: ep.value for ep in installed} == BUILTIN_ENTRY_POINTS
    assert f'[project.entry-points."{GROUP}"]' in (ROOT / "pyproject.toml").read_text()
    assert set(available_tools()) >= BUILTINS
    found = catalog_module.catalog()
    assert {found.providers[name].distribution for name in BUILTINS} == {"flowengine"}
    assert found.problems == []


def test_from_a_checkout_never_installed_the_builtins_still_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No installed metadata at all cannot be produced in this venv; fake just that.
    monkeypatch.setattr(catalog_module.metadata, "entry_points", lambda group: [])
    loaded = catalog_module.catalog.__wrapped__()
    assert set(loaded.tools) == BUILTINS and loaded.problems == []


def test_listing_tools_and_validating_travel_agent_need_no_database_or_model() -> None:
    probe = (
        "import sys\n"
        "from flowengine.cli import main\n"
        "main(['tools'])\n"
        "main(['tools', '--format', 'json'])\n"
        "main(['validate', 'agents/travel_agent.yaml'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'duckdb', 'ctransformers', 'llama_cpp', 'tokenizers'})\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_tools_lists_each_tool_with_its_arguments() -> None:
    done = cli("tools")
    no_traceback(done)
    assert done.returncode == 0 and done.stderr == ""
    for name in BUILTINS:
        assert f"\n{name}  (built-in)\n" in f"\n{done.stdout}"
    block = done.stdout.split("search_distance  (built-in)\n")[1].split("\n\n")[0]
    assert block.splitlines()[0].strip().startswith("Distance, duration and cost")
    rows = [line.split() for line in block.splitlines()[1:]]
    assert rows[0] == ["origin", "string", "required"]
    assert rows[2][:4] == ["mode", "one", "of:", "taxi,"]
    assert rows[2][-3:] == ["optional,", "default", '"self-driving"']

    listing = json.loads(cli("tools", "--format", "json").stdout)
    assert {tool["name"] for tool in listing} == BUILTINS
    flights = next(tool for tool in listing if tool["name"] == "search_flights")
    assert flights["provider"] == {
        "plugin": "travel",
        "distribution": "flowengine",
        "builtin": True,
    }
    assert flights["arguments"] == [
        {"name": "origin", "type": "string", "required": True},
        {"name": "destination", "type": "string", "required": True},
        {"name": "date", "type": "string", "required": False, "default": ""},
    ]
    assert flights["parameters"]["required"] == ["origin", "destination"]


def test_tools_names_one_tool_or_says_which_it_meant() -> None:
    one = cli("tools", "calculator", "--format", "json")
    assert [tool["name"] for tool in json.loads(one.stdout)] == ["calculator"]
    typo = cli("tools", "calculater")
    no_traceback(typo)
    assert typo.returncode == 2
    assert typo.stderr.strip() == (
        "flowengine tools: no tool named 'calculater'; did you mean 'calculator'?"
    )


# -- plugins ------------------------------------------------------------------------------


def test_a_plugin_tool_is_listed_validated_against_and_called_by_a_run(
    plugin_site: Path, tmp_path: Path
) -> None:
    listed = cli("tools", "greet", path=[plugin_site])
    no_traceback(listed)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[:2] == [
        "greet  (plugin hello (flowengine-hello))",
        "  Greet someone by name.",
    ]
    assert "  returns:\n    greeting  string  (the greeting)" in listed.stdout  # a plugin's too
    listing = json.loads(cli("tools", "--format", "json", path=[plugin_site]).stdout)
    assert {tool["name"] for tool in listing} == BUILTINS | {"greet"}
    typo = tmp_path / "typo.yaml"
    typo.write_text(GREET_AGENT.replace("greeting.greeting", "greeting.greting"))
    checked = cli("validate", str(typo), path=[plugin_site])
    assert checked.returncode == 1 and "did you mean 'greeting'?" in checked.stdout

    agent = tmp_path / "greeter.yaml"
    agent.write_text(GREET_AGENT)
    valid = cli("validate", str(agent), path=[plugin_site])
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout == "" and "0 errors, 0 warnings" in valid.stderr

    db = tmp_path / "runs.duckdb"
    script = tmp_path / "script.json"
    script.write_text('{"default": "unused"}')
    args = ["--backend", "scripted", "--script", str(script), "--db", str(db), "--json"]
    ran = cli("run", str(agent), "--input", "Ada", *args, path=[plugin_site])
    assert ran.returncode == 0, ran.stderr
    [outcome] = json.loads(ran.stdout)
    assert outcome["status"] == "completed"
    assert outcome["output"] == "Hello, Ada! Hello, Ada!"
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT tool, ok, args->>'name' FROM tool_calls").fetchall()
    assert rows == [("greet", True, "Ada")]


def test_without_the_plugin_its_tool_is_unknown(plugin_site: Path, tmp_path: Path) -> None:
    agent = tmp_path / "greeter.yaml"
    agent.write_text(GREET_AGENT)
    for done in (
        cli("validate", str(agent)),
        cli("validate", str(agent), path=[plugin_site], plugins=""),
        cli("validate", str(agent), path=[plugin_site], plugins="some-other-package"),
    ):
        no_traceback(done)
        assert done.returncode == 1
        lines = done.stdout.splitlines()
        assert lines == [
            f"{agent}:2:9: warning: 'tools' lists 'greet', which is not a tool flowengine has; "
            "`flowengine tools` lists the tools there are (is a plugin not installed?) "
            "[unknown-declared-tool]",
            f"{agent}:6:11: error: step 'hello' calls tool 'greet', which is not a tool "
            "flowengine has; `flowengine tools` lists the tools there are (is a plugin not "
            "installed?) [unknown-tool]",
        ]
    chosen = cli("validate", str(agent), path=[plugin_site], plugins="flowengine_hello")
    assert chosen.returncode == 0, chosen.stdout


def test_plugin_tool_arguments_are_checked_at_their_lines(
    plugin_site: Path, tmp_path: Path
) -> None:
    agent = tmp_path / "greeter.yaml"
    agent.write_text(
        GREET_AGENT.replace(
            'args: {name: "{{ task }}", times: 2}', "args:\n      nme: Ada\n      times: '2'"
        ).replace("tool: greet", "tool: gret")
    )
    unknown = cli("validate", str(agent), path=[plugin_site])
    assert unknown.returncode == 1
    assert [line.split(": ", 2)[2] for line in unknown.stdout.splitlines()] == [
        "step 'hello' calls tool 'gret', which is not a tool flowengine has; "
        "did you mean 'greet'? [unknown-tool]"
    ]
    agent.write_text(agent.read_text().replace("tool: gret", "tool: greet"))
    done = cli("validate", str(agent), "--format", "json", path=[plugin_site])
    found = [(d["line"], d["column"], d["code"], d["message"]) for d in json.loads(done.stdout)]
    assert found == [
        (8, 7, "unknown-tool-argument", "tool 'greet' (step 'hello') takes no argument 'nme'; "
         "did you mean 'name'?"),
        (9, 14, "invalid-tool-argument", "argument 'times' of tool 'greet' (step 'hello') "
         "must be a whole number, not text ('2')"),
    ]  # fmt: skip


def test_broken_plugins_are_skipped_with_one_line_warnings(
    plugin_site: Path, broken_site: Path, tmp_path: Path
) -> None:
    done = cli("tools", "--format", "json", path=[broken_site, plugin_site])
    no_traceback(done)
    assert done.returncode == 0
    assert {tool["name"] for tool in json.loads(done.stdout)} == BUILTINS | {"greet"}
    warnings = done.stderr.splitlines()
    assert len(warnings) == len(BROKEN_ENTRY_POINTS)
    for line in warnings:
        assert line.startswith("flowengine: warning: tool plugin '")
        assert line.endswith("; fix or uninstall flowengine-broken")
    said = "\n".join(warnings)
    assert "'crash' (flowengine_broken_crash:TOOLS, from flowengine-broken) was skipped: " in said
    assert "ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed'" in said
    assert "ValueError: tool name 'greet me' is not a valid name" in said
    assert "TypeError: it gives dict, not a flowengine.tools.base.Tool" in said
    assert "tool 'calculator' is skipped: built-in already provides a tool of that name" in said
    assert "parameters is not a valid JSON Schema" in said

    agent = tmp_path / "greeter.yaml"
    agent.write_text(GREET_AGENT)
    validated = cli("validate", str(agent), path=[broken_site, plugin_site])
    no_traceback(validated)
    assert validated.returncode == 0 and validated.stdout == ""
    assert len(validated.stderr.splitlines()) == len(BROKEN_ENTRY_POINTS) + 1  # + the count


# -- validate against the tools a run will have --------------------------------------------


def _codes(yaml: str, tools: dict[str, Tool] | None = None) -> list[tuple[str, int]]:
    return [(d.code, d.line) for d in validate_text(yaml, "a.yaml", tools).diagnostics]


def _agent(args: str, tool: str = "calculator") -> str:
    return textwrap.dedent(
        f"""\
        name: A
        tools: [{tool}]
        steps:
          s:
            type: process
            tool: {tool}
            args: {args}
            next: end
          end:
            type: terminal
            output: ok
        """
    )


def test_template_values_are_not_checked_but_literals_are() -> None:
    assert _codes(_agent('{expression: "{{ 6 * 7 }}"}')) == []
    assert _codes(_agent('{expression: "answer: {{ last }}"}')) == []
    assert _codes(_agent('{expression: "1 + 1"}')) == []
    assert _codes(_agent("{expression: [1, 2]}")) == [("invalid-tool-argument", 7)]
    assert _codes(_agent("{expression: null}")) == [("invalid-tool-argument", 7)]
    assert _codes(_agent('{expression: ""}')) == [("invalid-tool-argument", 7)]  # minLength


def test_a_declared_unknown_tool_is_reported_once_at_its_own_entry() -> None:
    yaml = _agent('{expression: "1"}').replace(
        "tools: [calculator]", "tools: [1, bad-name, calculatr, calculatr, calculator]"
    )
    found = [(d.code, d.line, d.column) for d in validate_text(yaml, "a.yaml").diagnostics]
    # The schema speaks for the number, the bad name and the repeat; the tools check only
    # for the name it can judge, at that entry (not at index 0 of the names it kept).
    assert [f for f in found if f[0] == "unknown-declared-tool"] == [
        ("unknown-declared-tool", 2, 22)
    ]
    assert {f[0] for f in found} == {"unknown-declared-tool", "wrong-type", "invalid-value"}


def test_a_run_with_tools_of_its_own_is_validated_against_them() -> None:
    echo = Tool("echo", "says it back", {"type": "object"}, lambda **kw: kw)
    registry = ToolRegistry([echo])
    try:
        # 'echo' takes any argument: nothing to call misspelt.
        assert _codes(_agent("{anything: 1, at: all}", "echo"), registry.tools()) == []
        assert _codes(_agent("{anything: 1}", "echo")) == [
            ("unknown-declared-tool", 2),
            ("unknown-tool", 6),
        ]
        assert _codes(_agent('{expression: "1"}'), registry.tools()) == [
            ("unknown-declared-tool", 2),
            ("unknown-tool", 6),
        ]
    finally:
        registry.close()


def test_an_agent_without_tools_does_not_load_the_catalog() -> None:
    probe = (
        "import sys\n"
        "from flowengine.graph import validate_file\n"
        "validate_file('agents/narrative_agent.yaml')\n"
        "print('flowengine.tools.catalog' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


# -- the Tool type -------------------------------------------------------------------------


def test_a_tool_refuses_metadata_no_agent_could_use() -> None:
    def nothing() -> None:
        return None

    for bad, says in (
        (dict(name="1st"), "not a valid name"),
        (dict(parameters={"type": "array"}), "'type': 'object'"),
        (dict(function="not callable"), "not callable"),
        (dict(timeout=0), "positive number"),
        (dict(timeout=float("nan")), "positive number"),
    ):
        fields = {
            "name": "ok",
            "description": "d",
            "parameters": {"type": "object"},
            "function": nothing,
            **bad,
        }
        with pytest.raises(ValueError, match=says):
            Tool(**fields)  # type: ignore[arg-type]


def test_arguments_are_read_from_the_schema() -> None:
    tool = available_tools()["search_distance"]
    assert [(a.name, a.type, a.required) for a in tool.arguments()] == [
        ("origin", "string", True),
        ("destination", "string", True),
        ("mode", "one of: taxi, self-driving", False),
    ]
    assert not tool.takes_other_arguments
    assert describe_type({"type": ["integer", "null"]}) == "integer|null"
    assert describe_type({"const": 3}) == "exactly 3"
    assert describe_type(True) == "any"
