"""``--threads auto``: how many threads the model gets from how busy other processes kept
the cores. The counters are given here (the benchmark measures the real effect)."""

from __future__ import annotations

import pytest

from flowengine.kernel import threads
from flowengine.kernel.threads import ThreadPolicy, parse_threads


def _machine(monkeypatch: pytest.MonkeyPatch, readings: list[tuple[float, float, float]]) -> None:
    """Successive (clock, all busy CPU seconds, own CPU seconds) readings."""
    feed = iter(readings)
    current: dict[str, float] = {}

    def clock() -> float:
        current["clock"], current["busy"], current["own"] = next(feed)
        return current["clock"]

    monkeypatch.setattr(threads.time, "monotonic", clock)
    monkeypatch.setattr(threads, "_busy_seconds", lambda: current["busy"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: current["own"])


def test_auto_uses_every_core_when_only_the_model_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    # One second: 2 cores busy in all, both of them ours.
    _machine(monkeypatch, [(0.0, 0.0, 0.0), (1.0, 2.0, 2.0)])
    policy = ThreadPolicy(None, cores=2)
    assert [policy.threads(), policy.threads()] == [2, 2]


def test_auto_leaves_a_core_another_process_keeps_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    # One second: 2 cores busy, 1 of them ours; then the other process stops.
    _machine(monkeypatch, [(0.0, 0.0, 0.0), (1.0, 2.0, 1.0), (2.0, 4.0, 3.0)])
    policy = ThreadPolicy(None, cores=2)
    assert [policy.threads(), policy.threads(), policy.threads()] == [2, 1, 2]


def test_counters_are_read_at_most_every_quarter_second(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, [(0.0, 0.0, 0.0), (0.1, 2.0, 0.0), (0.3, 2.0, 0.0)])
    policy = ThreadPolicy(None, cores=2)
    # The reading 0.1 s after the first is too soon to judge: the count stays.
    assert [policy.threads(), policy.threads(), policy.threads()] == [2, 2, 1]


def test_a_fixed_count_is_kept_and_bad_counts_are_refused() -> None:
    assert ThreadPolicy(1, cores=2).threads() == 1
    assert parse_threads("auto") is None and parse_threads("3") == 3
    with pytest.raises(ValueError):
        parse_threads("0")
