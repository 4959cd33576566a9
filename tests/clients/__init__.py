"""Real clients the tests drive: Mermaid in Chromium, mermaid-cli, yaml-language-server.

They are installed by ``make clients`` (Debian's chromium, npm packages pinned in
package.json into ./node_modules). Without them the tests that need them are skipped on a
developer's machine, and fail in CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .lsp import LspClient

ROOT = Path(__file__).resolve().parent.parent.parent
NODE_MODULES = ROOT / "node_modules"
HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
MMDC = NODE_MODULES / ".bin" / "mmdc"
YAML_LANGUAGE_SERVER = NODE_MODULES / ".bin" / "yaml-language-server"
PUPPETEER_CONFIG = HERE / "puppeteer.json"


def require(*paths: Path | str) -> None:
    """Skip (locally) or fail (in CI) when a client is not installed."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        message = f"not installed: {', '.join(missing)}; run 'make clients'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def yaml_language_server(root: Path) -> LspClient:
    """The real yaml-language-server over stdio, with the shipped schema for *.yaml files,
    as the VS Code YAML extension configures it."""
    require(YAML_LANGUAGE_SERVER)
    schema = (ROOT / "schemas" / "agent.schema.json").resolve().as_uri()
    settings = {
        "yaml": {
            "validate": True,
            "hover": True,
            "completion": True,
            "schemas": {schema: ["*.yaml", "*.yml"]},
            "schemaStore": {"enable": False},
        }
    }
    return LspClient([str(YAML_LANGUAGE_SERVER), "--stdio"], root, settings)


class MermaidRenderer:
    """One Chromium with Mermaid loaded, rendering many diagrams over a pipe."""

    def __init__(self) -> None:
        require(CHROMIUM, NODE_MODULES / "mermaid" / "dist" / "mermaid.min.js")
        self.process = subprocess.Popen(
            ["node", str(HERE / "mermaid_render.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def render(self, text: str) -> dict[str, Any]:
        """Mermaid's verdict on ``text``: ``ok``, and what it drew or its error."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"text": text}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the Mermaid renderer stopped"
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)
