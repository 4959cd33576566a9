"""How many threads the model computes with: every core on a quiet machine, fewer when
other processes keep cores busy.

Measured on 2 cores (BENCHMARKS.md): quiet, 2 threads evaluate prompts about 1.7x as fast
as 1; with one other busy process, 2 threads collapse to half the speed of 1, because
llama.cpp's threads wait for each other at every layer and one of them keeps losing its
core. ``auto`` therefore looks, before each slice of work, at how busy the cores were with
other processes since the last look, and leaves those cores alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

MIN_INTERVAL = 0.25
"""Seconds between two readings of the CPU counters; shorter intervals are too noisy."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """Seconds of CPU time all processes spent busy since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(value) for value in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(values[:8]) - idle) / ticks


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class ThreadPolicy:
    """``fixed`` threads, or None for ``auto``."""

    fixed: int | None = None
    cores: int = 0
    _last: tuple[float, float, float] | None = None
    _current: int = 0

    def __post_init__(self) -> None:
        self.cores = self.cores or _cores()
        self._current = self.fixed or self.cores

    @property
    def label(self) -> str:
        return str(self.fixed) if self.fixed else f"auto (1-{self.cores})"

    def threads(self) -> int:
        """Threads for the next slice of work."""
        if self.fixed:
            return self.fixed
        clock = time.monotonic()
        if self._last is not None and clock - self._last[0] < MIN_INTERVAL:
            return self._current  # called for every token: read the counters seldom
        busy = _busy_seconds()
        if busy is None:
            return self._current
        now = (clock, busy, _own_seconds())
        if self._last is None:
            self._last = now
            return self._current
        wall = now[0] - self._last[0]
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        # A core counts as taken when another process kept it busy most of the time.
        self._current = max(1, min(self.cores, self.cores - int(others + 0.4)))
        return self._current


def parse_threads(text: str) -> int | None:
    """``auto`` or a whole number of at least 1 (argparse type)."""
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise ValueError("give 1 or more threads, or auto")
    return value
