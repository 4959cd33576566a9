"""Shared helpers: paths, and running the real CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from .clients import MermaidRenderer, yaml_language_server
from .clients.lsp import LspClient

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "agents"
AGENT_FILES = sorted(p for p in AGENTS.glob("*.yaml") if not p.name.endswith(".test.yaml"))
"""The example agents (their test files, ``*.test.yaml``, sit beside them)."""
BROKEN = Path(__file__).resolve().parent / "broken"
AIOS = Path(__file__).resolve().parent / "data" / "aios"

# `make test` draws the same examples on every machine (with the pinned Hypothesis), so
# that it cannot go red on a commit that changed nothing: derandomized (each property
# seeded from its own source), and no example database, so that a .hypothesis/ folder
# left by an earlier run does not add examples. 400 examples a property (3,600 over the
# loader, validator and import-aios); HYPOTHESIS_PROFILE=thorough for 3,000, the same way.
settings.register_profile(
    "default",
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", settings.get_profile("default"), max_examples=3000)
# `make fuzz`: fresh randomness and many more examples, to find what the fixed draw does
# not. It keeps Hypothesis's example database (.hypothesis/), so a failure found is tried
# first on the next `make fuzz` until it is fixed; add it to the test as an @example too.
settings.register_profile(
    "fuzz",
    settings.get_profile("default"),
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    derandomize=False,
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _draw_no_constants_from_our_source() -> None:
    """Hypothesis also draws constants it finds in the source of the local modules imported
    so far (flowengine's), so a derandomized property would draw other examples when other
    tests ran before it: a client test skipped on one machine, or `pytest one_file.py`.
    Without them the draw depends only on the property. Private API: Hypothesis is pinned,
    and tests/test_fuzz.py fails if this stops working."""
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants

    none = Constants()
    providers._get_local_constants = lambda: none


if settings.default.derandomize:
    _draw_no_constants_from_our_source()


@pytest.hookimpl(tryfirst=True)  # before -m selects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every Hypothesis test 'property' (`make fuzz` selects them), so none is missed."""
    for item in items:
        if isinstance(item, pytest.Function) and is_hypothesis_test(item.obj):
            item.add_marker(pytest.mark.property)


def flowengine_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "flowengine"
    if script.exists():
        return [str(script)]
    found = shutil.which("flowengine")
    if found:
        return [found]
    pytest.fail("the 'flowengine' console script is not installed; run 'make setup'")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``flowengine ARGS`` in a subprocess and capture its output."""
    return subprocess.run(
        [*flowengine_command(), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


@pytest.fixture
def aios_dir() -> Path:
    """The four agent configs of the AIOS release (MIT licence beside them)."""
    return AIOS


@pytest.fixture(scope="session")
def mermaid() -> Iterator[MermaidRenderer]:
    """The real Mermaid in Debian's Chromium, started once for the session."""
    renderer = MermaidRenderer()
    yield renderer
    renderer.close()


@pytest.fixture(scope="session")
def yaml_ls() -> Iterator[LspClient]:
    """The real yaml-language-server with the shipped schema, started once."""
    client = yaml_language_server(ROOT)
    yield client
    client.shutdown()


def install_plugin(source: Path, base: Path) -> Path:
    """The package at ``source`` installed with pip (offline, no build isolation) into a
    folder under ``base``, as a user's ``pip install`` would; put it on PYTHONPATH."""
    copy = base / "source"  # building writes build/ and *.egg-info beside the sources
    shutil.copytree(source, copy)
    site = base / "site"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--target", str(site), str(copy)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return site
