"""The storage manager: every run, step, LLM request, slice, tool call and error in DuckDB.

Runtime and kernel hand it row dataclasses (``storage/rows.py``) through one ``record_*``
method per table. ``commit`` returns once everything queued before it is durable: the
runtime commits each finished step, so a step it reports is never lost. One writer thread
makes rows durable, with group commit: the rows of all the steps that finish while one
group is being written go into the next group together, each commit acknowledged once
that group is durable. A group is made durable by one append and sync to the journal
(``storage/journal.py``). A second thread, the loader, moves journaled rows into DuckDB
in large batches (one transaction a batch, through DuckDB's ``unnest`` of column lists; a
lone row goes as plain ``VALUES``), so commits go on being acknowledged while a batch is
inserted; ``query`` and ``close`` wait until DuckDB holds everything. Opening a database
after a crash replays its journal.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.journal import Journal, JournalRow, has_journal, read_groups
from flowengine.storage.rows import (
    ErrorRow,
    LLMRequestRow,
    Row,
    RunRow,
    SliceRow,
    StepRow,
    TestCaseRow,
    TickRow,
    ToolCallRow,
)
from flowengine.storage.tables import (
    JOURNAL_TABLE,
    TABLES,
    check_readable,
    prepare,
    row_values,
)

FLUSH_ROWS = 2000
"""Journaled rows that make the writer move them into DuckDB at once."""
FLUSH_SECONDS = 0.25
"""How long a journaled row waits at most before it is moved into DuckDB."""
JOURNAL_LIMIT = 64 << 20
"""Journal bytes after which the writer waits for DuckDB to hold them all and empties it
(it empties it sooner whenever DuckDB has caught up)."""

Pending = dict[tuple[str, bool], list[tuple[Any, ...]]]
"""Rows on their way into DuckDB, by table and whether they replace by key."""


class FileLocked(StorageError):
    """The file is held by a live writer (another flowengine process)."""


def connect(path: Path, read_only: bool = False) -> Any:
    """A DuckDB connection to a flowengine database: for writing, created or migrated to
    the current schema, and holding every row its journal kept; for reading, checked to
    be one this version can read (a journal left by a crash is replayed first)."""
    import duckdb

    if read_only and has_journal(path):
        # Rows acknowledged before a crash: put them where readers look. While a writer
        # is alive this fails on its lock, as opening the file to read would.
        connect(path).close()
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        message = str(exc).splitlines()[0]
        if "lock" in message.lower():
            raise FileLocked(
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
            replay_journal(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def applied_group(connection: Any) -> int:
    """The number of the last journal group the database holds."""
    found = connection.execute(f"SELECT max(applied) FROM {JOURNAL_TABLE}").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def replay_journal(connection: Any, path: Path) -> int:
    """Move the groups the journal holds and the database does not into it, in one
    transaction, then empty the journal; returns the last group's number."""
    applied = applied_group(connection)
    groups = read_groups(path)
    pending: Pending = {}
    for number, rows in groups:
        if number > applied:
            for table, replace, values in rows:
                pending.setdefault((table, replace), []).append(values)
    last = max([applied, *(number for number, _ in groups)])
    if pending:
        try:
            write_batch(connection, pending, last)
        except Exception as exc:
            raise StorageError(
                f"{path}: its journal ({path.name}.journal) could not be replayed "
                f"({str(exc).splitlines()[0]}); move that file away to open the database "
                "without the rows it holds"
            ) from None
    if groups:
        Journal(path, last).close(remove=True)
    return last


def write_batch(connection: Any, pending: Pending, applied: int | None) -> None:
    """Insert rows in one transaction (with the journal mark, when given); rolls back
    and raises if any statement fails."""
    connection.execute("BEGIN TRANSACTION")
    try:
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
        if applied is not None:
            connection.execute(f"UPDATE {JOURNAL_TABLE} SET applied = $1", [applied])
        connection.execute("COMMIT")
    except Exception:
        connection.execute("ROLLBACK")
        raise


