"""Durable steps a second: many concurrent runs on one kernel, every step committed.

32 runs of an 81-step agent (40 model steps) on the scripted backend, an instant stand-in
for a fast model server, all committing to one DuckDB file; each step is acknowledged only
once durable. Measured four ways, alternating: group commit on and off, each with the
journal (``storage/journal.py``, the default) and with a DuckDB transaction per durable
write (before the journal).

    python bench/durable.py           # prints JSON
"""

from __future__ import annotations

import json
import os
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
from tests.looper import looper  # noqa: E402

RUNS = 32
LOOPS = 40
AGENT = looper(LOOPS)
STEPS = 2 * LOOPS + 1


VARIANTS = {  # name: (group commit, journal)
    "journal, group commit (the default)": (True, True),
    "journal, one write a step": (False, True),
    "DuckDB, group commit (before)": (True, False),
    "DuckDB, one transaction a step (before that)": (False, False),
}


def one_round(folder: Path, name: str, group: bool, journal: bool) -> dict[str, float]:
    agent = validate_text(AGENT, "looper.yaml").agent
    assert agent is not None
    script = folder / "script.json"
    script.write_text(json.dumps({"default": "round done"}))
    Storage.group_commit, Storage.journal = group, journal
    config = SessionConfig(
        db=folder / f"{name}.duckdb", backend="scripted", options={"script": script}, pool_size=8
    )
    with Session(config) as session:
        setups = [(RunSetup(agent, AGENT, f"task {i}"), None) for i in range(RUNS)]
        start = time.perf_counter()
        outcomes = session.run_all(setups)
        seconds = time.perf_counter() - start
        writes = session.storage.transactions
    Storage.group_commit = Storage.journal = True
    assert [o.status for o in outcomes] == ["completed"] * RUNS
    steps = RUNS * STEPS
    return {"steps_per_s": steps / seconds, "steps_per_durable_write": steps / writes}


def main(repeat: int = 3) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_round(folder, "warm", True, True)
        for index in range(repeat):
            for number, (name, (group, journal)) in enumerate(VARIANTS.items()):
                results[name].append(one_round(folder, f"v{number}r{index}", group, journal))
    return {
        "runs": RUNS,
        "steps_per_run": STEPS,
        "repeat": repeat,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "variants": {
            name: {
                key: statistics.median(r[key] for r in rounds)
                for key in ("steps_per_s", "steps_per_durable_write")
            }
            for name, rounds in results.items()
        },
        "ratios": {
            "journal / DuckDB, group commit": statistics.median(
                a["steps_per_s"] / b["steps_per_s"]
                for a, b in zip(
                    results["journal, group commit (the default)"],
                    results["DuckDB, group commit (before)"],
                    strict=True,
                )
            ),
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
