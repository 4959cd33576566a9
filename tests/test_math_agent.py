"""MathAgent's rules on the scripted backend: the operation its cue words settle, the
pattern its expression is held to, a calculator error sent back to be rewritten (with
the error in the prompt), bounded; and a templated ``pattern`` checked at run time.
The real model answering word problems is in test_local_model.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import AGENTS, run_cli

MATH = str(AGENTS / "math_agent.yaml")
PENS = "Pens cost 4 dollars each. How much do 6 pens cost?"


def _run(tmp_path: Path, agent: str, task: str, rules: list[dict[str, str]]) -> tuple[Any, str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": '"It is the number asked for."', "rules": rules}))
    db = str(tmp_path / "runs.duckdb")
    done = run_cli(
        "run", agent, "-i", task, "--backend", "scripted", "--script", str(script),
        "--db", db, "--json",
    )  # fmt: skip
    assert "Traceback" not in done.stderr
    return done, db


def _query(db: str, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(db, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_a_calculator_error_goes_back_to_the_expression_with_the_error_in_the_prompt(
    tmp_path: Path,
) -> None:
    done, db = _run(
        tmp_path,
        MATH,
        PENS,
        [
            {"contains": "failed: division by zero", "reply": '"4 * 6"'},
            {"contains": "Write this problem", "reply": '"4 / 0"'},
        ],
    )
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["path"] == [
        "operation",
        "write_expression",
        "calculate",
        "check",
        "write_expression",
        "calculate",
        "check",
        "explain",
        "answer",
    ]
    assert outcome["output"]["answer"] == 24 and outcome["output_valid"] is True
    assert _query(db, "SELECT label FROM steps WHERE step_id = 'check' ORDER BY seq") == [
        ("rewrite",),
        ("solved",),
    ]
    prompts = [
        prompt
        for (prompt,) in _query(
            db,
            "SELECT prompt FROM llm_requests WHERE step_id = 'write_expression' ORDER BY created",
        )
    ]
    assert "failed" not in prompts[0]
    assert "The expression 4 / 0 failed: division by zero." in prompts[1]
    # Without a grammar the pattern is checked after the fact: '4 / 0' is not '4 * 6'.
    [(message,)] = _query(db, "SELECT message FROM errors WHERE code = 'output-invalid'")
    assert "does not match" in message
    assert _query(db, "SELECT ok FROM tool_calls ORDER BY started") == [(False,), (True,)]


def test_an_expression_that_keeps_failing_gives_up_after_three_tries(tmp_path: Path) -> None:
    task = "12 cakes are shared equally among 0 friends. How many cakes does each friend get?"
    done, db = _run(tmp_path, MATH, task, [{"contains": "Write this problem", "reply": '"12 / 0"'}])
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["path"] == [
        "operation",
        *["write_expression", "calculate", "check"] * 3,
        "give_up",
    ]
    assert outcome["output"] == {
        "answer": None,
        "explanation": "no expression the calculator could work out: division by zero",
    }
    assert outcome["output_valid"] is True
    # '12 / 0' is what the pattern allows for this problem: the division rule, its numbers.
    assert _query(db, "SELECT count(*) FROM errors WHERE code = 'output-invalid'") == [(0,)]
    assert _query(db, "SELECT label FROM steps WHERE step_id = 'operation'") == [("divide",)]


@pytest.mark.parametrize(
    ("task", "operation", "expression"),
    [
        ("What is 20 percent of 150?", "percent_of", "20 / 100 * 150"),
        ("A 80 dollar coat is sold at a 25 percent discount. What does it cost?",
         "percent_off", "80 * (100 - 25) / 100"),
        ("What is 5 cubed?", "power", "5 ** 3"),
        ("A triangle has a base of 10 metres and a height of 6 metres. What is its area?",
         "half_product", "10 * 6 / 2"),
        ("Anna buys 3 books at 12 dollars each and a pen at 2 dollars. How much?",
         "each_and", "3 * 12 + 2"),
        ("Tom had 2.5 litres and used 1.5. How much is left?", "subtract", "2.5 - 1.5"),
    ],
)  # fmt: skip
def test_the_operation_rule_and_the_pattern_it_builds(
    tmp_path: Path, task: str, operation: str, expression: str
) -> None:
    done, db = _run(
        tmp_path, MATH, task, [{"contains": "Write this problem", "reply": f'"{expression}"'}]
    )
    assert done.returncode == 0, done.stderr
    assert _query(db, "SELECT label FROM steps WHERE step_id = 'operation'") == [(operation,)]
    # The reply matched the pattern built for this problem (no output-invalid error).
    assert _query(db, "SELECT code FROM errors") == []
    # ... and a reply the rule does not allow does not.
    other = expression.replace("*", "+", 1) if "*" in expression else expression + " + 1"
    second = tmp_path / "other"
    second.mkdir()
    done, db = _run(second, MATH, task, [{"contains": "Write this problem", "reply": f'"{other}"'}])
    assert [c for (c,) in _query(db, "SELECT code FROM errors")][:1] == ["output-invalid"]


TEMPLATED = """\
name: Templated
steps:
  word:
    type: process
    instruction: Write one of the words of the task.
    format: json
    schema:
      type: string
      pattern: "^({{ task.split() | join('|') }})$"
    save_as: word
    next: finish
  finish:
    type: terminal
    output: "{{ word }}"
"""


def test_a_templated_pattern_is_computed_and_checked_when_the_step_runs(tmp_path: Path) -> None:
    agent = tmp_path / "templated.yaml"
    agent.write_text(TEMPLATED)
    done, db = _run(tmp_path, str(agent), "red green blue", [{"reply": '"green"'}])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["output"] == "green"
    assert _query(db, "SELECT code FROM errors") == []

    # A task that makes the pattern one the grammar cannot hold fails the step in one line.
    done, _ = _run(tmp_path, str(agent), "(?=x)y", [{"reply": '"y"'}])
    assert done.returncode == 1
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "failed"
    assert "the schema's pattern" in outcome["error"]
    assert "look-around" in outcome["error"]


def test_validate_checks_a_pattern_with_the_length_limit_the_kernel_gives_a_string() -> None:
    from flowengine.agentfile import schema_validation
    from flowengine.kernel import constrain

    assert schema_validation.STRING_LIMIT == constrain.STRING_LIMIT
    unbounded = {"type": "string", "pattern": "^[a-z]*( [a-z]+){3,30}$"}
    assert "Unable to determine" in schema_validation.unenforceable(unbounded)[0]
    # A pattern bounded by itself compiles: the limit is only where the regex has none.
    assert schema_validation.unenforceable({**unbounded, "pattern": "^[a-z]{1,9}$"}) == []


def test_a_problem_without_digits_ends_at_once_without_asking_the_model(tmp_path: Path) -> None:
    done, db = _run(tmp_path, MATH, "What is twelve times seven?", [])
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["path"] == ["operation", "no_numbers"]
    assert outcome["output"] == {
        "answer": None,
        "explanation": "the problem has no numbers written in digits",
    }
    assert _query(db, "SELECT count(*) FROM llm_requests") == [(0,)]
