"""``flowengine run``, ``logs``, ``stats``, ``resume`` and ``viz --run`` as a user runs
them, on the scripted backend (the real model is in test_local_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.conftest import AGENTS, run_cli

PENS = "Pens cost 4 dollars each. How much do 6 pens cost?"
MATH_SCRIPT = {
    "default": "OK",
    "rules": [
        # A backend without a grammar: the reply is checked after the fact instead.
        {"contains": "Write this problem", "reply": '"4 * 6"'},
        {"contains": "Explain in one", "reply": '"Six pens at four dollars each cost that."'},
    ],
}


def _script(tmp_path: Path, script: dict) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    return str(path)


def _run(tmp_path: Path, *args: str, expect: int = 0) -> tuple[list[dict], str]:
    db = tmp_path / "runs.duckdb"
    done = run_cli(
        "run",
        *args,
        "--backend",
        "scripted",
        "--script",
        _script(tmp_path, MATH_SCRIPT),
        "--db",
        str(db),
        "--json",
    )
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout), str(db)


def test_math_agent_runs_and_every_interaction_is_stored(tmp_path: Path) -> None:
    outcomes, db = _run(tmp_path, str(AGENTS / "math_agent.yaml"), "--input", PENS)
    [outcome] = outcomes
    assert outcome["status"] == "completed"
    assert outcome["path"] == [
        "operation",
        "write_expression",
        "calculate",
        "check",
        "explain",
        "answer",
    ]
    # The number is the calculator's; the explanation, the calculation and one sentence.
    assert outcome["output"] == {
        "answer": 24,
        "explanation": "4 * 6 = 24. Six pens at four dollars each cost that.",
    }
    assert outcome["output_valid"] is True
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM steps").fetchone() == (6,)
        kinds = con.execute(
            "SELECT kind, count(*) FROM llm_requests GROUP BY kind ORDER BY kind"
        ).fetchall()
        assert kinds == [("generate", 2)]  # both decisions are settled by rules
        assert con.execute("SELECT tool, ok, result->>'value' FROM tool_calls").fetchall() == [
            ("calculator", True, "24")
        ]
        labels = con.execute(
            "SELECT step_id, label FROM steps WHERE label IS NOT NULL ORDER BY seq"
        ).fetchall()
        assert labels == [("operation", "multiply"), ("check", "solved")]
        # The expression matched its pattern, the problem's numbers joined by '*'.
        assert con.execute("SELECT count(*) FROM errors").fetchone() == (0,)

    logs = run_cli("logs", outcome["run_id"], "--db", db, "--format", "json")
    assert logs.returncode == 0, logs.stderr
    detail = json.loads(logs.stdout)
    assert [s["step_id"] for s in detail["steps"]] == outcome["path"]
    table = run_cli("logs", "--db", db)
    assert outcome["run_id"] in table.stdout and "completed" in table.stdout
    stats = run_cli("stats", "--db", db, "--format", "json")
    [row] = json.loads(stats.stdout)["scheduler"]
    assert (row["agent"], row["scheduler"], row["requests"]) == ("MathAgent", "rr", 2)

    drawn = run_cli(
        "viz",
        str(AGENTS / "math_agent.yaml"),
        "--run",
        outcome["run_id"],
        "--db",
        db,
        "--format",
        "dot",
    )
    assert drawn.returncode == 0, drawn.stderr
    assert "penwidth=2.5" in drawn.stdout and "ran 1×" in drawn.stdout  # noqa: RUF001


def test_several_agents_and_a_batch_share_one_kernel(tmp_path: Path) -> None:
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(
        json.dumps({"agent": str(AGENTS / "rec_agent.yaml"), "input": "cheap hotels in Paris"})
        + "\n\n"
        + json.dumps({"agent": str(AGENTS / "math_agent.yaml"), "input": "2+2"})
        + "\n"
    )
    outcomes, _ = _run(
        tmp_path,
        str(AGENTS / "math_agent.yaml"),
        "--input",
        PENS,
        "--batch",
        str(batch),
        expect=1,  # RecAgent's scripted output fails its schema
    )
    assert [o["agent"] for o in outcomes] == ["MathAgent", "RecAgent", "MathAgent"]
    assert len({o["run_id"] for o in outcomes}) == 3
    rec = outcomes[1]
    # RecAgent's budget decision is a when: condition on the task ("cheap").
    assert "recommend_within_budget" in rec["path"]
    assert rec["output_valid"] is False and rec["output_errors"]
    assert rec["status"] == "output_invalid"
    assert [o["status"] for o in outcomes[::2]] == ["completed", "completed"]


def test_run_errors_are_one_line_with_what_to_do(tmp_path: Path) -> None:
    db = str(tmp_path / "x.duckdb")
    math = str(AGENTS / "math_agent.yaml")
    cases = [
        (["run", math], "give the task with --input TEXT"),
        (["run", "--input", "x"], "name at least one AGENT.yaml"),
        (["run", math, "-i", "x", "--backend", "scripted"], "needs --script FILE"),
        (
            [
                "run",
                math,
                "-i",
                "x",
                "--var",
                "nope=1",
                "--db",
                db,
                "--backend",
                "scripted",
                "--script",
                _script(tmp_path, MATH_SCRIPT),
            ],
            "has no input named 'nope'",
        ),
        (["run", math, "-i", "x", "--quantum", "0"], "too small"),
        (["run", math, "-i", "x", "--model", "missing.gguf"], "no such file"),
        (["resume", "abc", "--db", db], "no such database"),
        (["logs", "--db", db], "no database yet"),
    ]
    for args, expected in cases:
        done = run_cli(*args)
        assert done.returncode in (1, 2), (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_broken_agent_is_not_run(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: B\nsteps:\n  a:\n    type: process\n    nxt: b\n")
    done = run_cli(
        "run",
        str(broken),
        "-i",
        "x",
        "--backend",
        "scripted",
        "--script",
        _script(tmp_path, MATH_SCRIPT),
        "--db",
        str(tmp_path / "d.duckdb"),
    )
    assert done.returncode == 1
    assert f"{broken}:5:5" in done.stderr and "fix these errors before running" in done.stderr


CHOOSER = """\
name: Chooser
tools: [search_restaurants]
steps:
  find:
    type: process
    tool: search_restaurants
    args: {city: "{{ task }}"}
    instruction: Pick a restaurant for lunch.
    format: json
    schema: {enum: "{{ tool_result.restaurants | map(attribute='name') | list }}"}
    save_as: found
    next: plan
  plan:
    type: terminal
    instruction: Write the plan.
    format: json
    schema:
      type: object
      required: [lunch]
      properties:
        lunch: {enum: "{{ found.restaurants | map(attribute='name') | list + ['-'] }}"}
