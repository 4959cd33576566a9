"""The storage manager: every run, step, LLM request, slice, tool call and error in DuckDB.

One writer thread owns the connection. Rows are queued and written in batches, one
transaction a batch, through DuckDB's ``unnest`` of column lists (tens of thousands of
rows a second without pandas or Arrow; a lone row goes as plain ``VALUES``). ``commit``
waits until everything queued before it is durable: the runtime commits each finished
step, so a step it reports is never lost, and a crash leaves only whole batches behind.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError

FLUSH_ROWS = 2000
FLUSH_SECONDS = 0.25
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...] = ()

    def create_sql(self) -> str:
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        key = f", PRIMARY KEY ({', '.join(self.key)})" if self.key else ""
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({columns}{key})"

    def insert_sql(self, replace: bool = False, one_row: bool = False) -> str:
        """Rows given as column lists (``unnest``), or as one row of parameters.

        Timestamps arrive as Unix seconds and are stored as UTC. A single row goes
        without ``unnest``: DuckDB plans it in half the time, and a step's commit is
        mostly single rows.
        """
        values = []
        for index, (_, kind) in enumerate(self.columns, start=1):
            value = f"${index}" if one_row else f"unnest(${index})"
            values.append(
                f"make_timestamp(CAST({value} * 1e6 AS BIGINT))" if kind == "TIMESTAMP" else value
            )
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        if one_row:
            return f"{verb} INTO {self.name} VALUES ({', '.join(values)})"
        return f"{verb} INTO {self.name} SELECT {', '.join(values)}"


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "runs",
            (
                ("run_id", "VARCHAR"),
                ("agent", "VARCHAR"),
                ("agent_file", "VARCHAR"),
                ("agent_source", "VARCHAR"),
                ("inputs", "JSON"),
                ("status", "VARCHAR"),
                ("backend", "VARCHAR"),
                ("model", "VARCHAR"),
                ("scheduler", "VARCHAR"),
                ("quantum", "INTEGER"),
                ("created", "TIMESTAMP"),
                ("updated", "TIMESTAMP"),
                ("steps", "INTEGER"),
                ("output", "VARCHAR"),
                ("output_valid", "BOOLEAN"),
                ("output_errors", "JSON"),
                ("error", "VARCHAR"),
            ),
            key=("run_id",),
        ),
        Table(
            "steps",
            (
                ("run_id", "VARCHAR"),
                ("seq", "INTEGER"),
                ("step_id", "VARCHAR"),
                ("kind", "VARCHAR"),
                ("started", "TIMESTAMP"),
                ("ended", "TIMESTAMP"),
                ("label", "VARCHAR"),
                ("tool", "VARCHAR"),
                ("result", "JSON"),
                ("next_step", "VARCHAR"),
                ("state", "JSON"),
            ),
            key=("run_id", "seq"),
        ),
        Table(
            "llm_requests",
            (
                ("request_id", "VARCHAR"),
                ("run_id", "VARCHAR"),
                ("agent", "VARCHAR"),
                ("step_id", "VARCHAR"),
                ("step_seq", "INTEGER"),
                ("kind", "VARCHAR"),
                ("scheduler", "VARCHAR"),
                ("prompt", "VARCHAR"),
                ("response", "VARCHAR"),
                ("prompt_tokens", "INTEGER"),
                ("output_tokens", "INTEGER"),
                ("evaluated_tokens", "INTEGER"),
                ("progress_dropped", "INTEGER"),
                ("label_scores", "JSON"),
                ("created", "TIMESTAMP"),
                ("first_start", "TIMESTAMP"),
                ("ended", "TIMESTAMP"),
                ("waiting_s", "DOUBLE"),
                ("turnaround_s", "DOUBLE"),
                ("service_s", "DOUBLE"),
                ("slices", "INTEGER"),
                ("preemptions", "INTEGER"),
                ("restores", "INTEGER"),
                ("error", "VARCHAR"),
            ),
        ),
        Table(
            "llm_slices",
            (
                ("request_id", "VARCHAR"),
                ("run_id", "VARCHAR"),
                ("idx", "INTEGER"),
                ("started", "TIMESTAMP"),
                ("ended", "TIMESTAMP"),
                ("started_s", "DOUBLE"),
                ("tokens", "INTEGER"),
                ("evaluated", "INTEGER"),
                ("restored", "BOOLEAN"),
                ("preempted", "BOOLEAN"),
            ),
        ),
        Table(
            "tool_calls",
            (
                ("call_id", "VARCHAR"),
                ("run_id", "VARCHAR"),
                ("step_id", "VARCHAR"),
                ("step_seq", "INTEGER"),
                ("tool", "VARCHAR"),
                ("args", "JSON"),
                ("result", "JSON"),
                ("ok", "BOOLEAN"),
                ("error", "VARCHAR"),
                ("started", "TIMESTAMP"),
                ("duration_s", "DOUBLE"),
            ),
        ),
        Table(
            "errors",
            (
                ("run_id", "VARCHAR"),
                ("step_id", "VARCHAR"),
                ("step_seq", "INTEGER"),
                ("code", "VARCHAR"),
                ("message", "VARCHAR"),
                ("occurred", "TIMESTAMP"),
            ),
        ),
    )
}


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def connect(path: Path, read_only: bool = False) -> Any:
    """A DuckDB connection with the tables created (unless read-only)."""
    import duckdb

    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        message = str(exc).splitlines()[0]
        if "lock" in message.lower():
            raise StorageError(
                f"{path}: the database is in use by another flowengine process; "
                "wait for it to finish or pass --db with another file"
            ) from None
        raise StorageError(f"{path}: cannot open the database ({message})") from None
    except duckdb.Error as exc:
        raise StorageError(
            f"{path}: not a DuckDB database ({str(exc).splitlines()[0]}); pass --db with "
            "another file"
        ) from None
    if not read_only:
        for table in TABLES.values():
            connection.execute(table.create_sql())
    return connection


class Storage:
    """Long-term storage with a single batching writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = connect(path)
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._read_lock = threading.Lock()
        self.rows_written = 0
        self.write_seconds = 0.0
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="storage", daemon=True)
        self._writer.start()

    def insert(self, table: str, row: Sequence[Any]) -> None:
        """Queue one row; columns in the table's order."""
        self._queue.put(("row", table, tuple(row)))

    def upsert(self, table: str, row: Sequence[Any]) -> None:
        """Queue one row that replaces the row with the same key."""
        self._queue.put(("upsert", table, tuple(row)))

    def commit(self) -> None:
        """Return once everything queued so far is written and committed."""
        done = threading.Event()
        self._queue.put(("commit", done, None))
        while not done.wait(0.5):
            if not self._writer.is_alive():
                break
        if self._failure is not None:
            raise StorageError(f"{self.path}: writing failed: {self._failure}")

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read committed rows (after committing what is queued)."""
        self.commit()
        with self._read_lock:
            cursor = self._connection.cursor()
            try:
                return list(cursor.execute(sql, list(parameters)).fetchall())
            finally:
                cursor.close()

    def close(self) -> None:
        """Write everything queued, then close the database."""
        self._queue.put(("stop", None, None))
        self._writer.join()
        self._connection.close()

    def _write_loop(self) -> None:
        pending: dict[tuple[str, bool], list[tuple[Any, ...]]] = {}
        count = 0
        deadline = time.monotonic() + FLUSH_SECONDS
        while True:
            try:
                kind, target, row = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                kind, target, row = "tick", None, None
            if kind in ("row", "upsert"):
                pending.setdefault((target, kind == "upsert"), []).append(row)
                count += 1
                if count < FLUSH_ROWS:
                    continue
            if pending:
                self._flush(pending)
                pending, count = {}, 0
            deadline = time.monotonic() + FLUSH_SECONDS
            if kind == "commit":
                target.set()
            elif kind == "stop":
                return

    def _flush(self, pending: dict[tuple[str, bool], list[tuple[Any, ...]]]) -> None:
        started = time.perf_counter()
        connection = self._connection
        try:
            connection.execute("BEGIN TRANSACTION")
            for (name, replace), rows in pending.items():
                table = TABLES[name]
                if replace:
                    # Later rows for the same key win; INSERT OR REPLACE wants one each.
                    by_key = {
                        tuple(row[table_index(table, k)] for k in table.key): row for row in rows
                    }
                    rows = list(by_key.values())
                if len(rows) == 1:
                    connection.execute(table.insert_sql(replace, one_row=True), list(rows[0]))
                else:
                    columns = [list(column) for column in zip(*rows, strict=True)]
                    connection.execute(table.insert_sql(replace), columns)
            connection.execute("COMMIT")
        except Exception as exc:  # a failed batch must not stop the writer
            connection.execute("ROLLBACK")
            self._failure = exc
            return
        self.rows_written += sum(len(rows) for rows in pending.values())
        self.write_seconds += time.perf_counter() - started


def table_index(table: Table, column: str) -> int:
    return [name for name, _ in table.columns].index(column)
