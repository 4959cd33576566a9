"""What the web pages read: DuckDB files opened read-only, or a fresh copy while a run writes.

DuckDB lets no other process open a file, not even read-only, while a writer has it open,
and a ``flowengine run`` keeps its file open until it ends. So when the file is locked,
the page reads a copy of it taken at that moment (``storage.reader.copy_live``: the file,
its write-ahead log and the journal), and says so. A copy is reused until the writer
changes the file. Files are opened through storage's reader (``open_reading``), never
here. All SQL of the UI is here, on top of :class:`~flowengine.storage.reader.Records`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.journal import journal_path
from flowengine.storage.reader import (
    Records,
    copy_live,
    open_reading,
    parse_json,
    signature,
    wal_path,
)
from flowengine.storage.writer import FileLocked

log = logging.getLogger("flowengine.ui")

RUNS_PER_PAGE = 50
STEPS_PER_PAGE = 100
REQUESTS_PER_PAGE = 60
SNAPSHOT_ATTEMPTS = 3
_EPOCH = "epoch_us({0}) / 1e6"
# Rows written while a step runs (LLM requests, tool calls, errors) carry in ``step_seq``
# the step's ``steps.seq`` (files from before schema version 7 are read as if they did:
# ``storage/reader.py``).


class DatabaseProblem(StorageError):
    """A database file the UI cannot read now: ``kind`` is missing, busy or corrupt."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters; empty fields filter nothing. Times are UTC."""

    agent: str = ""
    status: str = ""
    since: datetime | None = None
    until: datetime | None = None


