"""How tests/data/v1.duckdb was made: runs stored by the release before schema versions.

The file is a schema-version-1 database (no ``flowengine_meta`` table), written by commit
218fd22 through the real CLI on the scripted backend. To make it again, check that commit
out and, from the repository root, run ``.venv/bin/python tests/data/v1/make_v1_db.py``.

It holds four runs of MathAgent (two completed side by side on the rr scheduler; one
completed on fifo; one failed: the calculator divides by zero) and one
run of Looper killed with SIGKILL after its sixth step, left ``running``, to be resumed.

DuckDB's 256 KiB blocks make even these few rows a 4 MB file, so the runs are written to a
scratch file and then copied, table for table with their keys, into one of 16 KiB blocks
(``COPY FROM DATABASE``): the same tables, columns and rows, about 200 KB.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
PACKED = HERE.parent / "v1.duckdb"
DB = HERE / "scratch.duckdb"
FLOWENGINE = str(Path(sys.executable).parent / "flowengine")
TASK = "What is (3 + 4) * 2?"


def scripted(script: str) -> list[str]:
    return ["--backend", "scripted", "--script", str(HERE / script), "--db", str(DB)]


def run(*args: str) -> None:
    done = subprocess.run([FLOWENGINE, *args], cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, done.stderr, sep="\n")


def pack() -> None:
    """Copy the scratch file (replaying the killed run's WAL) into small blocks."""
    import duckdb

    PACKED.unlink(missing_ok=True)
    with duckdb.connect() as connection:
        connection.execute(f"ATTACH '{DB}' AS scratch")
        connection.execute(f"ATTACH '{PACKED}' AS packed (BLOCK_SIZE 16384)")
        connection.execute("COPY FROM DATABASE scratch TO packed")
    for leftover in (DB, DB.with_suffix(".duckdb.wal")):
        leftover.unlink(missing_ok=True)


def main() -> None:
    DB.unlink(missing_ok=True)
    math = "agents/math_agent.yaml"
    rr = ["--scheduler", "rr", "--quantum", "2"]
    run("run", math, math, "--input", TASK, *rr, *scripted("math-script.json"), "-q")
    run("run", math, "--input", TASK, "--scheduler", "fifo", *scripted("math-script.json"))
    run("run", math, "--input", "What is 1 / 0?", *scripted("failing-script.json"))
    looper = subprocess.Popen(
        [
            FLOWENGINE,
            "run",
            "tests/data/v1/looper.yaml",
            "--input",
            "work",
            *scripted("looper-script.json"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert looper.stdout is not None
    for line in looper.stdout:
        found = re.match(r"^Looper (\w+) #(\d+) ", line)
        if found and int(found.group(2)) >= 6:
            break
    looper.send_signal(signal.SIGKILL)
    looper.wait()
    print(f"killed Looper run {found.group(1) if found else '?'} after step 6 or later")
    pack()


if __name__ == "__main__":
    main()
