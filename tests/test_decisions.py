"""LLM decisions on the scripted backend: worked examples reach the prompt, the choice is
calibrated against a content-free prompt, and ``logs`` shows the scores it used."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from flowengine.graph import validate_file
from tests.conftest import run_cli

AGENT = """\
name: Places
steps:
  kind:
    type: decision
    question: "Is {{ task }} a state or a city?"
    examples:
      - {input: "Is Texas a state or a city?", label: state}
      - input: Is Boston a state or a city?
        label: city
    branches:
      state: done
      city: done
    save_as: kind
  done:
    type: terminal
    output: "{{ kind }}"
"""

# The reply depends on the examples being in the prompt: without them no rule matches and
# the default reply names neither label.
SCRIPT = {
    "default": "I do not know.",
    "rules": [
        {"contains": "Answer: city\n\nIs Denver a state or a city?", "reply": "city"},
        {"contains": "Answer: city\n\nIs Oregon a state or a city?", "reply": "state"},
    ],
}


def _run(tmp_path: Path, task: str) -> tuple[dict, str]:
    agent = tmp_path / "places.yaml"
    agent.write_text(AGENT)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    db = tmp_path / "runs.duckdb"
    done = run_cli(
        "run",
        str(agent),
        "--input",
        task,
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--db",
        str(db),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    return outcome, str(db)


def test_examples_reach_the_prompt_and_decide(tmp_path: Path) -> None:
    agent = tmp_path / "places.yaml"
    agent.write_text(AGENT)
    assert validate_file(str(agent)).diagnostics == []
    for task, want in (("Denver", "city"), ("Oregon", "state")):
        (tmp_path / task).mkdir()
        outcome, db = _run(tmp_path / task, task)
        assert outcome["status"] == "completed"
        assert outcome["output"] == want
        with duckdb.connect(db, read_only=True) as con:
            [(prompt, response, stored)] = con.execute(
                "SELECT prompt, response, label_scores FROM llm_requests"
            ).fetchall()
        assert "Example: Is Texas a state or a city?\nAnswer: state" in prompt
        assert "Example: Is Boston a state or a city?\nAnswer: city" in prompt
        assert response == want
        scores = json.loads(stored)
        assert set(scores) == {"state", "city"}
        assert all(set(s) == {"raw", "content_free", "calibrated"} for s in scores.values())
        assert max(scores, key=lambda label: scores[label]["calibrated"]) == want


def test_logs_show_raw_content_free_and_calibrated_scores(tmp_path: Path) -> None:
    outcome, db = _run(tmp_path, "Denver")
    logs = run_cli("logs", outcome["run_id"], "--db", db, "--format", "json")
    assert logs.returncode == 0, logs.stderr
    [request] = json.loads(logs.stdout)["llm_requests"]
    scores = request["label_scores"]
    scores = json.loads(scores) if isinstance(scores, str) else scores
    assert scores["city"]["calibrated"] > scores["state"]["calibrated"]
    text = run_cli("logs", outcome["run_id"], "--db", db)
    assert text.returncode == 0 and "calibrated" in text.stdout


def test_an_example_label_that_is_not_a_branch_is_reported_where_it_is(tmp_path: Path) -> None:
    agent = tmp_path / "bad.yaml"
    agent.write_text(AGENT.replace("label: city", "label: town"))
    done = run_cli("validate", str(agent))
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if "unknown-example-label" in line]
    assert line.startswith(f"{agent}:9:16: error: example 2 of step 'kind' has label 'town'")
    assert "Traceback" not in done.stdout + done.stderr


THREE_DECISIONS = """\
name: Calibration
steps:
  plain:
    type: decision
    question: Is it raining?
    branches: {"yes": asked, "no": asked}
  asked:
    type: decision
    question: Is it cold?
    calibrate: true
    branches: {"yes": declined, "no": declined}
  declined:
    type: decision
    question: Is it late?
    calibrate: false
    examples:
      - {input: "It is midnight.", label: "yes"}
    branches: {"yes": done, "no": done}
  done:
    type: terminal
    output: ok
"""


def test_calibration_is_on_with_examples_by_default_and_can_be_set(tmp_path: Path) -> None:
    agent = tmp_path / "calibration.yaml"
    agent.write_text(THREE_DECISIONS)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "yes"}))
    db = tmp_path / "runs.duckdb"
    scripted = ["--backend", "scripted", "--script", str(script), "--db", str(db), "--json"]
    done = run_cli("run", str(agent), "-i", "now", *scripted)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT step_id, label_scores FROM llm_requests").fetchall()
    kept = {step: set(json.loads(scores)["yes"]) for step, scores in rows}
    assert kept == {
        "plain": {"raw"},
        "asked": {"raw", "content_free", "calibrated"},
        "declined": {"raw"},
    }
