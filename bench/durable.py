"""Durable steps a second: many concurrent runs on one kernel, every step committed.

32 runs of an 81-step agent (40 model steps) on the scripted backend, an instant stand-in
for a fast model server, all committing to one DuckDB file; each step is acknowledged only
once durable. Measured with the storage writer's group commit on and off.

    python bench/durable.py           # prints JSON
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.graph.validate import validate_text  # noqa: E402
from flowengine.runtime.interpreter import RunSetup  # noqa: E402
from flowengine.runtime.session import Session, SessionConfig  # noqa: E402
from flowengine.storage.writer import Storage  # noqa: E402

RUNS = 32
LOOPS = 40
AGENT = f"""\
name: Looper
description: Works in rounds.
steps:
  Work:
    type: process
    instruction: Do round {{{{ visits.get('Work', 0) + 1 }}}}.
    next: Check
  Check:
    type: decision
    question: Enough rounds?
    branches: {{stop: Done, again: Work}}
    when:
      stop: "visits['Work'] >= {LOOPS}"
    default: again
  Done:
    type: terminal
    output: "done"
"""
STEPS = 2 * LOOPS + 1


def one_round(folder: Path, name: str, group: bool) -> dict[str, float]:
    agent = validate_text(AGENT, "looper.yaml").agent
    assert agent is not None
    script = folder / "script.json"
    script.write_text(json.dumps({"default": "round done"}))
    Storage.group_commit = group
    config = SessionConfig(
        db=folder / f"{name}.duckdb", backend="scripted", script=script, pool_size=8
    )
    with Session(config) as session:
        setups = [(RunSetup(agent, AGENT, f"task {i}"), None) for i in range(RUNS)]
        start = time.perf_counter()
        outcomes = session.run_all(setups)
        seconds = time.perf_counter() - start
        transactions = session.storage.transactions
    Storage.group_commit = True
    assert [o.status for o in outcomes] == ["completed"] * RUNS
    steps = RUNS * STEPS
    return {"steps_per_s": steps / seconds, "steps_per_transaction": steps / transactions}


def main(repeat: int = 3) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"group commit": [], "one commit a step": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_round(folder, "warm", True)
        for index in range(repeat):
            results["group commit"].append(one_round(folder, f"g{index}", True))
            results["one commit a step"].append(one_round(folder, f"s{index}", False))
    return {
        "runs": RUNS,
        "steps_per_run": STEPS,
        "repeat": repeat,
        "variants": {
            name: {
                key: statistics.median(r[key] for r in rounds)
                for key in ("steps_per_s", "steps_per_transaction")
            }
            for name, rounds in results.items()
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