class Storage:
    """Long-term storage with a single writer thread, a journal, and group commit."""

    group_commit = True
    """Make the steps that finish during a durable write durable together in the next one
    (off only to measure what grouping gains: bench/durable.py)."""
    journal = True
    """Make rows durable in the journal and move them into DuckDB in batches; off, each
    commit is a DuckDB transaction (only to measure what the journal gains)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = connect(path)
        self._journal = Journal(path, applied_group(self._connection)) if self.journal else None
        # Rows are appended without waking the writer (a deque's append is atomic); only
        # commits, reads and the end wake it. Waking it for every row cost a thread
        # switch each, a good part of a step's time with many runs.
        self._queue: deque[tuple[str, Any, Any]] = deque()
        # Signals are plain locks, released by the other side: the cheapest way for one
        # thread to wake another in CPython (an Event is a Condition written in Python,
        # which cost tens of microseconds a step with 32 runs). ``_wake`` is released
        # (set) when there is work for the writer.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._read_lock = threading.Lock()
        self.rows_written = 0
        self.write_seconds = 0.0
        """Seconds the writer spent writing (the journal, or DuckDB without it)."""
        self.load_seconds = 0.0
        """Seconds spent moving journaled rows into DuckDB, beside the writer."""
        self.transactions = 0
        """Durable writes: journal groups, or DuckDB transactions without the journal."""
        self.batches = 0
        """DuckDB transactions."""
        self._failure: BaseException | None = None
        # With the journal, a second thread moves rows into DuckDB, so that commits are
        # acknowledged while a batch (tens of milliseconds) is being inserted.
        self._batches: queue.Queue[tuple[Pending, int | None] | None] = queue.Queue()
        self._loaded = self._journal.last_group if self._journal else 0
        """The last journal group DuckDB holds (set by the loader)."""
        self._loader = threading.Thread(target=self._load_loop, name="storage-load", daemon=True)
        self._loader.start()
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

    def record_test_case(self, row: TestCaseRow) -> None:
        self._put(row)

    def _put(self, row: Row, replace: bool = False) -> None:
        # JSON fields are serialized here, on the caller's thread, so that a value the
        # caller changes afterwards (a run's memory, a request's scores) is stored as it
        # was when recorded.
        self._queue.append(("upsert" if replace else "row", row.TABLE, row_values(row)))

    def commit(self) -> None:
        """Return once everything queued so far is durable."""
        self._wait("commit")

    def _wait(self, kind: str) -> None:
        done = threading.Lock()  # released by the writer once the work is done
        done.acquire()
        self._queue.append((kind, done, None))
        self._signal()
        while not done.acquire(timeout=0.5):
            if not self._writer.is_alive():
                break
        if self._failure is not None:
            raise StorageError(f"{self.path}: writing failed: {self._failure}")

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read committed rows (after moving everything queued into DuckDB)."""
        self._wait("sync")
        with self._read_lock:
            cursor = self._connection.cursor()
            try:
                return list(cursor.execute(sql, list(parameters)).fetchall())
            finally:
                cursor.close()

    def close(self) -> None:
        """Write everything queued into DuckDB, then close the database."""
        self._queue.append(("stop", None, None))
        self._signal()
        self._writer.join()
        self._batches.put(None)
        self._loader.join()
        if self._journal is not None:
            # Kept only if DuckDB did not take its rows: the next open replays them.
            self._journal.close(remove=self._failure is None)
        self._connection.close()

    def _signal(self) -> None:
        """Wake the writer (if it is already to wake, nothing changes)."""
        with contextlib.suppress(RuntimeError):
            self._wake.release()

    def _write_loop(self) -> None:
        pending: Pending = {}  # rows not in DuckDB yet
        unjournaled: list[JournalRow] = []  # rows not durable yet
        count = 0
        deadline: float | None = None  # when the oldest pending row must be in DuckDB
        while True:
            # Rows arrive unannounced: an idle writer still looks every FLUSH_SECONDS.
            timeout = FLUSH_SECONDS if deadline is None else deadline - time.monotonic()
            if not self._queue:
                self._wake.acquire(timeout=max(0.0, timeout))
            else:
                self._wake.acquire(blocking=False)  # what is queued is taken now
            try:
                item = self._queue.popleft()
            except IndexError:  # a wake for work already taken, or the time to move rows
                if deadline is None or time.monotonic() < deadline:
                    continue
                item = ("tick", None, None)
            waiting: list[threading.Lock] = []
            to_duckdb = stop = committing = syncing = False
            while True:
                kind, target, row = item
                if kind in ("row", "upsert"):
                    key = (target, kind == "upsert")
                    pending.setdefault(key, []).append(row)
                    unjournaled.append((target, kind == "upsert", row))
                    count += 1
                    to_duckdb = to_duckdb or count >= FLUSH_ROWS
                elif kind == "commit":
                    waiting.append(target)
                    committing = True
                elif kind == "sync":
                    waiting.append(target)
                    syncing = to_duckdb = True
                elif kind == "stop":
                    stop = to_duckdb = True
                else:  # the oldest pending row has waited long enough
                    to_duckdb = True
                # Group commit: whatever else is queued by now (the rows and commits of
                # steps that finished while the last group was being written) goes into
                # this group, and every commit waiting in it is acknowledged after it.
                if stop or (not self.group_commit and (waiting or to_duckdb)):
                    break
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
            if count and deadline is None:
                deadline = time.monotonic() + FLUSH_SECONDS
            elif deadline is not None and time.monotonic() >= deadline:
                to_duckdb = True  # commits kept the writer too busy for a tick
            if not (waiting or to_duckdb):
                continue  # rows only: they wait for a commit, or their deadline
            started = time.perf_counter()
            journal = self._journal
            if journal is None:
                if pending and (to_duckdb or waiting):
                    self._write_duckdb(pending, None)
                pending, unjournaled, count, deadline = {}, [], 0, None
            else:
                if unjournaled and committing:
                    self._write_journal(unjournaled)
                    unjournaled = []
                full = journal.size > JOURNAL_LIMIT
                if to_duckdb or full:
                    if pending:
                        self._batches.put((pending, journal.last_group))
                    pending, unjournaled, count, deadline = {}, [], 0, None
                if syncing or stop or full:
                    self._batches.join()  # DuckDB holds everything journaled so far
                self._empty_journal_if_loaded()
            self.write_seconds += time.perf_counter() - started
            for done in waiting:
                done.release()
            if stop:
                return

    def _write_journal(self, rows: list[JournalRow]) -> None:
        assert self._journal is not None
        try:
            self._journal.append(rows)
        except OSError as exc:
            self._failure = exc
            return
        self.transactions += 1

    def _empty_journal_if_loaded(self) -> None:
        """Empty the journal once DuckDB holds every group in it (the writer alone
        appends, so none can arrive meanwhile)."""
        journal = self._journal
        if journal is None or self._loaded != journal.last_group or not journal.size:
            return
        try:
            journal.clear()
        except OSError as exc:
            self._failure = exc

    def _load_loop(self) -> None:
        while (batch := self._batches.get()) is not None:
            try:
                self._write_duckdb(*batch)
            finally:
                self._batches.task_done()

    def _write_duckdb(self, pending: Pending, applied: int | None) -> None:
        """Move rows into DuckDB in one transaction, with the journal's mark."""
        started = time.perf_counter()
        try:
            write_batch(self._connection, pending, applied)
        except Exception as exc:  # a failed batch must not stop the writer
            self._failure = exc
            return
        if applied is not None:
            self._loaded = applied
            self.load_seconds += time.perf_counter() - started
        else:
            self.transactions += 1
        self.batches += 1
        self.rows_written += sum(len(rows) for rows in pending.values())
