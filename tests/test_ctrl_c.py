"""Ctrl-C during `flowengine run` and `resume`, as a person at a terminal meets it: the
real CLI in a subprocess, a real SIGINT, a real DuckDB file, then `resume` to the end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, flowengine_command, run_cli
from tests.looper import looper

LOOPS = 8
STEPS = 2 * LOOPS + 1
RESUME = re.compile(r"flowengine resume (\w+)")


def _start(
    tmp_path: Path, delay: float, *agents: Path, command: str = "run", extra: tuple = ()
) -> subprocess.Popen:
    script = tmp_path / "slow.json"
    reply = "working on it" if delay < 0.2 else "still working on it, one word at a time"
    script.write_text(json.dumps({"default": reply, "token_delay": delay}))
    head = [command, *map(str, agents), *extra] + (["--input", "go"] if command == "run" else [])
    return subprocess.Popen(
        [*flowengine_command(), *head, "--backend", "scripted", "--script", str(script),
         "--db", str(tmp_path / "runs.duckdb")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip


def _wait_for_steps(process: subprocess.Popen, count: int) -> list[str]:
    """Read step lines (``AGENT RUN_ID #N ...``) until ``count`` have been shown."""
    assert process.stdout is not None
    seen: list[str] = []
    while len(seen) < count:
        line = process.stdout.readline()
        assert line, "the run ended before Ctrl-C"
        if line.startswith("Looper ") and " #" in line:
            seen.append(line)
    return seen


def _resume_to_the_end(tmp_path: Path, run_id: str) -> None:
    db = str(tmp_path / "runs.duckdb")
    script = str(tmp_path / "slow.json")
    Path(script).write_text(json.dumps({"default": "working on it"}))
    resumed = run_cli(
        "resume", run_id, "--backend", "scripted", "--script", script, "--db", db, "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    [outcome] = json.loads(resumed.stdout)
    assert outcome["status"] == "completed"
    assert outcome["output"] == f"finished after {LOOPS} rounds: stop"
    detail = json.loads(run_cli("logs", run_id, "--db", db, "--json").stdout)
    # every step exactly once, although the run was stopped in the middle
    assert [step["seq"] for step in detail["steps"]] == list(range(1, STEPS + 1))
    assert [s["step_id"] for s in detail["steps"]] == ["Work", "Check"] * LOOPS + ["Done"]


def test_a_first_ctrl_c_stops_every_run_between_steps_and_says_how_to_resume(
    tmp_path: Path,
) -> None:
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(LOOPS))
    other = tmp_path / "looper2.yaml"
    other.write_text(looper(LOOPS))
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(json.dumps({"agent": str(other), "input": "go on"}) + "\n")
    # one run named on the command line, one from --batch: a batch of two
    process = _start(tmp_path, 0.1, agent, extra=("--batch", str(batch)))
    _wait_for_steps(process, 2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Ctrl-C: each run stops after the step it is in" in err
    assert "Traceback" not in err
    assert "Ctrl-C stopped 2 of 2 runs (0 had ended); resume each with:" in err
    run_ids = sorted(set(RESUME.findall(err)))
    assert len(run_ids) == 2
    assert out.count(": interrupted after ") == 2
    for run_id in run_ids:
        listed = run_cli("logs", "--db", str(tmp_path / "runs.duckdb"), "--json").stdout
        [row] = [r for r in json.loads(listed) if r["run_id"] == run_id]
        assert row["status"] == "interrupted" and 0 < row["steps"] < STEPS
        assert f"  flowengine resume {run_id}\n" in err
        _resume_to_the_end(tmp_path, run_id)


def test_a_second_ctrl_c_quits_at_once_and_the_run_still_resumes(tmp_path: Path) -> None:
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(LOOPS))
    # A model step takes seconds (0.3 s a token): both Ctrl-Cs land inside the 2nd Work.
    process = _start(tmp_path, 0.3, agent)
    line, _ = _wait_for_steps(process, 2)
    run_id = line.split()[1]
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "second Ctrl-C: quit with 1 run in the middle of a step" in err
    assert f"  flowengine resume {run_id}\n" in err
    assert "Traceback" not in err
    listed = run_cli("logs", "--db", str(tmp_path / "runs.duckdb"), "--json").stdout
    [row] = json.loads(listed)
    assert row["status"] == "interrupted", row
    detail = json.loads(
        run_cli("logs", run_id, "--db", str(tmp_path / "runs.duckdb"), "--json").stdout
    )
    assert "quit by a second Ctrl-C during step #3" in detail["run"]["error"], detail["run"]
    # At once: step #3 (about 3 s of tokens) never ended, so it was not waited for.
    assert [step["seq"] for step in detail["steps"]] == [1, 2]
    _resume_to_the_end(tmp_path, run_id)


def test_ctrl_c_during_resume_stops_it_resumably_too(tmp_path: Path) -> None:
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(LOOPS))
    first = _start(tmp_path, 0.1, agent)
    [line] = _wait_for_steps(first, 1)
    run_id = line.split()[1]
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    again = _start(tmp_path, 0.1, Path(run_id), command="resume")
    _wait_for_steps(again, 1)
    again.send_signal(signal.SIGINT)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 130, err
    assert "Ctrl-C stopped 1 of 1 run (0 had ended); resume it with:" in err
    assert RESUME.findall(err)[-1] == run_id
    _resume_to_the_end(tmp_path, run_id)
