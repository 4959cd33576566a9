"""Step kinds as units: the registry, the entry-point group ``flowengine.steps`` that
registers them (flowengine's own four, and plugins), and broken plugins giving one warning
line each, never a traceback."""

from __future__ import annotations

import os
import subprocess
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


def test_the_four_kinds_are_registered_through_the_entry_point_group() -> None:
    # What was installed from pyproject.toml (make server re-installs when it changes).
    installed = metadata.distribution("flowengine").entry_points.select(group=GROUP)
    assert {ep.name: ep.value for ep in installed} == BUILTIN_ENTRY_POINTS
    assert f'[project.entry-points."{GROUP}"]' in (ROOT / "pyproject.toml").read_text()
    assert list(kinds()) == ["process", "decision", "terminal", "input"]
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
    assert list(registry.kinds.__wrapped__()) == ["process", "decision", "terminal", "input"]
