"""The figures bench_memory.py derives from a build's records: the queue's idle
time and the ratios taken repeat by repeat (what the README's tables quote)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_memory")


def job(queued: float, admitted: float, finished: float) -> dict[str, Any]:
    return {"queued": queued, "admitted": admitted, "finished": finished}


def test_idle_counts_only_time_a_job_waited_with_none_running(bench: ModuleType) -> None:
    # One slot: B and C queue while A runs; B starts 0.1 s after A ends, C 0.2 s
    # after B ends. A's own 0.05 s from queue to start counts as well.
    events = [job(0.0, 0.05, 10.0), job(1.0, 10.1, 20.0), job(2.0, 20.2, 30.0)]
    assert bench.idle(events) == pytest.approx(0.35)


def test_idle_is_zero_for_side_by_side_jobs_and_ignores_unfinished(bench: ModuleType) -> None:
    events = [job(0.0, 0.0, 10.0), job(1.0, 1.0, 12.0), {"queued": 3.0, "admitted": None}]
    assert bench.idle(events) == 0.0
    assert bench.idle([]) == 0.0


def summary(walls: list[float]) -> dict[str, Any]:
    return {
        "runs": len(walls),
        "ok": len(walls),
        "wall": sorted(walls)[len(walls) // 2],
        "per_repeat": {"wall": walls, "cpu": walls},
    }


def test_ratio_pairs_repeats_so_drift_between_them_cancels(bench: ModuleType) -> None:
    # The machine's speed drifts between repeats; the row is 2% slower in two of
    # three repeats and 10% in one. The ratio of the medians would say 1.10.
    base = summary([50.0, 60.0, 70.0])
    row = summary([51.0, 66.0, 71.4])
    assert bench.ratio(row, base) == pytest.approx(1.02)
    assert bench.spread(row, base) == ", per repeat 1.02-1.10"


def test_ratio_falls_back_to_medians_when_repeats_do_not_pair(bench: ModuleType) -> None:
    one = summary([40.0])
    assert bench.ratio(summary([44.0]), one) == pytest.approx(1.1)
    failed = dict(summary([50.0, 60.0]), ok=1)
    assert bench.ratio(failed, summary([50.0, 50.0])) == pytest.approx(1.2)
    assert bench.ratio(dict(failed, ok=0), one) is None
