"""Reading what storage kept: runs, a run's steps and requests, scheduler statistics.

Readers open files here (``open_reading``), so every reader sees the current schema
whatever the file's version; a file a live writer holds is read through a copy
(``copy_live``), with the rows its journal holds."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.checkpoints import fold
from flowengine.storage.journal import has_journal, journal_path
from flowengine.storage.tables import META_TABLE, STEP_SEQ_TABLES, STEP_SEQ_VERSION, TABLES
from flowengine.storage.writer import connect

# A running run's row is written at its start and end only; its steps are counted live.
_STEP_COUNT = (
    "CASE WHEN status = 'running' THEN (SELECT count(*) FROM steps s "
    "WHERE s.run_id = r.run_id) ELSE steps END AS steps"
)


def open_reading(paths: Sequence[Path]) -> Any:
    """An in-memory DuckDB that reads these files as the current schema does.

    Each file is checked (and a journal a crash left is replayed), then attached
    read-only; every table is a temporary view over the union of the files' tables. A
    file from before schema version 7 counted ``step_seq`` one less than its step's
    ``seq``; its view adds that one, so every reader joins ``step_seq = seq``."""
    import duckdb

    for each in paths:
        if not each.exists():
            raise StorageError(f"{each}: no database yet; `flowengine run` creates it")
        connect(each, read_only=True).close()  # a clear error for a file we cannot read
    connection = duckdb.connect(":memory:")
    try:
        for index, each in enumerate(paths):
            quoted = str(each).replace("'", "''")
            connection.execute(f"ATTACH '{quoted}' AS db{index} (READ_ONLY)")
        present = set(
            connection.execute("SELECT database_name, table_name FROM duckdb_tables()").fetchall()
        )
        old = {
            i
            for i in range(len(paths))
            if _version(connection, f"db{i}", present) < STEP_SEQ_VERSION
        }
        for table in TABLES:
            # A file from an older release may lack a table (batch_ticks came in 6).
            holding = [i for i in range(len(paths)) if (f"db{i}", table) in present]
            if holding:
                union = " UNION ALL BY NAME ".join(
                    _select(table, f"db{index}", index in old) for index in holding
                )
                connection.execute(f"CREATE TEMP VIEW {table} AS {union}")
    except duckdb.Error as exc:
        connection.close()
        raise StorageError(
            f"cannot read {', '.join(map(str, paths))}: {str(exc).splitlines()[0]}"
        ) from None
    return connection


def wal_path(db: Path) -> Path:
    """DuckDB's own write-ahead log, beside the file."""
    return db.with_name(db.name + ".wal")


def signature(db: Path) -> str:
    """The sizes and times of the file, its write-ahead log and its journal: they change
    on every commit. Reading them takes no lock, so a writer is never kept out."""
    parts: list[str] = []
    for path in (db, wal_path(db), journal_path(db)):
        try:
            stat = path.stat()
            parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
        except OSError:
            parts.append("-")
    return "/".join(parts)


