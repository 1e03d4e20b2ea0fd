"""The figures bench_memory.py derives from a build's records: the queue's idle
time and the ratios taken repeat by repeat (what the README's tables quote)."""

from __future__ import annotations

import json
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


def build(wall: float, cpu: float, guard_cpu: float | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "rc": 0,
        "wall": wall,
        "cpu": cpu,
        "max_usage": 0,
        "peak_rss": 0,
        "majflt": 0,
        "oom_kills": 0,
    }
    if guard_cpu is not None:
        res.update(reruns=0, requeues=0, guarded=4, pairs=3, pair_peak=0)
        res.update(paused=0.0, idle=0.0, guard_cpu=guard_cpu, lto_cpu=cpu / 2)
    return res


def test_pace_takes_the_machines_speed_out_and_keeps_idle_cpus(bench: ModuleType) -> None:
    # Repeat 1: the machine ran 20% slower for ltoguard's build (wall and CPU alike)
    # and its guards used 1 CPU second: per second of work it kept pace.
    # Repeat 2: same CPU, 10% more wall: CPUs stood idle.
    plain = bench.summarise([build(30.0, 60.0), build(30.0, 60.0)])
    auto = bench.summarise([build(36.0, 73.0, guard_cpu=1.0), build(33.0, 61.0, guard_cpu=1.0)])
    assert bench.ratios(auto, plain) == pytest.approx([1.2, 1.1])
    assert bench.ratios(auto, plain, "pace") == pytest.approx([1.0, 1.1])
    text, ok = bench.targets("roomy", {"plain": plain, "auto-cold": auto})[0]
    assert ok is False
    assert "(1.15, per repeat 1.10-1.20; per CPU second of work 1.05" in text


def test_pace_is_left_out_when_a_build_recorded_no_cpu(bench: ModuleType) -> None:
    plain = bench.summarise([build(30.0, 0.0)])
    auto = bench.summarise([build(31.0, 60.0, guard_cpu=1.0)])
    assert bench.ratio(auto, plain, "pace") is None
    text, _ = bench.targets("roomy", {"plain": plain, "auto-cold": auto})[0]
    assert "per CPU second" not in text
    assert "NaN" not in json.dumps(plain)  # the --json output stays valid JSON
    # Summaries from before the figure existed have no pace at all.
    assert bench.ratio(summary([40.0]), summary([40.0]), "pace") is None


def test_calibration_line_says_when_it_was_skipped(bench: ModuleType) -> None:
    assert bench.calibration_line(None) == (
        "calibration skipped (--no-calibrate): the limits are the ones given"
    )
    line = bench.calibration_line({"wall": 58.46, "peak_rss": 426 << 20, "guarded_peak": 403 << 20})
    assert line.startswith("calibration (ltoguard 1 slot, no limit): wall 58.5 s, peak rss 426")
    assert "largest guarded job 403 MiB" in line


def test_ci_warm_targets_need_every_job_from_history_and_a_warm_wall(bench: ModuleType) -> None:
    warm = summary([50.0, 60.0])
    good = dict(summary([50.5, 60.6]), guarded=4, from_history=4)
    marks = dict(bench.targets("roomy", {"auto-warm": warm, "ci-warm": good}))
    assert marks["ci-warm: every guarded job starts from history (4 of 4)"] is True
    [wall] = [ok for text, ok in marks.items() if text.startswith("ci-warm wall / auto-warm")]
    assert wall is True
    cold = dict(summary([55.0, 66.0]), guarded=4, from_history=1)
    marks = dict(bench.targets("roomy", {"auto-warm": warm, "ci-warm": cold}))
    assert marks["ci-warm: every guarded job starts from history (1 of 4)"] is False
    [wall] = [ok for text, ok in marks.items() if text.startswith("ci-warm wall / auto-warm")]
    assert wall is False


def test_summarise_keeps_the_fewest_jobs_from_history(bench: ModuleType) -> None:
    run = {"rc": 0, "wall": 1.0, "cpu": 1.0, "max_usage": 0, "peak_rss": 0, "majflt": 0}
    runs = [
        dict(run, oom_kills=0, guarded=3, from_history=3),
        dict(run, oom_kills=0, guarded=3, from_history=2),
    ]
    assert bench.summarise(runs)["from_history"] == 2
