"""The storage layer: rows as dataclasses, the schema derived from them, schema versions.

``tests/data/v1.duckdb`` was written by the release before schema versions (see
``tests/data/v1/make_v1_db.py``); every test here works on a copy of it, through the real
CLI where a user would.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
import typing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flowengine.errors import StorageError
from flowengine.storage import tables
from flowengine.storage.checkpoints import fold, step_change
from flowengine.storage.reader import Records
from flowengine.storage.rows import ROW_TYPES, ErrorRow, Row, RunRow
from flowengine.storage.tables import META_TABLE, MIGRATIONS, SCHEMA_VERSION, TABLES, table_of
from flowengine.storage.writer import Storage
from tests.conftest import AGENTS, ROOT, run_cli
from tests.looper import looper

V1 = ROOT / "tests" / "data" / "v1.duckdb"
V1_SCRIPTS = ROOT / "tests" / "data" / "v1"
MATH = str(AGENTS / "math_agent.yaml")


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "v1.duckdb"
    shutil.copyfile(V1, copy)
    return copy


def _scripted(script: str, db: Path) -> list[str]:
    return ["--backend", "scripted", "--script", str(V1_SCRIPTS / script), "--db", str(db)]


def _json(*args: str) -> Any:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def _tables(db: Path) -> set[str]:
    return {name for (name,) in _query(db, "SELECT table_name FROM duckdb_tables()")}


def _runs_by_status(db: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for run in _json("logs", "--db", str(db), "--format", "json"):
        found.setdefault(run["status"], []).append(run)
    return found


def test_the_v1_fixture_is_what_the_old_release_wrote() -> None:
    # No version table, the five runs of make_v1_db.py, and small enough to keep in git.
    assert META_TABLE not in _tables(V1)
    assert V1.stat().st_size < 2_000_000
    assert sorted(_query(V1, "SELECT status, agent FROM runs")) == [
        ("completed", "MathAgent"),
        ("completed", "MathAgent"),
        ("completed", "MathAgent"),
        ("failed", "MathAgent"),
        ("running", "Looper"),
    ]


def test_a_v1_database_reads_through_the_cli_and_is_left_as_it_was(v1_copy: Path) -> None:
    before = v1_copy.read_bytes()
    runs = _runs_by_status(v1_copy)
    assert {status: len(found) for status, found in runs.items()} == {
        "completed": 3,
        "failed": 1,
        "running": 1,
    }
    [killed] = runs["running"]
    assert killed["agent"] == "Looper" and killed["steps"] >= 6  # counted live, as today

    [failed] = runs["failed"]
    detail = _json("logs", failed["run_id"], "--db", str(v1_copy), "--format", "json")
    assert [s["step_id"] for s in detail["steps"]] == [
        "understand",
        "classify",
        "write_expression",
        "calculate",
        "check",
    ]
    assert [(c["tool"], c["ok"]) for c in detail["tool_calls"]] == [("calculator", False)]
    assert [e["code"] for e in detail["errors"]] == ["tool-failed", "llm-failed"]
    assert detail["llm_requests"][-1]["error"].endswith("the model stopped answering")
    # The file stored step_seq one less than its step's seq; it reads as version 7 stores it.
    seqs = {step["step_id"]: step["seq"] for step in detail["steps"]}
    assert [(e["step_id"], e["step_seq"]) for e in detail["errors"]] == [
        ("calculate", seqs["calculate"]),
        ("answer", len(seqs) + 1),  # the step that never finished
    ]
    assert [c["step_seq"] for c in detail["tool_calls"]] == [seqs["calculate"]]
    assert all(
        r["step_seq"] == seqs[r["step_id"]] for r in detail["llm_requests"] if r["step_id"] in seqs
    )
    table = run_cli("logs", failed["run_id"], "--db", str(v1_copy))
    assert table.returncode == 0 and "division by zero" in table.stdout, table.stderr

    stats = _json("stats", "--db", str(v1_copy), "--format", "json")["scheduler"]
    assert {(row["agent"], row["scheduler"]): row["runs"] for row in stats} == {
        ("Looper", "rr"): 1,
        ("MathAgent", "fifo"): 1,
        ("MathAgent", "rr"): 3,
    }

    drawn = run_cli("viz", MATH, "--run", failed["run_id"], "--db", str(v1_copy), "--format", "dot")
    assert drawn.returncode == 0, drawn.stderr
    assert f"run {failed['run_id']}: failed after 5 steps" in drawn.stdout
    assert "ran 1×" in drawn.stdout  # noqa: RUF001

    assert v1_copy.read_bytes() == before  # reading never migrates


def test_resuming_the_killed_v1_run_migrates_the_file_and_finishes_the_run(
    v1_copy: Path,
) -> None:
    [killed] = _runs_by_status(v1_copy)["running"]
    run_id = killed["run_id"]
    stored = _query(v1_copy, f"SELECT max(seq) FROM steps WHERE run_id = '{run_id}'")[0][0]

    [outcome] = _json("resume", run_id, *_scripted("looper-script.json", v1_copy), "--json")
    assert outcome["status"] == "completed", outcome
    assert outcome["output"] == "finished after 200 rounds: stop"

    assert _query(v1_copy, f"SELECT schema_version FROM {META_TABLE}") == [(SCHEMA_VERSION,)]
    seqs = _query(v1_copy, f"SELECT seq FROM steps WHERE run_id = '{run_id}' ORDER BY seq")
    assert [seq for (seq,) in seqs] == list(range(1, outcome["steps"] + 1))
    assert outcome["steps"] > stored
    # The resumed part stored its calculator calls next to those from before the kill,
    # each with its step's seq: the migrated ones and the new ones alike.
    calls = _query(v1_copy, f"SELECT count(*) FROM tool_calls WHERE run_id = '{run_id}'")
    assert calls == [(200,)]
    joined = _query(
        v1_copy,
        "SELECT count(*) FROM tool_calls t JOIN steps s ON s.run_id = t.run_id "
        f"AND s.seq = t.step_seq AND s.step_id = t.step_id WHERE t.run_id = '{run_id}'",
    )
    assert joined == [(200,)]
    # Steps from before hold the whole memory; the resumed ones only what they changed.
    states = [
        json.loads(state)
        for (state,) in _query(
            v1_copy, f"SELECT state FROM steps WHERE run_id = '{run_id}' ORDER BY seq"
        )
    ]
    assert all("path" in state for state in states[:stored])
    assert all(set(state) == {"set", "progress_dropped"} for state in states[stored:])

    # The old runs are still there, and new runs go in beside them.
    task = "What is (3 + 4) * 2?"
    _json("run", MATH, "--input", task, *_scripted("math-script.json", v1_copy), "--json")
    runs = _runs_by_status(v1_copy)
    assert {status: len(found) for status, found in runs.items()} == {
        "completed": 5,
        "failed": 1,
    }


def _columns(db: Path) -> list[tuple[str, str, str]]:
    return _query(
        db,
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE table_name <> 'flowengine_meta' ORDER BY table_name, column_index",
    )


def _keys(db: Path) -> list[tuple[str, list[str]]]:
    return _query(
        db,
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
        "WHERE constraint_type = 'PRIMARY KEY' ORDER BY table_name",
    )


def test_a_migrated_v1_file_has_the_schema_of_a_new_file(v1_copy: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.duckdb"
    Storage(fresh).close()
    Storage(v1_copy).close()
    assert _columns(v1_copy) == _columns(fresh)
    assert _keys(v1_copy) == _keys(fresh) == [("runs", ["run_id"]), ("steps", ["run_id", "seq"])]
    for db in (fresh, v1_copy):
        assert _query(db, f"SELECT schema_version FROM {META_TABLE}") == [(SCHEMA_VERSION,)]


def test_the_tables_are_the_row_dataclasses() -> None:
    # Today's table and column names, which SQL written by users depends on.
    assert sorted(TABLES) == sorted(
        [
            "runs",
            "steps",
            "llm_requests",
            "llm_slices",
            "tool_calls",
            "errors",
            "batch_ticks",
            "test_cases",
        ]
    )
    for row_type in ROW_TYPES:
        table = table_of(row_type)
        assert [c.name for c in table.columns] == [f.name for f in dataclasses.fields(row_type)]
        assert row_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
    # Every column of version 1 is still there with its type; later versions only add.
    old = {(t, c): kind for t, c, kind in _columns(V1)}
    added_since_v1 = {("llm_requests", "reused_tokens"), ("runs", "question")}
    current = {(t.name, c.name): c.sql_type for t in TABLES.values() for c in t.columns}
    added_since_v1 |= {k for k in current if k[0] in ("batch_ticks", "test_cases")}
    assert {k for k in old if k[0] in TABLES} == set(current) - added_since_v1
    for key, kind in old.items():
        if key[0] in TABLES:
            assert current[key] == kind


_RECORD = {  # the record_* method of each table
    "runs": "run",
    "steps": "step",
    "llm_requests": "request",
    "llm_slices": "slice",
    "tool_calls": "tool_call",
    "errors": "error",
    "batch_ticks": "tick",
    "test_cases": "test_case",
}


_SAMPLES: dict[str, list[Any]] = {
    "VARCHAR": ["text é", None],
    "INTEGER": [7, None],
    "DOUBLE": [0.5, None],
    "BOOLEAN": [True, None],
    "TIMESTAMP": [1_700_000_000.25, None],
    "JSON": [{"a": [1, "é"]}, None],
}


def _sample_row(row_type: type[Row], variant: int) -> Row:
    """A row with a value of its column's type in every field (None in nullable ones
    when ``variant`` is 1), and the key made unique by ``variant``."""
    table = table_of(row_type)
    hints = typing.get_type_hints(row_type)
    values = {}
    for column in table.columns:
        nullable = type(None) in typing.get_args(hints[column.name])
        value = _SAMPLES[column.sql_type][1 if variant and nullable else 0]
        if column.name in table.key and column.sql_type == "VARCHAR":
            value = f"key-{variant}"
        values[column.name] = value
    return row_type(**values)


def _read_back(storage: Storage, row_type: type[Row]) -> list[Row]:
    table = table_of(row_type)
    selected = ", ".join(
        f"epoch({c.name})" if c.sql_type == "TIMESTAMP" else c.name for c in table.columns
    )
    rows = storage.query(f"SELECT {selected} FROM {table.name} ORDER BY ALL")
    back = []
    for row in rows:
        values = [
            json.loads(value) if column.sql_type == "JSON" and value is not None else value
            for column, value in zip(table.columns, row, strict=True)
        ]
        back.append(row_type(*values))
    return back


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda row_type: row_type.TABLE)
def test_every_row_comes_back_as_recorded_alone_or_in_a_batch(
    tmp_path: Path, row_type: type[Row]
) -> None:
    # One row goes through VALUES, several through unnest: both must store the same.
    storage = Storage(tmp_path / "rows.duckdb")
    record = getattr(storage, "record_" + _RECORD[row_type.TABLE])
    first = _sample_row(row_type, 0)
    record(first)
    storage.commit()
    batch = [_sample_row(row_type, 1), _sample_row(row_type, 2)]
    for row in batch:
        record(row)
    back = _read_back(storage, row_type)
    storage.close()
    expected = [first, *batch]
    assert sorted(back, key=repr) == sorted(expected, key=repr)


def test_a_run_row_recorded_again_replaces_the_first(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "runs.duckdb")
    first = _sample_row(RunRow, 1)
    assert isinstance(first, RunRow)
    storage.record_run(first)
    storage.commit()
    storage.record_run(dataclasses.replace(first, status="completed", steps=9))
    assert storage.query("SELECT run_id, status, steps FROM runs") == [("key-1", "completed", 9)]
    storage.close()


def test_a_file_from_a_newer_flowengine_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "newer.duckdb"
    storage = Storage(db)
    storage.record_error(ErrorRow("r", "s", 1, "c", "m", 0.0))
    storage.close()
    with duckdb.connect(str(db)) as connection:
        connection.execute(f"UPDATE {META_TABLE} SET schema_version = {SCHEMA_VERSION + 1}")
    for command in (
        ["logs", "--db", str(db)],
        ["run", MATH, "--input", "x", *_scripted("math-script.json", db)],
    ):
        done = run_cli(*command)
        assert done.returncode != 0
        assert "written by a newer flowengine" in done.stderr, done.stderr
        assert "upgrade flowengine" in done.stderr
        assert "Traceback" not in done.stderr
    assert _query(db, "SELECT count(*) FROM errors") == [(1,)]


def test_a_duckdb_file_of_something_else_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "other.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
    for command in (
        ["logs", "--db", str(db)],
        ["stats", "--db", str(db)],
        ["run", MATH, "--input", "x", *_scripted("math-script.json", db)],
    ):
        done = run_cli(*command)
        assert done.returncode != 0
        assert "not a flowengine database" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert _tables(db) == {"orders"}


def test_opening_for_writing_twice_keeps_the_version_and_the_rows(v1_copy: Path) -> None:
    for _ in range(2):
        Storage(v1_copy).close()
    assert _query(v1_copy, f"SELECT * FROM {META_TABLE}") == [(SCHEMA_VERSION,)]
    assert _query(v1_copy, "SELECT count(*) FROM runs") == [(5,)]
    with pytest.raises(StorageError, match="no database yet"):
        Records(v1_copy.with_name("missing.duckdb"))


def test_the_readme_lists_every_column_of_every_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for table in TABLES.values():
        [line] = [line for line in readme.splitlines() if line.startswith(f"| `{table.name}` (")]
        for column in table.columns:
            assert f"`{column.name}`" in line, (table.name, column.name)
    assert f"now {SCHEMA_VERSION})" in readme


def test_storage_imports_nothing_of_flowengine_but_errors() -> None:
    for source in (ROOT / "flowengine" / "storage").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("flowengine"):
                    assert name == "flowengine.errors" or name.startswith("flowengine.storage"), (
                        f"{source.name} imports {name}"
                    )


def test_every_schema_version_after_the_first_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))


def test_a_later_migration_runs_once_and_in_order(
    v1_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A made-up version 3 that adds a column: the path a real column change will take.
    monkeypatch.setattr(tables, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(
        tables.MIGRATIONS, SCHEMA_VERSION + 1, ("ALTER TABLE errors ADD COLUMN hint VARCHAR",)
    )
    for _ in range(2):  # the second open finds version 3 and migrates nothing
        Storage(v1_copy).close()
    assert _query(v1_copy, f"SELECT schema_version FROM {META_TABLE}") == [(SCHEMA_VERSION + 1,)]
    assert ("errors", "hint", "VARCHAR") in _columns(v1_copy)
    assert _query(v1_copy, "SELECT count(*) FROM errors") == [(2,)]


def test_a_failed_migration_leaves_the_file_as_it_was(
    v1_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        tables.MIGRATIONS, SCHEMA_VERSION, ("CREATE TABLE extra (x INTEGER)", "SELECT nonsense")
    )
    with pytest.raises(StorageError, match="could not bring the database from schema version 1"):
        Storage(v1_copy)
    assert META_TABLE not in _tables(v1_copy) and "extra" not in _tables(v1_copy)
    assert _query(v1_copy, "SELECT count(*) FROM runs") == [(5,)]


def test_a_runs_memory_is_the_fold_of_its_steps_whole_or_changed() -> None:
    """Rows of a file from before version 7 hold the whole memory and replace what was
    folded; later rows add what they changed (a run begun before and resumed after)."""
    whole = {
        "variables": {"a": 1},
        "progress": [{"step": "s1", "result": "r1"}],
        "visits": {"s1": 1},
        "progress_dropped": 0,
        "path": ["s1"],
    }
    rows = [
        ("s1", json.dumps("r1"), json.dumps(whole)),
        ("s2", json.dumps({"x": 2}), json.dumps(step_change({"b": {"x": 2}}, 1))),
        ("s1", json.dumps("r3"), step_change({}, 1)),
    ]
    assert fold(rows) == {
        "variables": {"a": 1, "b": {"x": 2}},
        "progress": [
            {"step": "s1", "result": "r1"},
            {"step": "s2", "result": {"x": 2}},
            {"step": "s1", "result": "r3"},
        ],
        "visits": {"s1": 2, "s2": 1},
        "progress_dropped": 1,
        "path": ["s1", "s2", "s1"],
    }


def test_a_steps_row_grows_with_what_it_changed_not_with_the_run(tmp_path: Path) -> None:
    """A long run's last step row is as small as its first: storage grows linearly."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "round done"}))
    agent = tmp_path / "looper.yaml"
    agent.write_text(looper(100) + "max_steps: 300\n")
    db = tmp_path / "long.duckdb"
    done = run_cli(
        "run",
        str(agent),
        "--input",
        "go",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--db",
        str(db),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    sizes = [size for (size,) in _query(db, "SELECT length(state) FROM steps ORDER BY seq")]
    # Only the count of progress entries left out of prompts grows, by a digit or two.
    assert len(sizes) == 201 and max(sizes) <= sizes[0] + 3
    with Records(db) as records:
        memory = records.memory_after(records.runs()[0]["run_id"], 201)
    assert memory["visits"] == {"Work": 100, "Check": 100, "Done": 1}
    assert memory["path"][-3:] == ["Work", "Check", "Done"]
    assert memory["progress"][-1]["result"] == "finished after 100 rounds: stop"
