"""The storage manager: every run, step, LLM request, slice, tool call and error in DuckDB.

Runtime and kernel hand it row dataclasses (``storage/rows.py``) through one ``record_*``
method per table. One writer thread owns the connection. Rows are queued and written in
batches, one transaction a batch, through DuckDB's ``unnest`` of column lists (tens of
thousands of rows a second without pandas or Arrow; a lone row goes as plain ``VALUES``).
``commit`` waits until everything queued before it is durable: the runtime commits each
finished step, so a step it reports is never lost, and a crash leaves only whole batches
behind. Commits are grouped: the steps that finish while a transaction is being written go
into the next one together, each acknowledged once that one is durable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.rows import (
    ErrorRow,
    LLMRequestRow,
    Row,
    RunRow,
    SliceRow,
    StepRow,
    TickRow,
    ToolCallRow,
)
from flowengine.storage.schema import TABLES, check_readable, prepare, row_values

FLUSH_ROWS = 2000
FLUSH_SECONDS = 0.25


def connect(path: Path, read_only: bool = False) -> Any:
    """A DuckDB connection to a flowengine database: for writing, created or migrated to
    the current schema; for reading, checked to be one this version can read."""
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
    try:
        if read_only:
            check_readable(connection, path)
        else:
            prepare(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


class Storage:
    """Long-term storage with a single batching writer thread."""

    group_commit = True
    """Commit the steps that finish during a transaction together in the next one (off
    only to measure what grouping gains: bench/durable.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = connect(path)
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._read_lock = threading.Lock()
        self.rows_written = 0
        self.write_seconds = 0.0
        self.transactions = 0
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="storage", daemon=True)
        self._writer.start()

    def record_run(self, row: RunRow) -> None:
        """Queue a run's row; it replaces the row with the same run_id."""
        self._put(row, replace=True)

    def record_step(self, row: StepRow) -> None:
        """Queue a finished step (the run's checkpoint once committed)."""
        self._put(row)

    def record_request(self, row: LLMRequestRow) -> None:
        self._put(row)

    def record_slice(self, row: SliceRow) -> None:
        self._put(row)

    def record_tick(self, row: TickRow) -> None:
        self._put(row)

    def record_tool_call(self, row: ToolCallRow) -> None:
        self._put(row)

    def record_error(self, row: ErrorRow) -> None:
        self._put(row)

    def _put(self, row: Row, replace: bool = False) -> None:
        # JSON fields are serialized here, on the caller's thread, so that a value the
        # caller changes afterwards (a run's memory, a request's scores) is stored as it
        # was when recorded.
        self._queue.put(("upsert" if replace else "row", row.TABLE, row_values(row)))

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
            # Group commit: whatever else is queued by now (the rows and commits of steps
            # that finished while the last transaction was being written) goes into this
            # one transaction, and every commit waiting in it is acknowledged after it.
            waiting: list[threading.Event] = [target] if kind == "commit" else []
            stop = kind == "stop"
            while not stop and self.group_commit:
                try:
                    kind, target, row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if kind in ("row", "upsert"):
                    pending.setdefault((target, kind == "upsert"), []).append(row)
                elif kind == "commit":
                    waiting.append(target)
                elif kind == "stop":
                    stop = True
            if pending:
                self._flush(pending)
                self.transactions += 1
                pending, count = {}, 0
            deadline = time.monotonic() + FLUSH_SECONDS
            for done in waiting:
                done.set()
            if stop:
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
                    key = table.key_indexes()
                    by_key = {tuple(row[index] for index in key): row for row in rows}
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
