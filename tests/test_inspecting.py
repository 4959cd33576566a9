"""``logs`` and ``stats`` as a person reads them (the CLI as a subprocess, scripted
backend, real DuckDB files): one step in full, nested JSON, ``latest``, following a live
run, run outcomes, latency and tokens per agent, and ``--json`` on every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, flowengine_command, run_cli
from tests.looper import looper

MATH = str(ROOT / "tests" / "data" / "classic_math_agent.yaml")
"""The MathAgent from before issue 27: a model decision whose label scores logs shows,
and free-text steps a script answers."""
SCRIPT = {
    "default": "The problem asks for (3 + 4) * 2.",
    "rules": [
        {"contains": "Which kind of mathematics", "reply": "arithmetic"},
        {"contains": "single arithmetic expression", "reply": "(3 + 4) * 2"},
        {"contains": "Does this solve", "reply": "yes"},
        {"contains": "Output the solution", "reply": "14, because 3 + 4 = 7 and 7 * 2 = 14."},
    ],
}


def _math_runs(tmp_path: Path, *inputs: str) -> tuple[Path, list[dict]]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    db = tmp_path / "runs.duckdb"
    outcomes = []
    for text in inputs:
        done = run_cli(
            "run", MATH, "--input", text, "--backend", "scripted", "--script", str(script),
            "--db", str(db), "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outcomes += json.loads(done.stdout)
    return db, outcomes


def test_one_step_in_full_shows_prompt_reply_constraint_scores_and_tool(tmp_path: Path) -> None:
    db, [outcome] = _math_runs(tmp_path, "(3+4)*2?")
    run_id = outcome["run_id"]
    seq = {step: i for i, step in enumerate(outcome["path"], 1)}

    decision = run_cli("logs", run_id, "--step", str(seq["classify"]), "--db", str(db))
    assert decision.returncode == 0, decision.stderr
    text = decision.stdout
    assert f"step {seq['classify']} of run {run_id}" in text
    assert "Which kind of mathematics does this problem need?" in text  # the whole prompt
    assert "Task: (3+4)*2?" in text
    assert '"labels": ["arithmetic", "algebra", "calculus", "geometry"]' in text
    assert "label scores:" in text and "arithmetic: raw 0" in text
    assert "next step: write_expression" in text

    tool = run_cli("logs", run_id, "--step", str(seq["calculate"]), "--db", str(db), "--json")
    assert tool.returncode == 0, tool.stderr
    step = json.loads(tool.stdout)
    [call] = step["tool_calls"]
    # nested JSON, not JSON strings inside JSON
    assert call["args"] == {"expression": "(3 + 4) * 2"}
    assert call["result"]["value"] == 14 and step["result"]["value"] == 14
    assert step["next_step"] == "check" and step["errors"] == []

    reply = run_cli("logs", "latest", "--step", str(seq["answer"]), "--db", str(db))
    assert "reply:\n  14, because 3 + 4 = 7 and 7 * 2 = 14." in reply.stdout
    assert "constraint: none (free text)" in reply.stdout

    missing = run_cli("logs", run_id, "--step", "99", "--db", str(db))
    assert missing.returncode == 2 and "has no step 99 (it has 6)" in missing.stderr
    assert "Traceback" not in missing.stderr
    alone = run_cli("logs", "--step", "2", "--db", str(db))
    assert alone.returncode == 2 and "--step needs a RUN_ID" in alone.stderr


def test_logs_json_nests_every_json_column_and_tables_wrap_instead_of_cutting(
    tmp_path: Path,
) -> None:
    db, [outcome] = _math_runs(tmp_path, "(3+4)*2?")
    detail = json.loads(run_cli("logs", outcome["run_id"], "--db", str(db), "--json").stdout)
    calculate = next(s for s in detail["steps"] if s["step_id"] == "calculate")
    assert calculate["result"] == {"expression": "(3 + 4) * 2", "value": 14}
    classify = next(r for r in detail["llm_requests"] if r["step_id"] == "classify")
    assert set(classify["label_scores"]) == {"arithmetic", "algebra", "calculus", "geometry"}
    assert detail["run"]["inputs"]["task"] == "(3+4)*2?"
    # the same as --format json, kept as its alias
    alias = run_cli("logs", outcome["run_id"], "--db", str(db), "--format", "json")
    assert json.loads(alias.stdout) == detail

    table = run_cli("logs", outcome["run_id"], "--db", str(db)).stdout
    assert "…" not in table  # nothing is cut off
    # every label of the decision's scores is there, on as many lines as it takes
    for label in ("arithmetic", "algebra", "calculus", "geometry"):
        assert f"{label}: raw" in table
    # seconds are rounded for people: three significant digits at most
    for line in table.splitlines():
        for word in line.split():
            if word.replace(".", "", 1).isdigit() and "." in word:
                assert len(word.replace(".", "").lstrip("0")) <= 3, line


def test_stats_counts_outcomes_latency_tokens_and_tool_errors_per_agent(tmp_path: Path) -> None:
    db, _ = _math_runs(tmp_path, "(3+4)*2?", "(3+4)*2 again?")
    looped = tmp_path / "looper.yaml"
    looped.write_text(looper(3).replace("\nsteps:", "\nmax_steps: 4\nsteps:", 1))
    done = run_cli(
        "run", str(looped), "--input", "go", "--backend", "scripted", "--script",
        str(tmp_path / "script.json"), "--db", str(db), "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # stopped by its limit
    summary = json.loads(run_cli("stats", "--db", str(db), "--json").stdout)

    by_agent = {row["agent"]: row for row in summary["runs"]}
    assert by_agent["MathAgent"]["by_status"] == {"completed": 2}
    assert by_agent["MathAgent"]["success_rate"] == 1
    assert by_agent["Looper"]["by_status"] == {"max_steps": 1}
    assert by_agent["Looper"]["success_rate"] == 0
    assert by_agent["(all)"]["runs"] == 3 and by_agent["(all)"]["success_rate"] == round(2 / 3, 3)

    latency = {(row["agent"], row["kind"]): row for row in summary["step_latency"]}
    assert latency[("MathAgent", "decision")]["steps"] == 4
    assert latency[("(all)", "process")]["steps"] == 6 + 2
    assert all(0 <= row["p50_s"] <= row["p95_s"] for row in summary["step_latency"])

    tokens = {row["agent"]: row for row in summary["tokens"]}
    assert tokens["MathAgent"]["runs"] == 2
    assert tokens["MathAgent"]["generated"] > 0
    assert tokens["MathAgent"]["prompt_per_run"] * 2 == tokens["MathAgent"]["prompt"]
    [tools] = summary["tool_errors"]
    assert (tools["agent"], tools["tool"], tools["calls"], tools["errors"]) == (
        "MathAgent",
        "calculator",
        2,
        0,
    )
    assert {row["agent"] for row in summary["scheduler"]} == {"MathAgent", "Looper"}

    table = run_cli("stats", "--db", str(db)).stdout
    for heading in ("runs", "step latency (seconds)", "tokens per run", "tool calls"):
        assert f"\n{heading}\n" in f"\n{table}"
    assert "max_steps" in table and "success_rate" in table


def test_logs_follow_prints_a_live_runs_steps_until_it_ends(tmp_path: Path) -> None:
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(6))
    script = tmp_path / "slow.json"
    script.write_text(json.dumps({"default": "working on it", "token_delay": 0.02}))
    db = tmp_path / "live.duckdb"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    writer = subprocess.Popen(
        [*flowengine_command(), "run", str(agent), "--input", "go", "--backend", "scripted",
         "--script", str(script), "--db", str(db), "-q"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        followed = run_cli("logs", "latest", "--follow", "--db", str(db), timeout=120)
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert lines[0].startswith("following run ") and "(Looper)" in lines[0]
    steps = [line for line in lines if line.startswith("#")]
    # every step once, in order, although the run was live while they were read
    assert [int(line.split()[0][1:]) for line in steps] == list(range(1, 14))
    assert steps[-1].startswith("#13 Done (terminal)")
    assert lines[-1].endswith("completed after 13 steps")
    needs = run_cli("logs", "--follow", "--db", str(db))
    assert needs.returncode == 2 and "--follow needs a RUN_ID" in needs.stderr


def test_every_command_takes_json_the_same_way(tmp_path: Path) -> None:
    db, [outcome] = _math_runs(tmp_path, "(3+4)*2?")
    checked = run_cli("validate", MATH, "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout) == []
    listed = json.loads(run_cli("tools", "calculator", "--json").stdout)
    assert [tool["name"] for tool in listed] == ["calculator"]
    graph = json.loads(run_cli("viz", MATH, "--json").stdout)
    assert {node["id"] for node in graph["nodes"]} >= {"classify", "answer"}
    script = tmp_path / "script.json"
    ran = run_cli(
        "run", MATH, "--input", "(3+4)*2?", "--backend", "scripted", "--script", str(script),
        "--db", str(db), "--format", "json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    [again] = json.loads(ran.stdout)
    assert again["status"] == "completed" and again["output"] == outcome["output"]
    for command in ("validate", "tools", "viz", "logs", "stats", "run", "resume"):
        shown = run_cli(command, "--help").stdout
        assert "--json" in shown and "--format" in shown, command


def test_numbers_in_tables_are_rounded_for_people() -> None:
    code = (
        "from flowengine.cli.common import human, table\n"
        "print([human(v) for v in (0.0000863, 0.0012345, 12.345, 123.45, 5.0, -0.00001)])\n"
        "print(table([{'a': 'x ' * 50, 'b': 1.23456}], ['a', 'b'], width=20))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    first, *rest = done.stdout.splitlines()
    assert first == "['0.0001', '0.00123', '12.3', '123', '5', '0']"
    assert rest[0].split() == ["a", "b"]
    assert rest[1].split() == ["x"] * 10 + ["1.23"]
    assert len(rest) == 1 + 5  # a 100-character cell wraps onto five 20-character lines


def test_logs_follow_says_how_to_resume_a_run_whose_writer_died(tmp_path: Path) -> None:
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(20))
    script = tmp_path / "slow.json"
    script.write_text(json.dumps({"default": "working on it", "token_delay": 0.05}))
    db = tmp_path / "dead.duckdb"
    writer = subprocess.Popen(
        [*flowengine_command(), "run", str(agent), "--input", "go", "--backend", "scripted",
         "--script", str(script), "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdout is not None
    run_id = ""
    for line in writer.stdout:  # a step line is printed once the step is stored
        if line.startswith("Looper "):
            run_id = line.split()[1]
            break
    writer.kill()
    writer.wait(timeout=30)
    followed = run_cli("logs", run_id, "--follow", "--db", str(db), timeout=60)
    assert followed.returncode == 1, followed.stdout
    assert f"continue it with `flowengine resume {run_id}`" in followed.stderr
    assert followed.stdout.splitlines()[1].startswith("#1 Work (process)")
