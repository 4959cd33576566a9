"""What the command modules share: exit statuses, the --db option, tables and JSON."""

from __future__ import annotations

import argparse
import json
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

from flowengine.errors import UsageError

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_WAITING = 3
EXIT_INTERRUPTED = 130
"""Ctrl-C stopped the runs (128 + SIGINT, as shells report it); each can be resumed."""
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


CELL_WIDTH = 60
"""Longer cells wrap onto more lines of their column."""


def human(value: Any) -> str:
    """A value as a person reads it in a table: times to the second, floats rounded to
    what a reader can compare (three significant digits, no exponent), JSON compact."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return human_float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=json_default)
    return str(value)


def human_float(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:g}"
    if abs(value) < 0.001:  # a tenth of a millisecond is as fine as a person reads
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("", "-0") else text
    return f"{value:.3g}"


def table(rows: list[dict[str, Any]], columns: list[str], width: int = CELL_WIDTH) -> str:
    """Rows as aligned columns; a cell longer than ``width`` wraps onto further lines of
    its column, so nothing is cut off."""
    wrapped = [
        [textwrap.wrap(" ".join(human(row.get(c)).split()), width) or [""] for c in columns]
        for row in rows
    ]
    widths = [
        max([len(c)] + [len(line) for cells in wrapped for line in cells[i]])
        for i, c in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for cells in wrapped:
        for depth in range(max(len(cell) for cell in cells)):
            parts = [cell[depth] if depth < len(cell) else "" for cell in cells]
            lines.append("  ".join(v.ljust(w) for v, w in zip(parts, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def add_format_option(
    parser: argparse.ArgumentParser, choices: tuple[str, ...], default: str | None, help: str
) -> None:
    """``--format`` and its short form ``--json`` (every command asks for JSON the same
    way)."""
    parser.add_argument("--format", choices=choices, default=default, help=help)
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )


def json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


JSON_ALIAS = "text (default), or json: the same as --json"


class JsonFormat(argparse.Action):
    """``--format text|json`` on a command whose JSON switch is ``--json``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values == "json")
