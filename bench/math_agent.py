"""MathAgent on arithmetic word problems, on the embedded model: how many it answers right.

``bench/data/math_problems.json`` holds two sets of word problems that one expression
solves (costs, sharing, rates, percentages, areas, powers), each with the expected number:
``tuning`` (the cue-word rules and the prompt were worked out on it), ``holdout`` (written
at the same time, and run only to measure) and ``reworded`` (written after the rules, in
wordings that avoid their cue words: what a user who does not know them might ask).
Every problem is a run of
``agents/math_agent.yaml`` through the runtime (one session, one kernel, the default
backend: SmolLM2-135M through ctransformers), as ``flowengine run --batch`` would run it.

A run is right when it completes, its output is valid JSON against the terminal's schema,
and its ``answer`` equals the expected number (to 1e-6 relative). Also counted: runs whose
first expression the calculator refused (and the rule sent back to be rewritten), and
runs that ended in ``give_up``.

    python bench/math_agent.py          # prints JSON; bench/run.py puts it in BENCHMARKS.md
    python bench/math_agent.py --show   # also each problem's expression and answer, on stderr
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.runtime.interpreter import RunOutcome, RunSetup  # noqa: E402
from flowengine.runtime.prepare import runnable_agent  # noqa: E402
from flowengine.runtime.session import Session, SessionConfig  # noqa: E402

PROBLEMS = ROOT / "bench" / "data" / "math_problems.json"
AGENT = ROOT / "agents" / "math_agent.yaml"
AT_ONCE = 4
"""Runs in flight together: the kernel's default pool of KV caches, one each."""


def right(outcome: RunOutcome, expected: float) -> bool:
    output = outcome.output
    if outcome.status != "completed" or not outcome.output_valid or not isinstance(output, dict):
        return False
    answer = output.get("answer")
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        return False
    return math.isclose(answer, expected, rel_tol=1e-6, abs_tol=1e-9)


def measure(session: Session, problems: list[dict[str, Any]], show: bool) -> dict[str, Any]:
    agent, source = runnable_agent(str(AGENT))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(problems), AT_ONCE):
        chunk = problems[start : start + AT_ONCE]
        setups = [RunSetup(agent, source, problem["task"]) for problem in chunk]
        began = time.perf_counter()
        outcomes = session.run_all([(setup, None) for setup in setups])
        seconds = (time.perf_counter() - began) / len(chunk)
        for problem, outcome in zip(chunk, outcomes, strict=True):
            expressions = [
                json.loads(value)
                for (value,) in session.storage.query(
                    "SELECT result FROM steps WHERE run_id = ? AND step_id = 'write_expression' "
                    "ORDER BY seq",
                    [outcome.run_id],
                )
            ]
            row = {
                "task": problem["task"],
                "kind": problem["kind"],
                "expected": problem["answer"],
                "expressions": expressions,
                "answer": outcome.output.get("answer")
                if isinstance(outcome.output, dict)
                else None,
                "status": outcome.status,
                "right": right(outcome, problem["answer"]),
                "rewritten": len(expressions) > 1,
                "gave_up": outcome.path[-1:] == ["give_up"],
                "seconds": seconds,
            }
            rows.append(row)
            if show:
                mark = "ok " if row["right"] else "BAD"
                print(
                    f"{mark} {problem['task']} -> {expressions} = {row['answer']} "
                    f"(expected {problem['answer']})",
                    file=sys.stderr,
                )
    kinds = sorted({row["kind"] for row in rows})
    return {
        "problems": len(rows),
        "right": sum(row["right"] for row in rows),
        "accuracy": sum(row["right"] for row in rows) / len(rows),
        "by_kind": {
            kind: [
                sum(r["right"] for r in rows if r["kind"] == kind),
                sum(r["kind"] == kind for r in rows),
            ]
            for kind in kinds
        },
        "rewritten": sum(row["rewritten"] for row in rows),
        "gave_up": sum(row["gave_up"] for row in rows),
        "not_completed": sum(row["status"] != "completed" for row in rows),
        "seconds_per_problem": statistics.median(row["seconds"] for row in rows),
        "wrong": [
            {
                "task": r["task"],
                "expressions": r["expressions"],
                "answer": r["answer"],
                "expected": r["expected"],
            }
            for r in rows
            if not r["right"]
        ],
    }


def main() -> dict[str, Any]:
    show = "--show" in sys.argv[1:]
    sets = json.loads(PROBLEMS.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as folder:
        config = SessionConfig(db=Path(folder) / "math.duckdb")
        with Session(config) as session:
            return {name: measure(session, problems, show) for name, problems in sets.items()}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
