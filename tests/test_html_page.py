"""The HTML page from ``viz -o X.html``: its steps table holds each step's logic, and in
Debian's Chromium, offline, it zooms, pans and searches."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .clients import CHROMIUM, HERE, require
from .conftest import AGENTS, run_cli

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None, reason="'make setup' installs Graphviz"
)

AGENT = """\
name: "Errors <& routes>"
tools: [calculator]
max_steps: 40
steps:
  compute:
    type: process
    tool: calculator
    args: {expression: "{{ task }} * 2"}
    retry: 2
    on_error: recover
    save_as: product
    max_visits: 3
    next: size
  recover:
    type: process
    instruction: Say that it failed.
    next: finish
  size:
    type: decision
    question: How big?
    when:
      big: "product > 10"
    default: small
    branches:
      big: finish
      small: compute
  finish:
    type: terminal
    format: json
    output: '{"value": {{ product }}}'
"""


def _page(tmp_path: Path, text: str) -> str:
    agent = tmp_path / "agent.yaml"
    agent.write_text(text)
    out = tmp_path / "agent.html"
    done = run_cli("viz", str(agent), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_text()


def _row(page: str, step: str) -> str:
    match = re.search(rf'<tr data-step="{re.escape(step)}">(.*?)</tr>', page, re.S)
    assert match, step
    return re.sub(r"<[^>]+>", "", match.group(1)).replace("&gt;", ">").replace("&quot;", '"')


@needs_graphviz
def test_the_steps_table_shows_conditions_defaults_errors_tools_saves_and_limits(tmp_path) -> None:
    page = _page(tmp_path, AGENT)
    compute = _row(page, "compute")
    assert 'calculator(expression="{{ task }} * 2")' in compute
    assert "retry 2×, then go to recover" in compute  # noqa: RUF001
    assert "product" in compute and "at most 3 visits" in compute
    size = _row(page, "size")
    assert "big: product > 10 → finish" in size and "small (default) → compute" in size
    assert "the run fails" in size
    assert "JSON output" in _row(page, "finish")
    assert "decided by when:" not in page
    assert "Errors &lt;&amp; routes&gt;" in page and "at most</b> 40 steps" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing fetched


@needs_graphviz
def test_the_page_zooms_pans_and_searches_offline_in_chromium(tmp_path) -> None:
    require(CHROMIUM, HERE.parent.parent / "node_modules" / "puppeteer")
    out = tmp_path / "travel.html"
    assert run_cli("viz", str(AGENTS / "travel_agent.yaml"), "-o", str(out)).returncode == 0
    done = subprocess.run(
        ["node", str(HERE / "page_check.mjs"), str(out), "search_flights"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["fetched"] == [] and seen["errors"] == []
    assert seen["zoomed"]["scale"] > seen["initial"]["scale"]
    assert seen["panned"]["transform"] != seen["zoomed"]["transform"]
    assert seen["fitted"]["transform"] == seen["initial"]["transform"]
    assert len(seen["initial"]["visibleRows"]) == 24
    rows = seen["searched"]["visibleRows"]
    assert rows and len(rows) < 24
    assert sorted(seen["searched"]["matched"]) == sorted(rows)
    assert seen["searched"]["dimmed"] == 24 - len(rows)
    assert seen["searched"]["found"] == f"{len(rows)} of 24 steps"
    assert seen["centred"]["transform"] != seen["searched"]["transform"]


@needs_graphviz
def test_the_steps_table_shows_which_step_writes_which_variable(tmp_path) -> None:
    out = tmp_path / "travel.html"
    assert run_cli("viz", str(AGENTS / "travel_agent.yaml"), "-o", str(out)).returncode == 0
    page = out.read_text()
    assert "<th>writes</th>" in page
    assert "breakfast, picked, this_day" in _row(page, "Step 9")  # save_as, then set
    assert "return_transportation, days" in _row(page, "Step 17")
    assert "set days" not in _row(page, "Step 18")
