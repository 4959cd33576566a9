"""The standing attack corpus (tests/attacks.py) in every placement: output, instruction,
when, tool args and run input, through the real `validate` and a scripted `run`.

Asserted for every payload and placement: nothing escapes (the canary file's text never
shows up anywhere, the marker file is never created), no traceback and no internal
error, every run ends (completed or failed, never `running`) with a stored reason, and
each run stays within a bounded time and a bounded amount of allocated memory. Many files
go through one CLI invocation; the memory of each run is measured in-process, through
the same interpreter, kernel and DuckDB storage the CLI uses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flowengine.agentfile.templates import MAX_SIZE, environment, render_bounded
from flowengine.errors import RUN_CODES
from flowengine.graph.validate import validate_file
from flowengine.runtime.interpreter import AgentRun, RunSetup
from flowengine.runtime.session import Session, SessionConfig
from tests.attacks import HARMLESS_TEXT, TEMPLATE_PAYLOADS
from tests.conftest import run_cli

PLACEMENTS = ("output", "instruction", "when", "args")
CHUNK = 100  # agent files per `flowengine run`
RUN_SECONDS = 5.0  # per run; the render budget is 0.25 s, so this is a generous bound
RENDER_PEAK = 100 * MAX_SIZE  # bytes one render may allocate at once (10 MB)
ENDED = {"completed", "failed", "max_steps", "max_visits"}

TERMINAL = {"type": "terminal", "output": "{{ last }}"}


def _expression(payload: str) -> str:
    """A payload as a ``when`` expression: the inside of a lone ``{{ }}``, else as is."""
    inner = payload.strip()
    if inner.startswith("{{") and inner.endswith("}}") and inner.count("{{") == 1:
        return inner[2:-2].strip()
    return payload


def _agent(placement: str, payload: str) -> dict[str, Any]:
    steps: dict[str, Any]
    if placement == "output":
        steps = {"Done": {"type": "terminal", "output": payload}}
    elif placement == "instruction":
        steps = {"Ask": {"type": "process", "instruction": payload, "next": "Done"}}
    elif placement == "when":
        steps = {
            "Pick": {
                "type": "decision",
                "question": "Which?",
                "branches": {"a": "Done", "b": "Other"},
                "when": {"a": _expression(payload)},
                "default": "b",
            },
            "Other": {"type": "terminal", "output": "other"},
        }
    else:
        steps = {
            "Call": {
                "type": "process",
                "tool": "calculator",
                "args": {"expression": payload},
                "next": "Done",
            }
        }
    steps.setdefault("Done", TERMINAL)
    return {
        "name": f"Attack_{placement}",
        "tools": ["calculator"],
        "inputs": {"v": {"default": "__class__"}},
        "steps": steps,
    }


# Agents that take the payload as run input (the task) and use it in risky ways.
INPUT_AGENTS = {
    "echo": {"Done": {"type": "terminal", "output": "{{ task }}"}},
    "tool": {
        "Call": {
            "type": "process",
            "tool": "calculator",
            "args": {"expression": "{{ task }}"},
            "next": "Done",
        },
        "Done": TERMINAL,
    },
    "attr": {"Done": {"type": "terminal", "output": "{{ [task]|map('attr', task)|list }}"}},
    "format": {
        "Done": {"type": "terminal", "output": "{{ task.format(task) }}{{ '%s'|format(task) }}"}
    },
}


@dataclass
class Corpus:
    root: Path
    canary: Path
    secret: str
    marker: Path
    files: dict[Path, tuple[str, str]]  # file -> (placement, payload)
    script: Path

    def payload(self, text: str) -> str:
        return text.replace("CANARY", str(self.canary)).replace("MARKER", str(self.marker))

    def raw(self, text: str) -> str:
        return text.replace(str(self.canary), "CANARY").replace(str(self.marker), "MARKER")

    def assert_nothing_escaped(self, *texts: str) -> None:
        assert not self.marker.exists(), "a payload created the marker file"
        for text in texts:
            assert self.secret not in text, "a payload read the canary file"
            assert "Traceback" not in text and "internal error" not in text, text[-2000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    # DuckDB syncs every commit to disk; on tmpfs (when there is one) a thousand runs take
    # seconds instead of minutes, through the same code.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="flowengine-attacks-", dir=shm))
    else:
        root = tmp_path_factory.mktemp("attacks")
    secret = f"CANARY-{uuid.uuid4().hex}"
    canary = root / "canary.txt"
    canary.write_text(secret)
    script = root / "script.json"
    script.write_text(json.dumps({"default": "fine"}))
    made = Corpus(root, canary, secret, root / "marker", {}, script)
    assert len(TEMPLATE_PAYLOADS) >= 200
    for placement in PLACEMENTS:
        folder = root / placement
        folder.mkdir()
        for number, payload in enumerate(TEMPLATE_PAYLOADS):
            path = folder / f"a{number:03d}.yaml"
            text = made.payload(payload)
            # JSON is YAML 1.2, and json.dumps quotes any payload safely.
            path.write_text(json.dumps(_agent(placement, text), indent=1))
            made.files[path] = (placement, text)
    try:
        yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _database_text(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = [
            *con.execute("SELECT * FROM steps").fetchall(),
            *con.execute("SELECT * FROM errors").fetchall(),
            *con.execute("SELECT * FROM tool_calls").fetchall(),
            *con.execute("SELECT run_id, status, output, error FROM runs").fetchall(),
        ]
    return "\n".join(map(str, rows))


def _chunks(items: list[Path]) -> Iterator[list[Path]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def test_validate_refuses_the_escapes_and_never_crashes(corpus: Corpus) -> None:
    checked = run_cli(
        "validate", *(str(corpus.root / p) for p in PLACEMENTS), "--format", "json", timeout=300
    )
    corpus.assert_nothing_escaped(checked.stdout, checked.stderr)
    assert checked.returncode == 1, checked.stderr
    errors: dict[str, list[str]] = {}
    for diagnostic in json.loads(checked.stdout):
        if diagnostic["severity"] == "error":
            errors.setdefault(diagnostic["file"], []).append(diagnostic["code"])
    for path, (placement, payload) in corpus.files.items():
        found = errors.get(str(path), [])
        # Everything that names a private attribute, a removed global or another template
        # is refused before it runs, wherever it is placed.
        refusable = corpus.raw(payload) not in HARMLESS_TEXT and (
            "__" in payload
            or "\\x5f" in payload
            or "\\u005f" in payload
            or any(g in payload for g in ("cycler", "lipsum", "joiner", "namespace"))
            or any(t in payload for t in ("{% include", "{% import", "{% from", "{% extends"))
        )
        if refusable:
            assert found, f"{placement}: validate accepted {payload!r}"
        assert set(found) <= {"template-syntax", "expression-syntax"}, (payload, found)


def test_the_files_validate_accepts_run_through_the_cli_and_end(corpus: Corpus) -> None:
    runnable = [path for path in corpus.files if not validate_file(str(path)).errors]
    assert len(runnable) >= 100, len(runnable)  # size bombs, loops, variable attributes
    db = corpus.root / "cli.duckdb"
    outcomes = []
    for chunk in _chunks(runnable):
        ran = run_cli(
            "run",
            *map(str, chunk),
            "--input",
            "the task",
            "--backend",
            "scripted",
            "--script",
            str(corpus.script),
            "--db",
            str(db),
            "--json",
            timeout=300,
        )
        corpus.assert_nothing_escaped(ran.stdout, ran.stderr)
        assert ran.returncode in (0, 1), ran.stderr
        printed = json.loads(ran.stdout)
        assert len(printed) == len(chunk)  # every run's outcome is printed
        outcomes.extend(printed)
    assert {o["status"] for o in outcomes} <= ENDED
    assert all(o["error"] for o in outcomes if o["status"] == "failed")
    corpus.assert_nothing_escaped(_database_text(db))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)
        codes = {code for (code,) in con.execute("SELECT DISTINCT code FROM errors").fetchall()}
    assert codes <= set(RUN_CODES)
    assert "template-failed" in codes


def test_the_files_validate_refuses_still_fail_cleanly_at_run_time(corpus: Corpus) -> None:
    """The runtime holds on its own: files validate refused are run anyway, in-process,
    through the interpreter, kernel and DuckDB storage the CLI uses."""
    config = SessionConfig(
        db=corpus.root / "inprocess.duckdb", backend="scripted", options={"script": corpus.script}
    )
    worst = 0.0
    with Session(config) as session:
        for path in corpus.files:
            validated = validate_file(str(path))
            if not validated.errors:
                continue  # run through the CLI above
            assert validated.agent is not None
            setup = RunSetup(validated.agent, path.read_text(), "the task")
            started = time.perf_counter()
            outcome = AgentRun(session.kernel, setup).run()
            took = time.perf_counter() - started
            worst = max(worst, took)
            assert outcome.status == "failed" or outcome.status in ENDED, (path, outcome)
            assert took < RUN_SECONDS, (path, took)
    corpus.assert_nothing_escaped(_database_text(config.db))
    with duckdb.connect(str(config.db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)
    print(f"slowest refused file at run time: {worst:.3f} s")


def _context() -> dict[str, Any]:
    return {
        "task": "the task",
        "v": "__class__",
        "last": "fine",
        "progress": [{"step": "Ask", "result": "fine"}],
        "visits": {"Ask": 1},
    }


def test_a_render_allocates_at_most_a_fixed_multiple_of_the_limit() -> None:
    """Every payload, as a template and as an expression, rendered under tracemalloc: the
    peak of what one render allocates stays under RENDER_PEAK, whatever it attempts."""
    env = environment()
    measured = []
    tracemalloc.start()
    try:
        for payload in TEMPLATE_PAYLOADS:
            for as_expression in (False, True):
                try:  # compiled outside the measurement: a run compiles each text once
                    if as_expression:
                        compiled = env.compile_expression(_expression(payload))
                        render = functools.partial(compiled, **_context())
                    else:
                        template = env.from_string(payload)
                        render = functools.partial(template.render, _context())
                except Exception:  # a payload that does not compile cannot run
                    continue
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                with contextlib.suppress(Exception):
                    render_bounded(render)
                took = time.perf_counter() - started
                peak = tracemalloc.get_traced_memory()[1] - before
                measured.append((peak, took, payload))
    finally:
        tracemalloc.stop()
    assert len(measured) >= 300
    worst = max(measured)
    assert worst[0] < RENDER_PEAK, worst
    slowest = max(measured, key=lambda m: m[1])
    assert slowest[1] < RUN_SECONDS, slowest
    print(f"largest render peak: {worst[0] / 1e6:.1f} MB ({worst[2][:50]!r})")


def test_run_input_is_data_never_a_template(corpus: Corpus) -> None:
    payloads = [corpus.payload(p) for p in TEMPLATE_PAYLOADS]
    db = corpus.root / "input.duckdb"
    for name, steps in INPUT_AGENTS.items():
        agent = corpus.root / f"input_{name}.yaml"
        spec = {"name": f"Input_{name}", "tools": ["calculator"], "steps": steps}
        agent.write_text(json.dumps(spec))
        batch = corpus.root / f"input_{name}.jsonl"
        batch.write_text(
            "\n".join(json.dumps({"agent": str(agent), "input": p}) for p in payloads) + "\n"
        )
        ran = run_cli(
            "run",
            "--batch",
            str(batch),
            "--backend",
            "scripted",
            "--script",
            str(corpus.script),
            "--db",
            str(db),
            "--json",
            timeout=300,
        )
        corpus.assert_nothing_escaped(ran.stdout, ran.stderr)
        assert ran.returncode in (0, 1), ran.stderr
        outcomes = json.loads(ran.stdout)
        assert len(outcomes) == len(payloads)  # every run is printed
        assert {o["status"] for o in outcomes} <= ENDED
        if name == "echo":  # printed as given: the payload is never evaluated
            assert [o["output"] for o in outcomes] == payloads
    corpus.assert_nothing_escaped(_database_text(db))