def copy_live(db: Path, copy: Path) -> None:
    """Copy a file a live writer holds to ``copy``, ready to read with ``open_reading``.

    DuckDB lets no other process open a file a writer holds, not even to read. The
    journal is copied first (rows acknowledged but not yet in DuckDB; groups that reach
    DuckDB while the file is copied are in both copies, and replaying skips them), then
    the file and its log; the journal is replayed into the copy and the copy
    checkpointed once, so that each read opens it quickly. Raises StorageError when the
    writer changed the file mid-copy (try again)."""
    import duckdb

    try:
        if journal_path(db).exists():
            shutil.copyfile(journal_path(db), journal_path(copy))
        shutil.copyfile(db, copy)
        if wal_path(db).exists():
            shutil.copyfile(wal_path(db), wal_path(copy))
        if has_journal(copy):
            connect(copy).close()
        with duckdb.connect(str(copy)) as connection:
            connection.execute("SELECT count(*) FROM runs").fetchone()
            connection.execute("CHECKPOINT")
    except (OSError, duckdb.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise StorageError(first) from None


def _version(connection: Any, database: str, present: set[tuple[str, str]]) -> int:
    """An attached file's schema version (1 before versions were recorded)."""
    if (database, META_TABLE) not in present:
        return 1
    found = connection.execute(
        f"SELECT max(schema_version) FROM {database}.{META_TABLE}"
    ).fetchone()
    return int(found[0]) if found and found[0] is not None else 1


def _select(table: str, database: str, old_step_seq: bool) -> str:
    """One file's rows of ``table``, with ``step_seq`` as ``steps.seq`` (version 7)."""
    if old_step_seq and table in STEP_SEQ_TABLES:
        return f"SELECT * REPLACE (step_seq + 1 AS step_seq) FROM {database}.{table}"
    return f"SELECT * FROM {database}.{table}"


class Records:
    """Database files opened read-only once, for the several queries a command makes.

    Several files (one per flowengine process, say) are read together: each is attached
    to an in-memory DuckDB and every table is a view over the union of theirs
    (``open_reading``)."""

    def __init__(self, path: Path | Sequence[Path]) -> None:
        self._connection = open_reading([path] if isinstance(path, Path) else list(path))

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *_: object) -> None:
        self._connection.close()

    def _has_column(self, table: str, column: str) -> bool:
        found = self._connection.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? "
            "AND column_name = ?",
            [table, column],
        ).fetchone()
        return bool(found and found[0])

    def _rows(self, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
        cursor = self._connection.execute(sql, parameters or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        # Files from before schema version 4 have no questions (no run could wait).
        question = "question" if self._has_column("runs", "question") else "NULL AS question"
        return self._rows(
            f"SELECT run_id, agent, status, {_STEP_COUNT}, scheduler, backend, created, "
            f"updated, error, {question} FROM runs r ORDER BY created DESC LIMIT ?",
            [limit],
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        found = self._rows(
            f"SELECT * EXCLUDE (agent_source, steps), {_STEP_COUNT} FROM runs r WHERE run_id = ?",
            [run_id],
        )
        return found[0] if found else None

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT seq, step_id, kind, label, tool, result, next_step, started, ended "
            "FROM steps WHERE run_id = ? ORDER BY seq",
            [run_id],
        )

    def memory_after(self, run_id: str, seq: int) -> dict[str, Any]:
        """The run's memory after step ``seq``: the fold of its steps up to that one
        (``storage/checkpoints.py``), whether they stored changes or whole memories."""
        cursor = self._connection.execute(
            "SELECT step_id, result, state FROM steps WHERE run_id = ? AND seq <= ? ORDER BY seq",
            [run_id, seq],
        )
        return fold(cursor.fetchall())

    def requests(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT request_id, step_id, step_seq, kind, prompt_tokens, output_tokens, "
            "progress_dropped, label_scores, waiting_s, turnaround_s, service_s, slices, "
            "preemptions, restores, response, error FROM llm_requests WHERE run_id = ? "
            "ORDER BY created",
            [run_id],
        )

    def tool_calls(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT step_id, step_seq, tool, args, ok, error, duration_s FROM tool_calls "
            "WHERE run_id = ? ORDER BY started",
            [run_id],
        )

    def errors(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT step_id, step_seq, code, message FROM errors WHERE run_id = ? "
            "ORDER BY occurred",
            [run_id],
        )

    def stats(self) -> list[dict[str, Any]]:
        """Waiting and turnaround of LLM requests, per agent and scheduler, the share of
        prompt tokens the runs' KV caches already held, and (llama-cpp) how many requests
        shared each decode the agent's requests were in."""
        # Files written before schema version 3 have no reuse figures; they read as none.
        reused = "reused_tokens" if self._has_column("llm_requests", "reused_tokens") else "0"
        batched = self._has_column("batch_ticks", "request_ids")
        ticks = (
            "WITH ticks AS (SELECT unnest(from_json(request_ids, '[\"VARCHAR\"]')) AS "
            "request_id, sequences FROM batch_ticks), batch AS (SELECT request_id, "
            "avg(sequences) AS mean_batch FROM ticks GROUP BY request_id) "
            if batched
            else ""
        )
        return self._rows(
            f"{ticks}SELECT agent, scheduler, count(*) AS requests, "
            "count(DISTINCT run_id) AS runs, "
            "round(avg(waiting_s), 3) AS mean_waiting_s, "
            "round(avg(turnaround_s), 3) AS mean_turnaround_s, "
            "round(max(turnaround_s), 3) AS max_turnaround_s, "
            "sum(slices) AS slices, sum(preemptions) AS preemptions, sum(restores) AS restores, "
            "sum(prompt_tokens) AS prompt_tokens, sum(evaluated_tokens) AS evaluated_tokens, "
            f"round(sum({reused}) / nullif(sum(prompt_tokens), 0), 3) AS reused_share, "
            "sum(output_tokens) AS output_tokens, "
            "round(sum(output_tokens) / nullif(sum(service_s), 0), 1) AS tokens_per_s, "
            f"{'round(avg(mean_batch), 2)' if batched else 'NULL'} AS mean_batch "
            f"FROM llm_requests {'LEFT JOIN batch USING (request_id) ' if batched else ''}"
            "GROUP BY agent, scheduler ORDER BY agent, scheduler",
        )
