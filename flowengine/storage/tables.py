"""The DuckDB schema, derived from the row dataclasses; its version, and migrations to it.

A file's version is in ``flowengine_meta``. Files written before versions existed have no
such table and are version 1. Opening a file for writing brings it to ``SCHEMA_VERSION``
by running the migrations after its version, in one transaction; opening it to read
changes nothing (every version's tables answer the queries in ``reader.py``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowengine.errors import StorageError
from flowengine.storage.rows import ROW_TYPES, Row, SqlType

SCHEMA_VERSION = 8
META_TABLE = "flowengine_meta"
JOURNAL_TABLE = "flowengine_journal"
"""The number of the last journal group DuckDB holds (``storage/journal.py``)."""
_JOURNAL_SQL = f"CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (applied BIGINT)"

STEP_SEQ_VERSION = 7
"""From this version on, ``step_seq`` is the ``steps.seq`` of the step a row was written in;
before it, one less (the steps finished before that step)."""
STEP_SEQ_TABLES = ("llm_requests", "tool_calls", "errors")

_PYTHON_TYPES = {str: "VARCHAR", int: "INTEGER", float: "DOUBLE", bool: "BOOLEAN"}


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str

    def placeholder(self, index: int, one_row: bool) -> str:
        """The SELECT expression of parameter ``index``; times arrive as Unix seconds."""
        value = f"${index}" if one_row else f"unnest(${index})"
        if self.sql_type == "TIMESTAMP":
            return f"make_timestamp(CAST({value} * 1e6 AS BIGINT))"
        return value


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()

    def create_sql(self) -> str:
        columns = ", ".join(f"{column.name} {column.sql_type}" for column in self.columns)
        key = f", PRIMARY KEY ({', '.join(self.key)})" if self.key else ""
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({columns}{key})"

    def insert_sql(self, replace: bool = False, one_row: bool = False) -> str:
        """Rows given as column lists (``unnest``), or as one row of parameters.

        Columns are named, so a migrated file whose added columns sit at the end of a
        table takes the same statement. A single row goes without ``unnest``: DuckDB
        plans it in half the time, and a step's commit is mostly single rows.
        """
        names = ", ".join(column.name for column in self.columns)
        values = ", ".join(
            column.placeholder(index, one_row) for index, column in enumerate(self.columns, 1)
        )
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        if one_row:
            return f"{verb} INTO {self.name} ({names}) VALUES ({values})"
        return f"{verb} INTO {self.name} ({names}) SELECT {values}"

    def key_indexes(self) -> list[int]:
        names = [column.name for column in self.columns]
        return [names.index(name) for name in self.key]


def _sql_type(hint: Any) -> str:
    """DuckDB's type for a field's annotation: ``X | None`` is X, nullable."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        [hint] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    for extra in getattr(hint, "__metadata__", ()):
        if isinstance(extra, SqlType):
            return str(extra)
    return _PYTHON_TYPES[hint]


def table_of(row_type: type[Row]) -> Table:
    """The table a row class describes: its fields, in order, are the columns."""
    hints = typing.get_type_hints(row_type, include_extras=True)
    columns = tuple(
        Column(field.name, _sql_type(hints[field.name])) for field in dataclasses.fields(row_type)
    )
    return Table(row_type.TABLE, columns, row_type.KEY)


def row_values(row: Row) -> tuple[Any, ...]:
    """The row's column values as DuckDB takes them: JSON fields as text (None as NULL)."""
    # A dataclass's __dict__ holds its fields in order: the cheapest way to read them,
    # and rows are made on the kernel's hot path (one a slice).
    values = tuple(vars(row).values())
    json_indexes = _JSON_INDEXES[row.TABLE]
    if not json_indexes:
        return values
    converted = list(values)
    for index in json_indexes:
        if converted[index] is not None:
            converted[index] = to_json(converted[index])
    return tuple(converted)


