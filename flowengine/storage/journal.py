"""The journal: rows made durable by one append and fsync, before DuckDB has them.

A DuckDB statement costs about a millisecond however few its rows, so committing every
group of finished steps to DuckDB capped a process at some hundreds of durable steps a
second. Instead each group of rows is appended to ``<db>.journal`` as one JSON line and
synced to disk (a fraction of a millisecond on a quiet disk), and is then acknowledged.
The journaled rows move into DuckDB in large transactions; each also stores the number of
the last group it holds (``flowengine_journal.applied``). The journal is emptied whenever
DuckDB holds every group in it, and at the latest past ``JOURNAL_LIMIT`` bytes (the writer
then waits for DuckDB). After a crash, opening the file replays the groups after that
number, so a group is applied exactly once; a torn last line was never acknowledged and
is dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JournalRow = tuple[str, bool, tuple[Any, ...]]
"""A row as the writer queues it: its table, whether it replaces by key, its values."""

_sync = getattr(os, "fdatasync", os.fsync)


def journal_path(db: Path) -> Path:
    """Where a database's journal lives: beside it, as DuckDB's own ``.wal`` does."""
    return db.with_name(db.name + ".journal")


def has_journal(db: Path) -> bool:
    """Whether rows may be waiting in the journal (a crash, or a writer at work)."""
    try:
        return journal_path(db).stat().st_size > 0
    except OSError:
        return False


class Journal:
    """The open journal of one writer; the writer thread alone calls it."""

    def __init__(self, db: Path, last_group: int) -> None:
        self.path = journal_path(db)
        self.last_group = last_group
        created = not self.path.exists()
        # O_DSYNC: each write returns once on disk, in one system call (one release of
        # the GIL, which a busy process is slow to hand back).
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_DSYNC", 0)
        self._fd = os.open(self.path, flags, 0o644)
        self._synced_writes = hasattr(os, "O_DSYNC")
        self.size = os.fstat(self._fd).st_size
        """Bytes in the file (so that emptying an empty one is skipped)."""
        if created:
            # The file's name must survive a crash as well as its contents.
            _sync_folder(self.path.parent)

    def append(self, rows: list[JournalRow]) -> int:
        """Write one group and return once it is on disk; returns the group's number."""
        self.last_group += 1
        line = json.dumps([self.last_group, rows], separators=(",", ":")) + "\n"
        data = memoryview(line.encode("utf-8"))
        self.size += len(data)
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        if not self._synced_writes:
            _sync(self._fd)
        return self.last_group

    def clear(self) -> None:
        """Empty the journal once DuckDB holds every group in it."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self, remove: bool) -> None:
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)


def read_groups(db: Path) -> list[tuple[int, list[JournalRow]]]:
    """The whole groups in a database's journal, in order; a torn line ends them."""
    path = journal_path(db)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    groups: list[tuple[int, list[JournalRow]]] = []
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
        try:
            number, rows = json.loads(line)
        except ValueError:
            break  # written when the process died: never acknowledged
        groups.append((int(number), [(table, bool(flag), tuple(v)) for table, flag, v in rows]))
    return groups


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open a folder; the file itself is still synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