class RunRecords(Records):
    """The reads of ``flowengine logs`` plus those of the pages, on one open connection."""

    def __init__(self, connection: Any) -> None:  # opened by Database, maybe on a copy
        self._connection = connection

    def rows(self, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
        return self._rows(sql, parameters)

    def value(self, sql: str, parameters: list[Any] | None = None) -> Any:
        found = self._connection.execute(sql, parameters or []).fetchone()
        return None if found is None else found[0]

    # -- the runs list ------------------------------------------------------------------

    def filtered_runs(self, where: RunFilter, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` runs that pass the filter, and how many pass it in all."""
        clauses: list[str] = ["true"]
        parameters: list[Any] = []
        for column, wanted in (("agent", where.agent), ("status", where.status)):
            if wanted:
                clauses.append(f"{column} = ?")
                parameters.append(wanted)
        if where.since is not None:
            clauses.append("created >= ?")
            parameters.append(where.since)
        if where.until is not None:
            clauses.append("created <= ?")
            parameters.append(where.until)
        condition = " AND ".join(clauses)
        total = self.value(f"SELECT count(*) FROM runs WHERE {condition}", parameters)
        rows = self._rows(
            "SELECT run_id, agent, status, scheduler, backend, created, updated, error, "
            "CASE WHEN status = 'running' THEN (SELECT count(*) FROM steps s "
            "WHERE s.run_id = r.run_id) ELSE steps END AS steps "
            f"FROM runs r WHERE {condition} ORDER BY created DESC LIMIT ?",
            [*parameters, limit],
        )
        return rows, int(total or 0)

    def choices(self) -> tuple[list[str], list[str]]:
        """The agents and statuses present, for the filter menus."""
        agents = [r["agent"] for r in self._rows("SELECT DISTINCT agent FROM runs ORDER BY 1")]
        statuses = [r["status"] for r in self._rows("SELECT DISTINCT status FROM runs ORDER BY 1")]
        return agents, statuses

    # -- one run --------------------------------------------------------------------------

    def agent_source(self, run_id: str) -> tuple[str, str] | None:
        found = self._rows("SELECT agent_file, agent_source FROM runs WHERE run_id = ?", [run_id])
        return (found[0]["agent_file"] or "", found[0]["agent_source"] or "") if found else None

    def progress(self, run_id: str) -> dict[str, Any] | None:
        """What changes while a run goes on: its status and its number of stored steps."""
        found = self._rows(
            "SELECT status, (SELECT count(*) FROM steps s WHERE s.run_id = r.run_id) AS steps "
            "FROM runs r WHERE run_id = ?",
            [run_id],
        )
        return found[0] if found else None

    def path(self, run_id: str) -> list[str]:
        cursor = self._connection.execute(
            "SELECT step_id FROM steps WHERE run_id = ? ORDER BY seq", [run_id]
        )
        return [step_id for (step_id,) in cursor.fetchall()]

    def steps_page(self, run_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        return self._rows(
            f"SELECT seq, step_id, kind, label, tool, next_step, {_EPOCH.format('started')} "
            f"AS started_s, {_EPOCH.format('ended')} AS ended_s, started, "
            "(SELECT count(*) FROM errors e WHERE e.run_id = s.run_id AND e.step_seq = s.seq) "
            "AS errors, state FROM steps s WHERE run_id = ? ORDER BY seq LIMIT ? OFFSET ?",
            [run_id, limit, offset],
        )

    def step(self, run_id: str, seq: int) -> dict[str, Any] | None:
        """One step with everything about it: its row, LLM requests, tool calls, errors."""
        found = self._rows(
            f"SELECT *, {_EPOCH.format('started')} AS started_s, "
            f"{_EPOCH.format('ended')} AS ended_s FROM steps WHERE run_id = ? AND seq = ?",
            [run_id, seq],
        )
        if not found:
            return None
        step = found[0]
        step["result"] = parse_json(step["result"])
        step["set_here"] = variables_set(step["state"])
        step["state"] = self.memory_after(run_id, seq)
        key = [run_id, step["step_id"], seq]
        step["requests"] = self._rows(
            "SELECT request_id, kind, prompt, response, prompt_tokens, output_tokens, "
            "evaluated_tokens, progress_dropped, label_scores, waiting_s, turnaround_s, "
            "service_s, slices, preemptions, restores, error FROM llm_requests "
            "WHERE run_id = ? AND step_id = ? AND step_seq = ? ORDER BY created",
            key,
        )
        for request in step["requests"]:
            request["label_scores"] = parse_json(request["label_scores"])
        step["tool_calls"] = self._rows(
            "SELECT tool, args, result, ok, error, duration_s FROM tool_calls "
            "WHERE run_id = ? AND step_id = ? AND step_seq = ? ORDER BY started",
            key,
        )
        for call in step["tool_calls"]:
            call["args"], call["result"] = parse_json(call["args"]), parse_json(call["result"])
        step["errors"] = self._rows(
            "SELECT code, message, occurred FROM errors WHERE run_id = ? AND step_id = ? "
            "AND step_seq = ? "
            "ORDER BY occurred",
            key,
        )
        return step

    def run_errors(self, run_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT step_id, step_seq AS seq, code, message FROM errors WHERE run_id = ? "
            "ORDER BY occurred LIMIT ?",
            [run_id, limit],
        )

    # -- the scheduler timeline -----------------------------------------------------------

    def window_runs(self, run_id: str | None) -> list[dict[str, Any]]:
        """The runs that overlap ``run_id`` in time (the newest run when None): one batch."""
        anchor = self._rows(
            "SELECT created, updated FROM runs "
            + ("WHERE run_id = ? " if run_id else "")
            + "ORDER BY created DESC LIMIT 1",
            [run_id] if run_id else [],
        )
        if not anchor:
            return []
        return self._rows(
            "SELECT run_id, agent, status, scheduler, created FROM runs "
            "WHERE created <= ? AND updated >= ? ORDER BY created",
            [anchor[0]["updated"], anchor[0]["created"]],
        )

    def window_requests(
        self, run_ids: list[str], offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """LLM requests of these runs in order of arrival, one page, and how many in all."""
        if not run_ids:
            return [], 0
        marks = ", ".join("?" * len(run_ids))
        total = self.value(
            f"SELECT count(*) FROM llm_requests WHERE run_id IN ({marks})", list(run_ids)
        )
        requests = self._rows(
            "SELECT request_id, run_id, agent, step_id, step_seq AS seq, kind, scheduler, "
            f"{_EPOCH.format('created')} AS created_s, {_EPOCH.format('first_start')} "
            f"AS first_start_s, {_EPOCH.format('ended')} AS ended_s, waiting_s, turnaround_s, "
            "slices, preemptions, restores, output_tokens, error FROM llm_requests "
            f"WHERE run_id IN ({marks}) ORDER BY created, request_id LIMIT ? OFFSET ?",
            [*run_ids, limit, offset],
        )
        if requests:
            ids = [r["request_id"] for r in requests]
            id_marks = ", ".join("?" * len(ids))
            by_request: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            for piece in self._rows(
                f"SELECT request_id, idx, started_s, {_EPOCH.format('ended')} AS ended_s, "
                "tokens, restored, preempted FROM llm_slices "
                f"WHERE request_id IN ({id_marks}) ORDER BY request_id, idx",
                ids,
            ):
                by_request[piece["request_id"]].append(piece)
            for request in requests:
                request["slices_list"] = by_request[request["request_id"]]
        return requests, int(total or 0)

    # -- agents' tests --------------------------------------------------------------------

    def test_cases(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest attempts of `flowengine test` cases (none in files before version 8)."""
        present = self.value(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'test_cases'"
        )
        if not present:
            return []
        rows = self._rows(
            "SELECT test_run_id, file, case_name, attempt, passed, failures, run_ids, backend, "
            "model, started, duration_s FROM test_cases ORDER BY started DESC LIMIT ?",
            [limit],
        )
        for row in rows:
            row["failures"] = parse_json(row["failures"]) or []
            row["run_ids"] = parse_json(row["run_ids"]) or []
        return rows

    # -- agents ---------------------------------------------------------------------------

    def agent_versions(self) -> list[dict[str, Any]]:
        """Each distinct agent source stored, with how many runs used it."""
        return self._rows(
            "SELECT agent, agent_file, agent_source, count(*) AS runs, max(created) AS last_run "
            "FROM runs GROUP BY agent, agent_file, agent_source ORDER BY agent, last_run DESC"
        )


class Database:
    """One DuckDB file given with ``--db``; each page opens it read-only for its queries."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self._lock = threading.Lock()
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._copy: tuple[str, Path, float] | None = None  # signature, file, time
        self._copies = 0
        self._state = ""  # the last problem or lock logged; "" when the file reads directly

    @contextmanager
    def open(self) -> Iterator[tuple[RunRecords, float | None]]:
        """The records, and the time of the copy they come from (None: the file itself)."""
        try:
            connection, copied_at = self._connect()
        except DatabaseProblem as problem:
            self._report(str(problem), logging.WARNING)
            raise
        if copied_at is None:
            self._report("", logging.INFO)
        else:
            self._report(
                f"{self.path} is locked by a running writer; pages read a copy of it, "
                "renewed when the file changes",
                logging.INFO,
            )
        try:
            yield RunRecords(connection), copied_at
        except StorageError:
            raise
        except Exception as exc:  # a file that opened but cannot be queried is damaged
            import duckdb

            if isinstance(exc, duckdb.Error):
                raise self._corrupt(exc) from None
            raise
        finally:
            connection.close()

    def _report(self, state: str, level: int) -> None:
        """Log how the file reads when that changes, not on every page or poll."""
        if state != self._state:
            if state:
                log.log(level, "%s", state)
            elif self._state:
                log.info("%s reads directly again", self.path)
            self._state = state

    def _connect(self) -> tuple[Any, float | None]:
        """A connection through storage's reader: to the file, or to a copy of it while
        a live writer holds it (a journal a crashed writer left is replayed first)."""
        if not self.path.exists():
            raise DatabaseProblem(
                "missing",
                f"{self.path}: no such database file; `flowengine run --db {self.path}` "
                "creates it, or pass --db with another file",
            )
        if self.path.is_dir():
            raise DatabaseProblem("corrupt", f"{self.path} is a folder; pass --db with a file")
        try:
            return open_reading([self.path]), None
        except FileLocked:
            return self._connect_copy()
        except StorageError as exc:
            raise self._corrupt(exc) from None

    def _corrupt(self, exc: Exception) -> DatabaseProblem:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DatabaseProblem(
            "corrupt",
            f"{self.path}: cannot be read as a flowengine database ({first}); "
            "pass --db with another file",
        )

    def signature(self) -> str:
        """What changes on every commit, read without opening the file (a poll must
        never keep a writer out)."""
        return signature(self.path)

    def _connect_copy(self) -> tuple[Any, float]:
        """A read-only connection to a copy taken while a writer holds the file."""
        with self._lock:  # connect before another page can replace (and delete) the copy
            current = self.signature()
            if self._copy is None or self._copy[0] != current:
                self._copy = (current, *self._take_copy())
            _, copy, copied_at = self._copy
            try:
                return open_reading([copy]), copied_at
            except StorageError as exc:
                raise self._corrupt(exc) from None

    def _take_copy(self) -> tuple[Path, float]:
        """Copy the file (``copy_live``), retrying when the writer changed it mid-copy."""
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="flowengine-ui-")
        folder = Path(self._folder.name)
        problem = ""
        for attempt in range(SNAPSHOT_ATTEMPTS):
            self._copies += 1
            copy = folder / f"copy{self._copies}.duckdb"  # a new name: DuckDB caches by path
            copied_at = time.time()
            try:
                copy_live(self.path, copy)
            except StorageError as exc:
                problem = str(exc)
                log.warning("copy %d of locked %s failed: %s", attempt + 1, self.path, problem)
                time.sleep(0.2 * (attempt + 1))
                continue
            for old in folder.glob("copy*.duckdb*"):
                if old.name not in (copy.name, wal_path(copy).name, journal_path(copy).name):
                    old.unlink(missing_ok=True)  # pages still reading it keep their handle
            return copy, copied_at
        raise DatabaseProblem(
            "busy",
            f"{self.path} is held by a running flowengine process and {SNAPSHOT_ATTEMPTS} "
            f"copies of it failed ({problem}); the page tries again shortly",
        )

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def variables_set(state: Any) -> list[str]:
    """The variables a step row says the step set (save_as and set, through reducers);
    none for rows written before steps stored their changes."""
    found = parse_json(state)
    changed = found.get("set") if isinstance(found, dict) else None
    return list(changed) if isinstance(changed, dict) else []
