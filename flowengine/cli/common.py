"""What the command modules share: exit statuses, the --db option, tables and JSON."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from flowengine.errors import UsageError

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_WAITING = 3
"""``run``/``resume``: no run failed, and at least one waits for a person's answer."""
FORMATTER = argparse.RawDescriptionHelpFormatter


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small; give 1 or more")
    return value


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the DuckDB file runs are kept in (default: flowengine.duckdb in your user "
        "data folder)",
    )


def add_dbs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        action="append",
        metavar="PATH|GLOB",
        help="the DuckDB file to read (default: flowengine.duckdb in your user data folder); "
        "repeat it, or give a glob such as 'out/*.duckdb' (quoted), to read the files of "
        "several processes together",
    )


def db_paths(args: argparse.Namespace) -> list[Path]:
    """The database files a reading command reads: each ``--db`` (globs expanded)."""
    if not args.db:
        from flowengine.storage.location import default_db

        return [default_db()]
    import glob

    paths: list[Path] = []
    for given in args.db:
        if glob.has_magic(given):
            found = sorted(glob.glob(given))
            if not found:
                raise UsageError(f"--db {given}: no file matches")
            paths += [Path(each) for each in found]
        else:
            paths.append(Path(given))
    for path in paths:
        if path.is_dir():
            raise UsageError(f"--db {path} is a folder; give a file")
    return list(dict.fromkeys(paths))


def db_path(args: argparse.Namespace) -> Path:
    """The database file the command reads or writes: ``--db``, or the user's default."""
    if args.db:
        path = Path(args.db)
        if path.is_dir():
            raise UsageError(f"--db {args.db} is a folder; give a file")
        return path
    from flowengine.storage.location import default_db

    return default_db()


def write_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        text = "" if value is None else str(value)
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:59] + "…"

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)
