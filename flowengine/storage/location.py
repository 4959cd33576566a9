"""Where runs are kept when no ``--db`` is given: a file in the user's data folder."""

from __future__ import annotations

from pathlib import Path


def default_db() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("flowengine")) / "flowengine.duckdb"
