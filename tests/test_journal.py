"""Group commit and the journal: the same rows whichever way they are made durable, and a
journal left by a crash replayed exactly once.

The SIGKILL tests in ``test_crash_and_load.py`` show that no acknowledged step is lost;
these show what the rows are, and how a journal is read back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowengine.errors import StorageError
from flowengine.graph.validate import validate_text
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.runtime.interpreter import RunSetup
from flowengine.runtime.session import Session, SessionConfig
from flowengine.storage import writer
from flowengine.storage.journal import Journal, journal_path, read_groups
from flowengine.storage.reader import Records
from flowengine.storage.rows import ErrorRow
from flowengine.storage.tables import TABLES, row_values
from flowengine.storage.writer import Storage, connect
from tests.conftest import ROOT
from tests.looper import looper

LOOPS = 6
LOOPER = looper(LOOPS)
RUNS = 6
# Columns that differ from one execution to the next whatever the storage does: times,
# durations, and the ids the kernel draws at random.
_VARYING = {"request_id", "call_id", "waiting_s", "turnaround_s", "service_s", "started_s"}


def _stored(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows without the varying columns, in a fixed order."""
    found = {}
    with connect(db, read_only=True) as connection:
        for table in TABLES.values():
            names = [
                c.name
                for c in table.columns
                if c.sql_type != "TIMESTAMP" and c.name not in _VARYING
            ]
            rows = connection.execute(f"SELECT {', '.join(names)} FROM {table.name}").fetchall()
            found[table.name] = sorted(rows, key=repr)
    return found


def _run_looper(db: Path, script: Path) -> None:
    agent = validate_text(LOOPER, "looper.yaml").agent
    assert agent is not None
    # fifo and a KV cache for every run: how requests are sliced and what each evaluates
    # does not then depend on the timing, which the way of committing changes.
    config = SessionConfig(
        db=db,
        backend="scripted",
        options={"script": script},
        scheduler=SchedulerConfig("fifo"),
        pool_size=RUNS,
    )
    with Session(config) as session:
        setups = [
            (RunSetup(agent, LOOPER, f"task {i}", run_id=f"run{i}"), None) for i in range(RUNS)
        ]
        outcomes = session.run_all(setups)
    assert [o.status for o in outcomes] == ["completed"] * RUNS


@pytest.mark.parametrize(
    ("group_commit", "journal"),
    [(False, True), (True, False), (False, False)],
    ids=["journal, a group a step", "DuckDB, grouped", "DuckDB, a transaction a step"],
)
def test_every_way_of_committing_stores_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group_commit: bool, journal: bool
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "round done"}))
    _run_looper(tmp_path / "default.duckdb", script)  # group commit into the journal
    monkeypatch.setattr(Storage, "group_commit", group_commit)
    monkeypatch.setattr(Storage, "journal", journal)
    _run_looper(tmp_path / "other.duckdb", script)
    expected = _stored(tmp_path / "default.duckdb")
    assert len(expected["steps"]) == RUNS * (2 * LOOPS + 1)
    assert len(expected["llm_requests"]) == RUNS * LOOPS
    assert _stored(tmp_path / "other.duckdb") == expected
    assert not journal_path(tmp_path / "default.duckdb").exists()  # removed at the end


def _error(index: int) -> ErrorRow:
    return ErrorRow("run", "Step", index, "tool-failed", f"message {index} é'\"\n", 1e9 + index)


def _messages(db: Path) -> list[str]:
    with Records(db) as records:
        return sorted(row["message"] for row in records.errors("run"))


def test_a_journal_left_behind_is_replayed_once_and_its_torn_tail_dropped(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crashed.duckdb"
    storage = Storage(db)
    storage.record_error(_error(1))
    storage.commit()  # group 1, in the journal
    storage.close()  # and in DuckDB, which marks it applied
    # What a process killed at the wrong moments leaves: group 1 again (DuckDB took it but
    # the journal was not yet emptied), group 2 (acknowledged, not yet in DuckDB), and
    # half a line (written when it died: never acknowledged).
    journal = Journal(db, last_group=0)
    journal.append([("errors", False, row_values(_error(1)))])
    journal.append([("errors", False, row_values(_error(2)))])
    journal.close(remove=False)
    with journal_path(db).open("a", encoding="utf-8") as file:
        file.write('[3,[["errors",false,["run","Step",3')
    assert [number for number, _ in read_groups(db)] == [1, 2]

    assert _messages(db) == ["message 1 é'\"\n", "message 2 é'\"\n"]  # `logs` replays it
    assert not journal_path(db).exists()
    assert _messages(db) == ["message 1 é'\"\n", "message 2 é'\"\n"]  # and only once
    storage = Storage(db)  # the next writer numbers its groups after the replayed ones
    storage.record_error(_error(4))
    storage.commit()
    assert [number for number, _ in read_groups(db)] == [3]
    storage.close()
    assert len(_messages(db)) == 3


def test_a_killed_writer_leaves_its_rows_in_the_journal_for_the_next_open(
    tmp_path: Path,
) -> None:
    db = tmp_path / "killed.duckdb"
    code = (
        "import os, sys; from pathlib import Path\n"
        "from flowengine.storage.writer import Storage\n"
        "from flowengine.storage.rows import ErrorRow\n"
        "storage = Storage(Path(sys.argv[1]))\n"
        "storage.record_error(ErrorRow('run', 'Step', 1, 'tool-failed', 'kept', 1e9))\n"
        "storage.commit()\n"
        "os._exit(0)  # no close: as if killed right after the commit returned\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(db)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert read_groups(db), "the commit returned before the row was in the journal"
    assert _messages(db) == ["kept"]


def test_a_full_journal_is_emptied_once_duckdb_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "JOURNAL_LIMIT", 1)  # every group fills it
    db = tmp_path / "full.duckdb"
    storage = Storage(db)
    for index in range(5):
        storage.record_error(_error(index))
        storage.commit()
        assert journal_path(db).stat().st_size == 0
    assert storage.transactions == 5  # each commit was still a journal write
    storage.close()
    assert len(_messages(db)) == 5


def test_a_journal_that_cannot_be_replayed_is_named_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "bad.duckdb"
    Storage(db).close()
    journal = Journal(db, last_group=0)
    journal.append([("errors", False, ("too", "few", "values"))])
    journal.close(remove=False)
    with pytest.raises(StorageError, match=r"bad\.duckdb\.journal.*move that file away"):
        Records(db)
    assert journal_path(db).exists()  # kept for whoever looks into it
