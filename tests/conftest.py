"""Shared helpers: paths, and running the real CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from .clients import MermaidRenderer, yaml_language_server
from .clients.lsp import LspClient

# Fuzzing depth: 400 examples a property by default (2,000 over the loader, validator and
# import-aios); HYPOTHESIS_PROFILE=thorough for 3,000.
settings.register_profile(
    "default", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "agents"
BROKEN = Path(__file__).resolve().parent / "broken"
AIOS = Path(__file__).resolve().parent / "data" / "aios"


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