"""


def test_templated_enums_and_tool_result_checked_on_a_backend_without_grammar(
    tmp_path: Path,
) -> None:
    """The scripted backend cannot constrain its replies, so JSON is checked after the
    fact against the schema whose enum was computed from this run's tool result."""
    agent = tmp_path / "chooser.yaml"
    agent.write_text(CHOOSER)
    assert run_cli("validate", str(agent)).returncode == 0
    script = {
        "rules": [
            {"contains": "Pick a restaurant", "reply": '"Boston Grill 9"'},
            {"contains": "Write the plan", "reply": '{"lunch": "Nowhere Diner"}'},
        ]
    }
    db = tmp_path / "c.duckdb"
    done = run_cli(
        "run", str(agent), "--input", "Boston", "--backend", "scripted",
        "--script", _script(tmp_path, script), "--db", str(db), "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the final output fails its schema
    [outcome] = json.loads(done.stdout)
    assert outcome["output"] == {"lunch": "Nowhere Diner"} and outcome["output_valid"] is False
    assert outcome["status"] == "output_invalid"
    assert outcome["error"].startswith("the final output of step 'plan' does not match its schema")
    with duckdb.connect(str(db), read_only=True) as con:
        [(names,)] = con.execute("SELECT result FROM tool_calls").fetchall()
        errors = con.execute(
            "SELECT step_id, message FROM errors WHERE code = 'output-invalid' ORDER BY occurred"
        ).fetchall()
        final = con.execute("SELECT status FROM runs").fetchall()
        assert final == [("output_invalid",)]
        assert con.execute(
            "SELECT step_id FROM errors WHERE code = 'run-output-invalid'"
        ).fetchall() == [("plan",)]
    real = [r["name"] for r in json.loads(names)["restaurants"]]
    assert "Boston Grill 9" not in real and "Nowhere Diner" not in real
    # Both replies are outside the choices the run's tool result gave, and both are said.
    assert [step for step, _ in errors] == ["find", "plan"]
    assert all("is not one of" in message and real[0] in message for _, message in errors)


def test_tool_result_outside_a_tool_step_is_flagged(tmp_path: Path) -> None:
    agent = tmp_path / "a.yaml"
    agent.write_text(CHOOSER.replace("Write the plan.", "Write the plan from {{ tool_result }}."))
    done = run_cli("validate", str(agent))
    assert "uses 'tool_result', but it is set only in a step that calls a tool" in done.stdout
