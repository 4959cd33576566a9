"""Backends as units: the registry of built-ins and plugins (entry-point group
``flowengine.backends``), capabilities, each backend's own command line options, and a
real third-party backend installed with pip and run through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from flowengine.kernel.backends.base import Capability
from flowengine.kernel.backends.registry import (
    BUILTIN_ENTRY_POINTS,
    GROUP,
    available_backends,
)

from .conftest import ROOT, flowengine_command, install_plugin

PLUGIN_SOURCE = Path(__file__).parent / "data" / "backend_plugin"

AGENT = """\
name: Greeter
steps:
  greet:
    type: process
    instruction: Say hello to {{ task }}.
    save_as: greeting
    next: done
  done:
    type: terminal
    output: "{{ greeting }}!"
"""


@pytest.fixture(scope="module")
def canned_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(PLUGIN_SOURCE, tmp_path_factory.mktemp("backend-plugin"))


def cli(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    env.pop("FLOWENGINE_BACKEND_PLUGINS", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [*flowengine_command(), *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


def test_the_built_in_backends_are_registered_as_pyproject_declares_them() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[GROUP] == BUILTIN_ENTRY_POINTS
    installed = {e.name: e.value for e in metadata.entry_points(group=GROUP)}
    assert installed == BUILTIN_ENTRY_POINTS
    backends = available_backends()
    assert list(backends) == ["ctransformers", "llama-cpp", "openai", "scripted"]


def test_each_backend_says_what_it_can_do() -> None:
    backends = available_backends()
    assert Capability.BATCHING in backends["llama-cpp"].capabilities
    assert Capability.SERVER in backends["openai"].capabilities
    assert Capability.CONSTRAINED_DECODING not in backends["scripted"].capabilities
    for name in ("ctransformers", "llama-cpp"):
        assert {Capability.KV_REUSE, Capability.LABEL_LOGPROBS} <= backends[name].capabilities
    assert backends["openai"].model == "name" and backends["scripted"].model is None
    flags = {o.flag for plugin in backends.values() for o in plugin.options}
    assert {"--max-batch", "--base-url", "--script", "--request-timeout"} <= flags


def test_run_help_shows_each_backend_and_its_own_options() -> None:
    done = cli("run", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split()).replace("- ", "-")  # undo wraps at hyphens
    for name, plugin in available_backends().items():
        assert f"{name}: {plugin.help}" in text
        if plugin.options:  # a group of its own options
            assert f"\n--backend {name}:\n" in done.stdout
    assert "--max-batch" in done.stdout and "--base-url" in done.stdout


def test_an_option_of_another_backend_and_an_unknown_backend_are_one_line(tmp_path) -> None:
    agent = tmp_path / "greeter.yaml"
    agent.write_text(AGENT)
    wrong = cli("run", str(agent), "--input", "you", "--max-batch", "4", "--db", "x.duckdb")
    assert wrong.returncode == 2
    last_line = wrong.stderr.strip().splitlines()[-1]
    assert last_line.endswith("--max-batch goes with --backend llama-cpp")
    unknown = cli("run", str(agent), "--input", "you", "--backend", "nosuch")
    assert unknown.returncode == 2 and "no such backend" in unknown.stderr
    assert "ctransformers, llama-cpp, openai, scripted" in unknown.stderr
    assert "Traceback" not in wrong.stderr + unknown.stderr


def test_a_backend_plugin_installed_with_pip_shows_in_help_and_runs_an_agent(
    canned_site: Path, tmp_path: Path
) -> None:
    help_text = cli("run", "--help", site=canned_site)
    assert help_text.returncode == 0, help_text.stderr
    assert "canned: the same reply to every request" in " ".join(help_text.stdout.split())
    assert "--canned-reply TEXT" in help_text.stdout
    # the plugin that reuses llama-cpp's --max-batch is skipped, in one line
    warnings = [line for line in help_text.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "clash" in warnings[0] and "--max-batch" in warnings[0]

    agent = tmp_path / "greeter.yaml"
    agent.write_text(AGENT)
    db = tmp_path / "canned.duckdb"
    done = cli(
        "run", str(agent), "--input", "the world", "--backend", "canned",
        "--canned-reply", "Hello, world", "--db", str(db), "--json", site=canned_site,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "completed"
    assert outcome["output"] == "Hello, world!"
    logs = cli("logs", outcome["run_id"], "--db", str(db), "--format", "json", site=canned_site)
    assert logs.returncode == 0, logs.stderr
    assert '"canned"' in logs.stdout  # the run row names its backend

    elsewhere = cli(
        "run", str(agent), "--input", "x", "--canned-reply", "hi", "--db", str(db),
        site=canned_site,
    )  # fmt: skip
    assert elsewhere.returncode == 2
    assert "--canned-reply goes with --backend canned" in elsewhere.stderr
