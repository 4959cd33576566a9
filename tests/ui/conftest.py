"""Data and servers for the ``flowengine ui`` tests, made once per test session.

The runs come from the real CLI on the scripted backend: a batch of the four agents at
once under round-robin with one KV cache (so requests are preempted and restored), and a
hostile agent whose prompts and replies hold markup. The 10,000-step run is written
through the storage writer directly, which is quicker than running it. A live run is a
real ``flowengine run`` stopped with SIGSTOP while it holds its database open.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AGENT_FILES, ROOT, flowengine_command, run_cli

HOSTILE = {
    "script": "<script>alert('xss-script')</script>",
    "attribute": '" onmouseover="alert(\'xss-attr\')" x="',
    "url": "<a href=\"javascript:alert('xss-url')\">click me</a>",
    "image": "<img src=x onerror=alert('xss-img')>",
}
HOSTILE_AGENT = f"""\
name: "Evil{HOSTILE["script"]}"
description: "{HOSTILE["image"].replace('"', "'")}"
steps:
  think:
    type: process
    instruction: "Think about {HOSTILE["url"].replace('"', "'")} and answer."
    save_as: thought
    next: pick
  pick:
    type: decision
    question: "Pick one {HOSTILE["script"]}?"
    branches: {{yes: done, no: think}}
    max_visits: 2
  done:
    type: terminal
    output: "{{{{ thought }}}}"
"""
HOSTILE_SCRIPT = {
    "default": f"reply {HOSTILE['attribute']} {HOSTILE['url']} {HOSTILE['script']}",
    "rules": [{"contains": "Pick one", "reply": "yes"}],
}
LONG_REPLY = "Step done: " + " ".join(f"word{i}" for i in range(120))
BATCH_SCRIPT = {
    "default": LONG_REPLY,
    # Each generated token takes a millisecond, so the four runs' requests overlap and
    # round-robin preempts some of them whatever the machine's speed.
    "token_delay": 0.001,
    "rules": [
        {"contains": "Which kind of mathematics", "reply": "arithmetic"},
        {"contains": "single arithmetic expression", "reply": "(3 + 4) * 2"},
        {"contains": "Does this solve", "reply": "yes"},
    ],
}
HUGE_STEPS = 10_000
HUGE_RUN = "huge0000run1"
HOSTILE_ID_RUN = "<img src=x onerror=alert('rid')>"
LOOPER = """\
name: Looper
description: Works in rounds until told to stop.
max_steps: 5000
steps:
  Work:
    type: process
    instruction: Do round {{ visits.get('Work', 0) + 1 }}.
    next: Check
  Check:
    type: decision
    question: Enough rounds?
    branches: {stop: Done, again: Work}
    when:
      stop: "visits['Work'] >= 2000"
    default: again
  Done:
    type: terminal
    output: "finished after {{ visits['Work'] }} rounds"
"""
STEP_LINE = re.compile(r"^Looper (\w+) #(\d+) ", re.MULTILINE)
SCREENSHOTS = ROOT / "out" / "ui-test-failures"
PAGE_AGENTS = sorted(
    str(p)
    for p in [*AGENT_FILES, ROOT / "tests" / "data" / "classic_math_agent.yaml"]
    if p.name != "math_agent.yaml"
)
"""The agents the pages show: the examples, with the MathAgent from before issue 27, whose
model decision 'classify' has the label scores a step's page charts (today's MathAgent
decides by rules only)."""


@dataclass
class UIData:
    folder: Path
    runs_db: Path
    huge_db: Path
    corrupt_db: Path
    batch: list[dict]
    hostile: dict


def _json_file(folder: Path, name: str, value: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(value))
    return path


def _scripted_run(db: Path, script: Path, *args: str) -> list[dict]:
    done = run_cli(
        "run",
        *args,
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--db",
        str(db),
        "--json",
        "--quiet",
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def _preempted_batch(db: Path, script: Path, attempts: int = 3) -> list[dict]:
    """The four agents at once under round-robin, until the scheduler preempted some.

    Replies of 80 tokens, a millisecond each, in slices of 4 make requests overlap; a
    retry covers a machine so loaded that the runs' threads still start far apart."""
    import duckdb

    for _ in range(attempts):
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        batch = _scripted_run(
            db,
            script,
            *PAGE_AGENTS,
            "--input",
            "Plan (3+4)*2 things",
            "--quantum",
            "4",
            "--pool",
            "1",
            "--max-tokens",
            "80",
        )
        with duckdb.connect(str(db), read_only=True) as con:
            found = con.execute("SELECT count(*) FROM llm_slices WHERE preempted").fetchone()
        if found and found[0]:
            return batch
    pytest.fail(f"no request was preempted in {attempts} batches; the timeline test needs some")


