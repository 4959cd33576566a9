"""One long run: how the database file, the write time and the memory grow with its steps.

A Looper run (``tests/looper.py``) of N steps on the scripted backend, an instant stand-in
model, writing to a fresh DuckDB file. Each size runs in a fresh interpreter, so that its
peak memory (``ru_maxrss``) is its own. Printed: the file's size (with its WAL), the
bytes of the ``state`` column, the seconds the storage threads spent writing (journal and
DuckDB), the run's seconds, and the peak memory. ``--code DIR`` runs the same measurement on
another checkout of flowengine (an older commit, say), so before and after are side by
side on one machine in one sitting.

    python bench/long_run.py                      # 500, 1,000 and 2,000 steps, as JSON
    python bench/long_run.py --table --before /tmp/before   # beside an older checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter, with the checkout measured first on sys.path.
_MEASURE = """
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from flowengine.graph.validate import validate_text
from flowengine.runtime.interpreter import RunSetup
from flowengine.runtime.session import Session, SessionConfig
from tests.looper import looper

steps = int(sys.argv[2])
text = looper(steps // 2) + f"max_steps: {steps + 10}\\n"
agent = validate_text(text, "looper.yaml").agent
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp)
    script = folder / "script.json"
    script.write_text(json.dumps({"default": "round done"}))
    db = folder / "long.duckdb"
    config = SessionConfig(db=db, backend="scripted", script=script)
    start = time.perf_counter()
    with Session(config) as session:
        [outcome] = session.run_all([(RunSetup(agent, text, "loop"), None)])
        storage = session.storage
    seconds = time.perf_counter() - start
    assert outcome.status == "completed", outcome
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = sum(p.stat().st_size for p in folder.glob("long.duckdb*"))
    import duckdb
    with duckdb.connect(str(db), read_only=True) as connection:
        [(state_bytes,)] = connection.execute("SELECT sum(length(state)) FROM steps").fetchall()
    print(json.dumps({"steps": outcome.steps, "seconds": seconds, "db_bytes": size,
                      "state_bytes": state_bytes, "peak_mib": peak / 1024,
                      "write_s": storage.write_seconds + storage.load_seconds}))
"""


def measure(code: Path, steps: int) -> dict[str, Any]:
    """One run of ``steps`` steps on the checkout at ``code``, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(code), str(steps)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {steps}-step run failed:\n{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (machines here are shared and noisy)."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def figures(code: Path, before: Path | None, sizes: list[int], repeat: int) -> dict[str, Any]:
    """Each size on ``code`` (and on ``before``, alternating, when given): medians."""
    results: dict[str, Any] = {"sizes": {}, "repeat": repeat, "load_average": os.getloadavg()}
    for steps in sizes:
        runs: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
        for _ in range(repeat):
            runs["after"].append(measure(code, steps))
            if before is not None:
                runs["before"].append(measure(before, steps))
        results["sizes"][str(steps)] = {
            name: median_figures(found) for name, found in runs.items() if found
        }
    return results


def print_table(results: dict[str, Any]) -> None:
    """The figures as a table, one row per size and checkout."""
    print(
        f"{'steps':>6} {'code':>7} {'file MiB':>9} {'state MiB':>10} {'write s':>8} "
        f"{'run s':>7} {'peak MiB':>9}"
    )
    for entry in results["sizes"].values():
        for name in ("before", "after"):
            if name in entry:
                f = entry[name]
                print(
                    f"{f['steps']:>6} {name:>7} {f['db_bytes'] / 2**20:>9.2f} "
                    f"{f['state_bytes'] / 2**20:>10.2f} {f['write_s']:>8.2f} "
                    f"{f['seconds']:>7.2f} {f['peak_mib']:>9.1f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, action="append", help="run length (repeatable)")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--before", type=Path, help="an older checkout, measured beside it")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (medians)")
    parser.add_argument("--table", action="store_true", help="a table, not JSON")
    args = parser.parse_args()
    before = args.before.resolve() if args.before else None
    results = figures(args.code.resolve(), before, args.steps or [500, 1000, 2000], args.repeat)
    if args.table:
        print_table(results)
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
