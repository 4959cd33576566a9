"""Reading what storage kept: runs, a run's steps and requests, scheduler statistics.

Readers open files here (``open_reading``), so every reader sees the current schema
whatever the file's version; a file a live writer holds is read through a copy
(``copy_live``), with the rows its journal holds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.checkpoints import fold
from flowengine.storage.journal import has_journal, journal_path
from flowengine.storage.tables import META_TABLE, STEP_SEQ_TABLES, STEP_SEQ_VERSION, TABLES
from flowengine.storage.writer import connect

STATUS_ORDER = ("completed", "failed", "max_steps", "max_visits", "interrupted", "waiting")
"""How ``stats`` orders the statuses it counts; any other found comes after these."""
UNENDED = ("running", "waiting")
"""Statuses of runs that have not ended: the success rate leaves them out."""

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

    def latest_run_id(self) -> str | None:
        """The newest run's id (``logs latest``), None in an empty file."""
        found = self._connection.execute(
            "SELECT run_id FROM runs ORDER BY created DESC LIMIT 1"
        ).fetchone()
        return str(found[0]) if found else None

    def step(self, run_id: str, seq: int) -> dict[str, Any] | None:
        """Everything one step did: its row, the LLM requests it made (prompt and reply in
        full), its tool calls (arguments and results) and its errors."""
        found = self._rows(
            "SELECT seq, step_id, kind, label, tool, result, next_step, started, ended, "
            "epoch(ended) - epoch(started) AS duration_s FROM steps "
            "WHERE run_id = ? AND seq = ?",
            [run_id, seq],
        )
        if not found:
            return None
        step = found[0]
        step["llm_requests"] = self._rows(
            "SELECT request_id, kind, prompt, response, prompt_tokens, output_tokens, "
            "label_scores, turnaround_s, error FROM llm_requests "
            "WHERE run_id = ? AND step_seq = ? ORDER BY created",
            [run_id, seq],
        )
        step["tool_calls"] = self._rows(
            "SELECT tool, args, result, ok, error, duration_s FROM tool_calls "
            "WHERE run_id = ? AND step_seq = ? ORDER BY started",
            [run_id, seq],
        )
        step["errors"] = self._rows(
            "SELECT code, message FROM errors WHERE run_id = ? AND step_seq = ? ORDER BY occurred",
            [run_id, seq],
        )
        return step

    def agent_text(self, run_id: str) -> str | None:
        """The agent file's text as the run read it."""
        found = self._connection.execute(
            "SELECT agent_source FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        return str(found[0]) if found and found[0] is not None else None

    def run_summary(self) -> dict[str, list[dict[str, Any]]]:
        """Per agent, and over all agents (``agent`` is ``(all)``): runs by status and the
        success rate (completed among the runs that ended: not running, not waiting),
        p50/p95 step latency by step kind, tokens per run, and tool errors."""
        counted = self._rows("SELECT agent, status, count(*) AS n FROM runs GROUP BY agent, status")
        runs = [_status_row(agent, counted) for agent in sorted({r["agent"] for r in counted})]
        if runs:
            runs.append(_status_row(None, counted))
        latency = self._rows(
            "SELECT coalesce(r.agent, '(all)') AS agent, s.kind, count(*) AS steps, "
            "round(quantile_cont(epoch(s.ended) - epoch(s.started), 0.5), 3) AS p50_s, "
            "round(quantile_cont(epoch(s.ended) - epoch(s.started), 0.95), 3) AS p95_s "
            "FROM steps s JOIN runs r USING (run_id) "
            "GROUP BY GROUPING SETS ((r.agent, s.kind), (s.kind)) "
            "ORDER BY r.agent IS NULL, r.agent, s.kind"
        )
        reused = "reused_tokens" if self._has_column("llm_requests", "reused_tokens") else "0"
        tokens = self._rows(
            "WITH per_run AS (SELECT agent, run_id, sum(prompt_tokens) AS prompt, "
            f"sum({reused}) AS reused, sum(output_tokens) AS generated "
            "FROM llm_requests GROUP BY agent, run_id) "
            "SELECT coalesce(agent, '(all)') AS agent, count(*) AS runs, "
            "round(avg(prompt), 1) AS prompt_per_run, round(avg(reused), 1) AS reused_per_run, "
            "round(avg(generated), 1) AS generated_per_run, sum(prompt) AS prompt, "
            "sum(reused) AS reused, sum(generated) AS generated "
            "FROM per_run GROUP BY ROLLUP (agent) ORDER BY agent IS NULL, agent"
        )
        tool_errors = self._rows(
            "SELECT r.agent, t.tool, count(*) AS calls, count(*) FILTER (WHERE NOT t.ok) "
            "AS errors, round(count(*) FILTER (WHERE NOT t.ok) / count(*), 3) AS error_rate "
            "FROM tool_calls t JOIN runs r USING (run_id) GROUP BY r.agent, t.tool "
            "ORDER BY r.agent, t.tool"
        )
        for table in (latency, tokens):
            for row in table:
                row["agent"] = str(row["agent"])
        return {"runs": runs, "step_latency": latency, "tokens": tokens, "tool_errors": tool_errors}

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


def _status_row(agent: str | None, counted: list[dict[str, Any]]) -> dict[str, Any]:
    """One agent's runs by status (every agent's for None), in ``STATUS_ORDER``, and the
    share of its ended runs that completed."""
    mine = [row for row in counted if agent is None or row["agent"] == agent]
    by_status: dict[str, int] = {}
    for row in mine:
        by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
    order = [s for s in STATUS_ORDER if s in by_status] + sorted(
        s for s in by_status if s not in STATUS_ORDER
    )
    ended = sum(n for status, n in by_status.items() if status not in UNENDED)
    return {
        "agent": "(all)" if agent is None else agent,
        "runs": sum(by_status.values()),
        "by_status": {status: by_status[status] for status in order},
        "success_rate": round(by_status.get("completed", 0) / ended, 3) if ended else None,
    }


def parse_json(text: Any) -> Any:
    """A JSON column's value (DuckDB hands JSON back as text); text that is not JSON is
    given back as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