def _write_huge_run(db: Path) -> None:
    """A 10,000-step run of the Looper, and a run whose ids hold markup, written directly."""
    from flowengine.storage.rows import LLMRequestRow, RunRow, StepRow
    from flowengine.storage.writer import Storage

    storage = Storage(db)
    start = time.time() - HUGE_STEPS * 0.01
    for run_id, agent, steps in ((HUGE_RUN, "Looper", HUGE_STEPS), (HOSTILE_ID_RUN, "Evil", 3)):
        created = start
        storage.record_run(
            RunRow(
                run_id,
                agent,
                "looper.yaml",
                LOOPER,
                {"task": "loop"},
                "max_steps",
                "scripted",
                "scripted",
                "rr",
                8,
                created,
                created + steps * 0.01,
                steps,
                None,
                None,
                None,
                f"stopped after {steps} steps",
            ),
        )
        for seq in range(1, steps + 1):
            step_id = ("Check", "Work")[seq % 2] if agent == "Looper" else HOSTILE["image"]
            following = "Check" if step_id == "Work" else "Work"
            began = created + (seq - 1) * 0.01
            storage.record_step(
                StepRow(
                    run_id,
                    seq,
                    step_id,
                    "process" if step_id != "Check" else "decision",
                    began,
                    began + 0.008,
                    "again" if step_id == "Check" else None,
                    None,
                    "round done",
                    following,
                    {"set": {"n": seq}, "progress_dropped": 0},
                ),
            )
            if seq % 100 == 1:
                storage.record_request(
                    LLMRequestRow(
                        f"{run_id}-{seq}",
                        run_id,
                        agent,
                        step_id,
                        seq,
                        "generate",
                        "rr",
                        f"prompt of step {seq} {HOSTILE['script']}",
                        f"reply {seq}",
                        10,
                        3,
                        10,
                        0,
                        None,
                        began,
                        began,
                        began + 0.005,
                        0.0,
                        0.005,
                        0.005,
                        1,
                        0,
                        0,
                        None,
                    ),
                )
    storage.commit()
    storage.close()


@pytest.fixture(scope="session")
def ui_data(tmp_path_factory: pytest.TempPathFactory) -> UIData:
    folder = tmp_path_factory.mktemp("ui")
    runs_db = folder / "runs.duckdb"
    batch = _preempted_batch(runs_db, _json_file(folder, "batch.json", BATCH_SCRIPT))
    evil = folder / "evil.yaml"
    evil.write_text(HOSTILE_AGENT)
    [hostile] = _scripted_run(
        runs_db,
        _json_file(folder, "hostile.json", HOSTILE_SCRIPT),
        str(evil),
        "--input",
        f"task {HOSTILE['image']} {HOSTILE['attribute']}",
    )
    huge_db = folder / "huge.duckdb"
    _write_huge_run(huge_db)
    corrupt_db = folder / "corrupt.duckdb"
    corrupt_db.write_bytes(b"DUCK" + bytes(range(256)) * 64)
    return UIData(folder, runs_db, huge_db, corrupt_db, batch, hostile)


class Server:
    """A real ``flowengine ui`` process on a free port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*flowengine_command(), "ui", "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"http://[\d.]+:\d+/", line)
        if found is None:
            self.stop()
            pytest.fail(f"flowengine ui did not print its address: {line!r} {self.log()}")
        self.url = found.group(0).rstrip("/")

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """What the server wrote to stderr (after it stopped)."""
        self.stop()
        assert self.process.stderr is not None
        return self.process.stderr.read()


@pytest.fixture(scope="session")
def server(ui_data: UIData) -> Iterator[Server]:
    """One server over the scripted runs, the huge run, a corrupt file and a missing one."""
    running = Server(
        "--db",
        str(ui_data.runs_db),
        str(ui_data.huge_db),
        str(ui_data.corrupt_db),
        str(ui_data.folder / "missing.duckdb"),
    )
    yield running
    running.stop()


class LiveRun:
    """A real Looper run that holds its database open; paused and resumed by signals."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "live.duckdb"
        agent = folder / "looper.yaml"
        agent.write_text(LOOPER)
        script = _json_file(folder, "looper.json", {"default": "round done"})
        self.output = folder / "live.out"
        with self.output.open("w") as sink:
            self.process = subprocess.Popen(
                [
                    *flowengine_command(),
                    "run",
                    str(agent),
                    "--input",
                    "go",
                    "--backend",
                    "scripted",
                    "--script",
                    str(script),
                    "--db",
                    str(self.db),
                ],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.run_id = ""

    def steps(self) -> int:
        found = STEP_LINE.findall(self.output.read_text())
        if found:
            self.run_id = found[-1][0]
        return int(found[-1][1]) if found else 0

    def advance_to(self, steps: int, timeout: float = 60) -> int:
        """Let the run go on until it has printed ``steps`` steps, then pause it."""
        os.kill(self.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        while self.steps() < steps:
            assert self.process.poll() is None, self.output.read_text()[-2000:]
            assert time.monotonic() < deadline, "the live run did not advance"
            time.sleep(0.05)
        os.kill(self.process.pid, signal.SIGSTOP)
        time.sleep(0.2)  # the step line is printed after its commit; let the lines settle
        return self.steps()

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRun, Server]]:
    """A paused run holding ``live.duckdb``, and a server showing that file."""
    run = LiveRun(tmp_path_factory.mktemp("live"))
    run.advance_to(10)
    viewer = Server("--db", str(run.db))
    yield run, viewer
    viewer.stop()
    run.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test, so a fixture can tell that its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def screenshot_on_failure(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)  # type: ignore[attr-defined]
    return target
