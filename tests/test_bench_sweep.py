"""The figures and verdicts of scripts/bench_sweep.py, from canned builds: each
target can fail, and the table says which."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.conftest import load_script

MiB = 1 << 20


@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    return load_script("bench_sweep")


def row(wall: float, ok: bool = True, kills: int = 0, **more: Any) -> dict[str, Any]:
    out = {"ok": ok, "rc": 0 if ok else 101, "wall": wall, "cpu": 2 * wall, "oom_kills": kills}
    out["reached"] = kills
    out.update(more)
    return out


def guarded(wall: float, **more: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "pairs": 5,
        "paused_jobs": 0,
        "paused_s": 0.0,
        "requeues": 0,
        "reruns": 0,
        "cpu_lost_frac": 0.0,
        "refused": 2,
        "refused_fit": 1,
        "started_beside": 20,
    }
    figures.update(more)
    return row(wall, **figures)


def cell(
    plain: dict[str, Any], cold: dict[str, Any], warm: dict[str, Any], flock: float = 200.0
) -> dict[str, Any]:
    return {
        "cap": 430 * MiB,
        "rows": {"plain": plain, "flock": row(flock), "auto-cold": cold, "auto-warm": warm},
    }


KILLED_AFTER_PAIRS = row(50.0, ok=False, kills=1, lto_started=12, lto_paired=10)
FREE = row(100.0, lto_started=20, lto_paired=18)


def verdicts(sweep: ModuleType, c: dict[str, Any], jobs: int = 20) -> dict[str, bool | None]:
    return {name: ok for name, _, ok in sweep.targets(c, FREE, jobs)}


def test_all_targets_met_where_plain_dies_after_running_pairs(sweep: ModuleType) -> None:
    c = cell(KILLED_AFTER_PAIRS, guarded(120.0), guarded(118.0))
    found = verdicts(sweep, c)
    assert found == {
        f"{tag} {what}": True
        for tag in ("cold", "warm")
        for what in ("kills", "cpu", "refused", "flock", "free")
    } | {"warm": True}
    assert sweep.verdict(sweep.targets(c, FREE, 20)) == "✓"


@pytest.mark.parametrize(
    ("cold", "flock", "missed"),
    [
        (guarded(121.0), 160.0, "cold flock"),  # 0.756 x flock
        (guarded(126.0), 200.0, "cold free"),  # 1.26 x plain without a cap
        (guarded(120.0, cpu_lost_frac=0.031), 200.0, "cold cpu"),
        (guarded(120.0, refused_fit=3, started_beside=20), 200.0, "cold refused"),  # 3 of 23
        (dict(guarded(120.0), reached=1, oom_kills=2), 200.0, "cold kills"),
        (dict(guarded(120.0), ok=False), 200.0, "cold kills"),
    ],
)
def test_each_target_can_fail(
    sweep: ModuleType, cold: dict[str, Any], flock: float, missed: str
) -> None:
    c = cell(KILLED_AFTER_PAIRS, cold, guarded(118.0), flock)
    found = verdicts(sweep, c)
    assert [name for name, ok in found.items() if ok is False] == [missed]
    assert sweep.verdict(sweep.targets(c, FREE, 20)) == f"✗ {missed}"


def test_warm_slower_than_cold_beyond_noise_fails(sweep: ModuleType) -> None:
    c = cell(KILLED_AFTER_PAIRS, guarded(100.0), guarded(106.0))
    assert verdicts(sweep, c)["warm"] is False
    assert verdicts(sweep, cell(KILLED_AFTER_PAIRS, guarded(100.0), guarded(104.0)))["warm"]


def test_where_plain_survives_ltoguard_is_held_to_plain(sweep: ModuleType) -> None:
    plain = row(100.0, lto_started=20, lto_paired=18)
    found = verdicts(sweep, cell(plain, guarded(105.0), guarded(106.0)))
    assert found["cold plain"] is True
    assert found["warm plain"] is False
    assert "cold flock" not in found and "cold free" not in found


def test_no_wall_target_where_plain_dies_before_half_its_jobs_ran_in_pairs(
    sweep: ModuleType,
) -> None:
    plain = row(20.0, ok=False, kills=1, lto_started=4, lto_paired=2)
    found = verdicts(sweep, cell(plain, guarded(190.0), guarded(189.0)))
    assert not {"cold flock", "cold free", "cold plain"} & set(found)
    # Half of the build's 20 LTO jobs in pairs is enough.
    half = row(20.0, ok=False, kills=1, lto_started=12, lto_paired=10)
    assert verdicts(sweep, cell(half, guarded(190.0), guarded(189.0)))["cold flock"] is False


def test_a_failed_baseline_leaves_its_ratio_unjudged(sweep: ModuleType) -> None:
    c = cell(KILLED_AFTER_PAIRS, guarded(120.0), guarded(118.0))
    c["rows"]["flock"] = row(90.0, ok=False, kills=1)
    found = verdicts(sweep, c)
    assert found["cold flock"] is None
    assert sweep.verdict(sweep.targets(c, FREE, 20)) == "✓"


def test_table_has_one_row_per_cap_and_lists_what_was_missed(sweep: ModuleType) -> None:
    good = cell(KILLED_AFTER_PAIRS, guarded(120.0), guarded(118.0))
    bad = cell(row(100.0), guarded(120.0, cpu_lost_frac=0.05), guarded(118.0))
    bad["cap"] = 900 * MiB
    for c in (good, bad):
        c["targets"] = sweep.targets(c, FREE, 20)
    kind = {
        "name": "many",
        "workspace": "Debian crates (many)",
        "lto_jobs": 20,
        "one_fits": 300 * MiB,
        "two_fit": 400 * MiB,
        "uncapped": FREE,
        "cells": [good, bad],
    }
    text = sweep.table(kind)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 3  # the header and one per cap
    assert lines[1].startswith(
        "| 430 | OOM-killed at 50 | 12 (10) | 200.0 | 120.0 / 118.0 | 0.60 / 0.59"
    )
    assert lines[1].endswith("| 1 of 21 / 1 of 21 | ✓ |")
    assert lines[2].startswith("| 900 | 100.0 | ")
    assert "✗ cold cpu, cold plain, warm plain" in lines[2]
    assert "- 900 MiB: cold: CPU lost <= 3% (5.0%)" in text


def test_caps_span_one_fits_to_two_fit(sweep: ModuleType) -> None:
    caps = sweep.caps_between(300 * MiB, 400 * MiB, 250 * MiB, [0.0, 0.5, 1.0])
    assert caps == [330 * MiB, 395 * MiB, 460 * MiB]
    # Never below the whole build's peak: the library phase must fit too.
    assert sweep.caps_between(300 * MiB, 400 * MiB, 400 * MiB, [0.0])[0] == 420 * MiB


def test_one_and_two_read_the_group_while_an_lto_job_ran(sweep: ModuleType) -> None:
    events = [
        {"admitted": 10.0, "finished": 20.0, "peak": 200 * MiB},
        {"admitted": 20.0, "finished": 25.0, "peak": 90 * MiB},
    ]
    samples = [(5.0, 900 * MiB), (12.0, 300 * MiB), (22.0, 250 * MiB), (30.0, 800 * MiB)]
    assert sweep.one_and_two(samples, events) == (300 * MiB, 390 * MiB)


def test_plain_lto_jobs_beside_another(sweep: ModuleType) -> None:
    spans = {"a": [0.0, 10.0], "b": [9.0, 12.0], "c": [11.8, 20.0], "d": [30.0, 31.0]}
    assert sweep.paired_jobs(spans) == 2  # c overlaps b by only 0.2 s


def test_lto_crate_is_what_ltoguard_would_guard(sweep: ModuleType) -> None:
    link = ["/x/rustc", "--crate-name", "app01", "--edition=2021", "src/main.rs"]
    lto = ["--crate-type", "bin", "-C", "opt-level=3", "-C", "lto"]
    assert sweep.lto_crate([*link, *lto]) == "app01"
    assert sweep.lto_crate([*link, "--crate-type", "bin", "-C", "opt-level=3"]) is None
    assert sweep.lto_crate([]) is None


def test_cpu_lost_counts_the_stopped_attempts_share(sweep: ModuleType) -> None:
    events = [
        {
            "compile_cpu_s": 30.0,
            "attempts": [[0.0, 1.0, 11.0, 0.0, "requeue"], [11.0, 12.0, 32.0, 0.0, "done"]],
        },
        {"compile_cpu_s": 9.0, "attempts": [[0.0, 0.0, 9.0, 0.0, "done"]]},
        {"compile_cpu_s": 5.0},
    ]
    assert sweep.cpu_lost(events) == pytest.approx(10.0)


def event(
    name: str, queued: float, admitted: float, finished: float, mem: int, budget: int
) -> dict[str, Any]:
    return {
        "crate": name,
        "queued": queued,
        "admitted": admitted,
        "finished": finished,
        "peak": mem,
        "estimate": mem,
        "budget": budget,
        "outcome": "ok",
        "samples": [[admitted + 0.5, mem], [finished - 0.5, mem]],
    }


def test_refusals_check_the_two_profiles_under_the_cap(sweep: ModuleType) -> None:
    cap = 1000 * MiB
    # b queues while a runs and waits until a ends: refused. Side by side they
    # hold 300 + 300 MiB over a baseline of 200: it would have fit.
    events = [
        event("a", 0.0, 0.0, 10.0, 300 * MiB, 800 * MiB),
        event("b", 1.0, 10.0, 20.0, 300 * MiB, 800 * MiB),
    ]
    assert sweep.refusals(events, cap) == {"refused": 1, "refused_fit": 1, "started_beside": 0}
    # At 700 MiB (baseline 200) the two need 800: a refusal that would not have fit.
    small = [dict(e, budget=500 * MiB) for e in events]
    assert sweep.refusals(small, 700 * MiB) == {
        "refused": 1,
        "refused_fit": 0,
        "started_beside": 0,
    }


def test_a_head_admitted_at_once_or_beside_another_is_no_refusal(sweep: ModuleType) -> None:
    cap = 1000 * MiB
    events = [
        event("a", 0.0, 0.0, 10.0, 300 * MiB, 800 * MiB),
        event("b", 1.0, 1.1, 12.0, 300 * MiB, 500 * MiB),  # admitted beside a
        event("c", 2.0, 10.05, 15.0, 100 * MiB, 500 * MiB),  # c waits behind... a and b
    ]
    got = sweep.refusals(events, cap, cpus=3)
    assert got["started_beside"] == 2
    assert got["refused"] == 1  # c, while a and b ran (one running set)
    # On two CPUs admission holds c for a CPU while a and b run: no pair refused.
    assert sweep.refusals(events, cap, cpus=2)["refused"] == 0