TABLES: dict[str, Table] = {row_type.TABLE: table_of(row_type) for row_type in ROW_TYPES}
_JSON_INDEXES: dict[str, tuple[int, ...]] = {
    name: tuple(i for i, column in enumerate(table.columns) if column.sql_type == "JSON")
    for name, table in TABLES.items()
}

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the version table itself (created below for every migrated file).
    2: (),
    # 2 -> 3: how much of each prompt the run's KV cache already held.
    3: ("ALTER TABLE llm_requests ADD COLUMN reused_tokens INTEGER DEFAULT 0",),
    # 3 -> 4: the question a waiting run asks (input steps).
    4: ("ALTER TABLE runs ADD COLUMN question VARCHAR",),
    # 4 -> 5: the journal's applied mark; a version-4 flowengine would not replay the
    # journal after a crash, so it must not open these files.
    5: (_JOURNAL_SQL,),
    # 5 -> 6: the batched executor's ticks (the table is created below).
    6: (),
    # 6 -> 7: rows written while a step runs carry that step's ``steps.seq`` (they carried
    # the steps finished before it, one less, so every join said ``+ 1``). Steps store
    # what they changed, not the whole state; the rows of both kinds read the same
    # (``storage/checkpoints.py``), so they stay as they are.
    7: tuple(
        f"UPDATE {table} SET step_seq = step_seq + 1 WHERE step_seq IS NOT NULL"
        for table in STEP_SEQ_TABLES
    ),
    # 7 -> 8: the cases `flowengine test` ran (the table is created below).
    8: (),
}
"""Statements that bring a file from the version before each key to that version."""


def _tables(connection: Any) -> set[str]:
    rows = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main'"
    ).fetchall()
    return {name for (name,) in rows}


def stored_version(connection: Any, path: Path) -> int | None:
    """The file's schema version; 1 for files from before versions; None for an empty file."""
    tables = _tables(connection)
    if META_TABLE in tables:
        found = connection.execute(f"SELECT max(schema_version) FROM {META_TABLE}").fetchone()
        if found is None or found[0] is None:
            raise StorageError(
                f"{path}: {META_TABLE} holds no schema version; the file was damaged or "
                "written by something else; pass --db with another file"
            )
        return int(found[0])
    if "runs" in tables:
        return 1
    if tables:
        raise StorageError(
            f"{path}: not a flowengine database (it has tables, but no 'runs'); "
            "pass --db with another file"
        )
    return None


def _check_not_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path}: written by a newer flowengine (schema version {version}; this one "
            f"knows up to {SCHEMA_VERSION}); upgrade flowengine or pass --db with another file"
        )


def check_readable(connection: Any, path: Path) -> None:
    """Refuse, in one line, a file this version cannot read; never changes the file."""
    version = stored_version(connection, path)
    if version is None:
        raise StorageError(f"{path}: no runs stored yet; `flowengine run` stores them")
    _check_not_newer(version, path)


def prepare(connection: Any, path: Path) -> int:
    """Create the tables of a new file, or migrate an older one; returns the old version."""
    version = stored_version(connection, path)
    if version is not None:
        _check_not_newer(version, path)
        if version == SCHEMA_VERSION:
            _check_columns(connection, path)
            return version
    connection.execute("BEGIN TRANSACTION")
    try:
        for target in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                connection.execute(statement)
        for table in TABLES.values():
            connection.execute(table.create_sql())
        connection.execute(_JOURNAL_SQL)
        connection.execute(
            f"INSERT INTO {JOURNAL_TABLE} SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {JOURNAL_TABLE})"
        )
        connection.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (schema_version INTEGER)")
        connection.execute(f"DELETE FROM {META_TABLE}")
        connection.execute(f"INSERT INTO {META_TABLE} VALUES (?)", [SCHEMA_VERSION])
        connection.execute("COMMIT")
    except Exception as exc:
        connection.execute("ROLLBACK")
        raise StorageError(
            f"{path}: could not bring the database from schema version {version} to "
            f"{SCHEMA_VERSION} ({str(exc).splitlines()[0]}); the file is unchanged"
        ) from None
    _check_columns(connection, path)
    return version or SCHEMA_VERSION


def _check_columns(connection: Any, path: Path) -> None:
    """Every field of every row class has its column: a missing migration shows here."""
    rows = connection.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall()
    present = set(rows)
    for table in TABLES.values():
        for column in table.columns:
            if (table.name, column.name) not in present:
                raise StorageError(
                    f"{path}: table {table.name} has no column {column.name} although its "
                    f"schema version is {SCHEMA_VERSION}; the file was changed by hand or "
                    "a migration is missing; pass --db with another file"
                )
