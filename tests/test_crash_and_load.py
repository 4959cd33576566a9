"""Crash safety (SIGKILL at many points, then resume) and load (32 runs on one kernel).

The crash test runs the real CLI as a subprocess on the scripted backend and a real DuckDB
file. A step line printed by `flowengine run` is printed after the step is committed, so
every printed step is an acknowledged row that must survive the kill. After the kill the
file is opened read-only through flowengine's own ``connect``, as `logs` opens it: that
replays the journal the dead process left (``storage/journal.py``).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from flowengine.graph.validate import validate_text
from flowengine.runtime.interpreter import RunSetup
from flowengine.runtime.prepare import resume_setup
from flowengine.runtime.session import Session, SessionConfig
from flowengine.storage.reader import Records
from flowengine.storage.writer import connect
from tests.conftest import ROOT, flowengine_command, run_cli
from tests.looper import looper

KILL_POINTS = 20
LOOPS = 40
LOOPER = looper(LOOPS)
STEPS = 2 * LOOPS + 1
SCRIPT = {"default": "round done"}
STEP_LINE = re.compile(r"^Looper (\w+) #(\d+) ")


def _files(tmp_path: Path, long: bool = False) -> tuple[Path, Path]:
    agent = tmp_path / "looper.yaml"
    text = looper(2000) + "max_steps: 5000\n" if long else LOOPER
    agent.write_text(text)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    return agent, script


def _scripted(script: Path, db: Path) -> list[str]:
    """The flags every run here shares: the scripted backend and one database file."""
    return ["--backend", "scripted", "--script", str(script), "--db", str(db)]


def _start_run(agent: Path, script: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *flowengine_command(),
            "run",
            str(agent),
            "--input",
            "work",
            *_scripted(script, db),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stored_steps(db: Path, run_id: str) -> list[int]:
    with connect(db, read_only=True) as con:
        rows = con.execute("SELECT seq FROM steps WHERE run_id = ? ORDER BY seq", [run_id])
        return [seq for (seq,) in rows.fetchall()]


def test_sigkill_at_random_points_loses_no_acknowledged_step_and_resumes(
    tmp_path: Path,
) -> None:
    agent, script = _files(tmp_path)
    points = random.Random(20261121).sample(range(1, STEPS - 1), KILL_POINTS)
    killed = 0
    for point in points:
        db = tmp_path / f"kill{point}.duckdb"
        process = _start_run(agent, script, db)
        acknowledged: list[int] = []
        run_id = ""
        assert process.stdout is not None
        for line in process.stdout:
            found = STEP_LINE.match(line)
            if found:
                run_id = found.group(1)
                acknowledged.append(int(found.group(2)))
                if int(found.group(2)) >= point:
                    break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert acknowledged, f"kill point {point}: the run printed no step"
        if process.returncode == 0:
            # On a loaded machine the last steps can finish before the signal lands: then
            # the run ended by itself, and its file must say so, whole.
            assert _stored_steps(db, run_id) == list(range(1, STEPS + 1))
            with Records(db) as records:
                assert records.run(run_id)["status"] == "completed"  # type: ignore[index]
            continue
        killed += 1

        stored = _stored_steps(db, run_id)  # the file opens after the kill
        assert set(acknowledged) <= set(stored), f"kill point {point}: acknowledged steps lost"
        assert stored == list(range(1, len(stored) + 1))
        with Records(db) as records:  # what `flowengine logs` shows for the dead run
            shown = [records.run(run_id), *records.runs()]
            assert [(r["status"], r["steps"]) for r in shown] == [("running", len(stored))] * 2

        resumed = run_cli(
            "resume",
            run_id,
            *_scripted(script, db),
            "--json",
        )
        assert resumed.returncode == 0, resumed.stderr
        [outcome] = json.loads(resumed.stdout)
        assert outcome["status"] == "completed", outcome
        assert outcome["output"] == f"finished after {LOOPS} rounds: stop"
        assert _stored_steps(db, run_id) == list(range(1, STEPS + 1))
    assert killed >= KILL_POINTS // 2, f"only {killed} of {KILL_POINTS} runs were killed"


def test_a_second_process_on_a_held_database_gets_a_clear_message(tmp_path: Path) -> None:
    agent, script = _files(tmp_path, long=True)
    db = tmp_path / "held.duckdb"
    holder = _start_run(agent, script, db)
    try:
        assert holder.stdout is not None
        while not STEP_LINE.match(holder.stdout.readline()):  # until it holds the file
            assert holder.poll() is None
        for command in (
            [
                "run",
                str(agent),
                "--input",
                "x",
                *_scripted(script, db),
            ],
            ["logs", "--db", str(db)],
        ):
            second = run_cli(*command)
            assert second.returncode != 0
            assert "in use by another flowengine process" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_32_concurrent_runs_on_one_kernel_store_exact_row_counts(tmp_path: Path) -> None:
    agent = validate_text(LOOPER, "looper.yaml").agent
    assert agent is not None
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    config = SessionConfig(
        db=tmp_path / "load.duckdb", backend="scripted", options={"script": script}, pool_size=8
    )
    peaks = []
    with Session(config) as session:
        for _round in range(2):
            setups = [(RunSetup(agent, LOOPER, f"task {i}"), None) for i in range(32)]
            outcomes = session.run_all(setups)
            assert [o.status for o in outcomes] == ["completed"] * 32
            assert len(session.kernel.memory) == 0  # every run's memory was released
            peaks.append(_max_rss_mib())
        counts = session.storage.query(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps), "
            "(SELECT count(*) FROM llm_requests), (SELECT count(DISTINCT run_id) FROM steps), "
            "(SELECT count(*) FROM errors)"
        )
    # 64 runs; each has 81 steps, of which 40 (the Work steps) ask the model.
    assert counts == [(64, 64 * STEPS, 64 * LOOPS, 64, 0)]
    # Memory is bounded: a second round of the same load does not raise the peak much.
    assert peaks[1] - peaks[0] < 64, peaks


@pytest.mark.skipif(os.environ.get("FLOWENGINE_SKIP_MODEL") == "1", reason="model tests off")
def test_8_concurrent_runs_on_the_real_model(tmp_path: Path) -> None:
    asker = (
        "name: Asker\nsteps:\n  Answer:\n    type: process\n"
        "    instruction: Answer in one sentence.\n    next: Done\n"
        "  Done:\n    type: terminal\n    output: '{{ last }}'\n"
    )
    agent = validate_text(asker, "asker.yaml").agent
    assert agent is not None
    config = SessionConfig(db=tmp_path / "model.duckdb", pool_size=8)
    cities = ["Seattle", "Denver", "Boston", "Miami", "Austin", "Chicago", "Portland", "Atlanta"]
    with Session(config) as session:
        outcomes = session.run_all(
            [
                (RunSetup(agent, asker, f"Name a famous sight in {city}.", max_tokens=24), None)
                for city in cities
            ]
        )
        assert [o.status for o in outcomes] == ["completed"] * 8
        assert all(isinstance(o.output, str) and o.output for o in outcomes)
        counts = session.storage.query(
            "SELECT (SELECT count(*) FROM steps), (SELECT count(*) FROM llm_requests "
            "WHERE error IS NULL), (SELECT count(DISTINCT run_id) FROM llm_slices)"
        )
    assert counts == [(16, 8, 8)]


BATCH = 8
BATCH_LOOPS = 10
BATCH_STEPS = 2 * BATCH_LOOPS + 1


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one: DuckDB syncs each commit to disk, which makes
    hundreds of runs slow on a shared disk. A SIGKILL loses the same there: the process
    dies, the kernel's page cache does not."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="flowengine-crash-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_sigkill_during_a_batch_of_8_concurrent_runs_loses_no_acknowledged_step(
    tmp_path: Path, memory_dir: Path
) -> None:
    """kill -9 while 8 runs write to one DuckDB file: the file opens, every printed step of
    every run is stored, and each run resumes to its end (at every fourth point one by
    `flowengine resume`; the others together through the same resume path in one session)."""
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(BATCH_LOOPS))
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(json.dumps({"agent": str(agent), "input": f"job {i}"}) + "\n" for i in range(BATCH))
    )
    points = random.Random(20261122).sample(range(1, BATCH * BATCH_STEPS - 1), KILL_POINTS)
    for index, point in enumerate(points):
        db = memory_dir / f"batch{point}.duckdb"
        process = subprocess.Popen(
            [*flowengine_command(), "run", "--batch", str(batch), *_scripted(script, db)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        acknowledged: dict[str, list[int]] = {}
        printed = 0
        assert process.stdout is not None
        for line in process.stdout:
            found = STEP_LINE.match(line)
            if found:
                acknowledged.setdefault(found.group(1), []).append(int(found.group(2)))
                printed += 1
                if printed >= point:
                    break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert printed >= point, f"kill point {point}: the batch printed only {printed} steps"

        with connect(db, read_only=True) as con:  # the file opens after the kill
            stored_runs = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        for run_id, seqs in acknowledged.items():
            stored = _stored_steps(db, run_id)
            assert set(seqs) <= set(stored), f"kill point {point}: run {run_id} lost steps"
            assert stored == list(range(1, len(stored) + 1))
        unfinished = sorted(r for r, status in stored_runs.items() if status == "running")
        assert set(acknowledged) <= set(stored_runs)
        if unfinished and index % 4 == 0:  # the CLI at some points; it costs a process start
            resumed = run_cli("resume", unfinished.pop(0), *_scripted(script, db), "--json")
            assert resumed.returncode == 0, resumed.stderr
            assert json.loads(resumed.stdout)[0]["status"] == "completed"
        config = SessionConfig(db=db, backend="scripted", options={"script": script})
        with Session(config) as session:  # what `resume` does, for all of them at once
            setups = [resume_setup(session.storage, r)[:2] for r in unfinished]
            outcomes = session.run_all(setups)
        assert [o.status for o in outcomes] == ["completed"] * len(outcomes)
        for run_id in stored_runs:
            assert _stored_steps(db, run_id) == list(range(1, BATCH_STEPS + 1)), run_id
        with duckdb.connect(str(db), read_only=True) as con:
            ended = con.execute("SELECT DISTINCT status, output FROM runs").fetchall()
        assert ended == [("completed", f"finished after {BATCH_LOOPS} rounds: stop")]
