"""Learned memory curves: how they are learned, kept, carried and used by admission."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ltoguard import curves
from ltoguard.admission import (
    DEFAULT,
    Head,
    Running,
    Why,
    backfill,
    expected,
    fit,
    held_together,
    off_curve,
    outstanding,
    pause_step,
)
from ltoguard.curves import Curve
from ltoguard.estimates import Basis, History
from ltoguard.history import history_file
from ltoguard.jobs import Job, JobRecord
from ltoguard.policy import AdmissionPolicy, running_jobs
from ltoguard.records import Holder
from ltoguard.semaphore import Snapshot
from ltoguard.sizes import GiB, MiB
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc

# A fat-LTO job as they go: most of its peak in its first second, the top at the end.
LTO = Curve(8.0, (0.7, 0.75, 0.8, 0.8, 0.85, 0.85, 0.9, 1.0))


# -- learning a curve ----------------------------------------------------------------


def test_a_curve_is_each_slice_s_largest_share_of_the_peak() -> None:
    samples = [[100.0, 0], [100.5, 50], [101.0, 100], [103.0, 100], [104.0, 200], [104.0, 0]]
    c = curves.from_samples(samples, 100.0, 104.0)
    assert c is not None and c.seconds == 4.0 and len(c.shape) == curves.SLICES
    assert max(c.shape) == 1.0 and c.shape[-1] == 1.0
    # Between two samples the larger holds: the first slice is never taken as empty.
    assert c.shape[0] == 0.25 and min(c.shape) == 0.25
    assert c.shape[curves.SLICES // 2] == 0.5  # 102 s: between the 100 and the 100


def test_a_paused_runs_samples_are_joined_up_without_its_pauses() -> None:
    # Stopped from 102 to 105 s and from 106 to 107 s: every sample moves back by the
    # time paused before it, one taken during a pause onto the pause's start.
    samples: list[list[float]] = [[100, 0], [101, 50], [102, 80], [103, 80], [105, 80],
                                  [105.5, 90], [106.5, 90], [108, 200], [108.5, 0]]  # fmt: skip
    kept = curves.without_pauses(samples, [(102.0, 105.0), (106.0, 107.0)])
    assert kept == [[100, 0], [101, 50], [102, 80], [102, 80], [102, 80], [102.5, 90],
                    [103, 90], [104, 200], [104.5, 0]]  # fmt: skip
    assert curves.without_pauses(samples, []) == samples
    c = curves.from_samples(kept, kept[0][0], kept[-1][0])
    assert c is not None and c.seconds == 4.5 and c.shape[-1] == 1.0
    # The last sample, rounded to 0.01 s, may fall a few ms inside a pause the end of
    # the compile closed: it still ends the run.
    end = curves.without_pauses([[0, 0], [1, 50], [2, 60], [3.0, 0]], [(2.5, 3.004)])
    assert end[-1] == [2.5, 0]


def test_the_curve_learned_is_the_last_runs_with_its_pauses_cut_out() -> None:
    job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, GiB, "default")
    # A first attempt stopped at 102 s, then a run from 110 s paused 112-115 s.
    record.samples = [[100, 0], [101, 50], [102, 60], [102, 0],
                      [110, 0], [111, 40], [112, 70], [116, 100], [117, 0]]  # fmt: skip
    record.run_from = 4
    record.pauses = [(112.0, 115.0)]
    record.paused_s = 3.0
    c = record.last_run_curve()
    assert c is not None and c.seconds == 4.0 and c.shape[0] == 0.4
    # On one codegen thread, as before pauses were cut out: its curve all the same.
    record.one_thread = True
    assert record.last_run_curve() == c
    record.pauses, record.paused_s = [], 0.0
    assert record.last_run_curve() == curves.from_samples(record.samples[4:], 110.0, 117.0)


def test_too_short_or_too_few_samples_give_no_curve() -> None:
    assert curves.from_samples([[0, 5], [0.5, 5], [0.9, 5]], 0.0, 0.9) is None
    assert curves.from_samples([[0, 5], [3, 5]], 0.0, 3.0) is None


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"seconds": 0, "shape": [1.0]},
        {"seconds": True, "shape": [1.0]},
        {"seconds": 3, "shape": []},
        {"seconds": 3, "shape": [1.5]},
        {"seconds": 3, "shape": ["x"]},
        {"seconds": 3, "shape": [0.5] * 100},
    ],
)
def test_a_malformed_curve_is_no_curve(bad: object) -> None:
    assert curves.parse(bad) is None


def test_a_curve_round_trips_through_json() -> None:
    assert curves.parse(json.loads(json.dumps(LTO.as_json()))) == LTO
    assert LTO.share(0.5) == 0.7 and LTO.share(7.9) == 1.0 and LTO.share(8.0) is None


# -- admission with curves -----------------------------------------------------------


def job(ran: float, current: int, estimate: int = 300 * MiB, **kw: Any) -> Running:
    return Running(pid=1, estimate=estimate, current=current, started=1.0, ran=ran, **kw)


def test_without_curves_the_rules_are_the_estimates_as_before() -> None:
    jobs = [job(2.0, 200 * MiB), job(1.0, 100 * MiB, estimate=250 * MiB)]
    assert outstanding(jobs) == 100 * MiB + 150 * MiB
    assert held_together(jobs) == 550 * MiB


def test_a_running_job_is_expected_along_its_curve_then_gone() -> None:
    r = job(6.0, 270 * MiB, curve=LTO)  # slice 6 of 8: 0.9
    assert expected(r, 0.0) == 270 * MiB
    assert expected(r, 1.5) == 300 * MiB  # its last slice: the peak
    assert expected(r, 3.0) == 300 * MiB  # past its learned end, within the slack
    assert expected(r, 8 * DEFAULT.curve_slack - 6.0 + 0.01) == 0


def test_a_head_that_peaks_after_the_running_job_ends_fits_where_estimates_would_not() -> None:
    old = job(6.0, 270 * MiB, curve=LTO)
    flat = fit(estimate=300 * MiB, running=[old], available=340 * MiB, margin=20 * MiB)
    assert not flat.ok and flat.why is Why.NO_ROOM  # 300 + 30 of growth + 20 > 340
    d = fit(estimate=300 * MiB, running=[old], available=340 * MiB, margin=20 * MiB, curve=LTO)
    # Together at most: the old one's top (300, held until 1.2 x its 8 s) beside the
    # head's third slice (0.8 x 300): 540, of which 270 is held already; + 20 <= 340.
    assert d.ok and d.why is Why.FITS
    assert held_together([old, job(0.0, 0, curve=LTO)]) == 540 * MiB
    assert d.reserved < 0 and "ending before its peak" in d.text


def test_a_job_off_its_curve_is_expected_at_its_estimate() -> None:
    rising = job(0.5, 260 * MiB, curve=LTO)  # 0.7 allowed: 210 MiB (+10%: 231)
    assert off_curve(rising) and expected(rising, 7.5) == 300 * MiB
    late = job(8 * DEFAULT.curve_slack, 100 * MiB, curve=LTO)
    assert off_curve(late) and expected(late, 100.0) == 300 * MiB
    paused = job(6.0, 270 * MiB, curve=LTO, paused=True)
    assert expected(paused, 100.0) == 300 * MiB


def test_the_pause_rule_follows_the_curves() -> None:
    # The young job has just started; the old one ends within 3.6 s (1.2 x 8 s - 6 s). By estimates alone they
    # are expected to grow 30 + 90 MiB more; by their curves the young one reaches its
    # top only after the old one is gone.
    old = Running(pid=1, estimate=300 * MiB, current=270 * MiB, started=1.0, ran=6.0, curve=LTO)
    young = Running(pid=2, estimate=300 * MiB, current=210 * MiB, started=2.0, ran=0.5, curve=LTO)
    kw: dict[str, Any] = {"others": [old], "total": 600 * MiB, "paused": False}
    # Along the curves they grow by 75 MiB at most (300 + 255 against 480 held now).
    assert outstanding([old, young]) == 75 * MiB
    assert pause_step(me=young, available=100 * MiB, **kw).value == "keep"
    flat_young = Running(pid=2, estimate=300 * MiB, current=210 * MiB, started=2.0)
    flat_old = Running(pid=1, estimate=300 * MiB, current=270 * MiB, started=1.0)
    kw["others"] = [flat_old]
    assert pause_step(me=flat_young, available=100 * MiB, **kw).value == "pause"


def test_running_jobs_read_curve_and_run_time_from_their_records() -> None:
    rec = {
        "pid": 10,
        "estimate": 300 * MiB,
        "started": 100.0,
        "paused_s": 2.0,
        "paused_since": 108.0,
        "paused": True,
        "curve": LTO.as_json(),
    }
    snap = Snapshot(holders=[Holder(0, rec)], free_slots=[])
    [r] = running_jobs(snap, 1, rss=lambda pid: 5, now=lambda: 110.0)
    assert r.curve == LTO and r.ran == pytest.approx(110 - 100 - 2 - 2)
    assert r.paused and r.current == 5
    rec["curve"] = {"seconds": "x"}
    [r] = running_jobs(snap, 1, rss=lambda pid: 5, now=lambda: 110.0)
    assert r.curve is None


# -- keeping curves ------------------------------------------------------------------


def test_history_keeps_the_last_curve_and_lends_siblings_theirs(tmp_path: Path) -> None:
    h = History()
    h.record("a", "g", 300 * MiB, "tc", curve=LTO)
    h.record("a", "g", 320 * MiB, "tc")  # a run that gave no curve keeps the last
    assert h.curve("a", "tc") == LTO
    path = tmp_path / "h.json"
    h.save(str(path))
    loaded = History.load(str(path))
    assert loaded.curve("a", "tc") == LTO
    assert loaded.curve_for("a", "g", 320 * MiB, Basis.HISTORY, "tc") == LTO
    # A sibling without a curve of its own takes the nearest sibling's, its length
    # scaled by their sizes.
    sib = loaded.curve_for("b", "g", 160 * MiB, Basis.SIBLINGS_SCALED, "tc")
    assert sib is not None and sib.shape == LTO.shape and sib.seconds == pytest.approx(4.0)
    assert loaded.curve_for("b", "g", 160 * MiB, Basis.INPUTS, "tc") is None
    h.record("a", "g", 300 * MiB, "other toolchain")  # a new compiler: learned afresh
    assert h.curve("a", "other toolchain") is None


def test_a_guarded_run_learns_its_curve_and_the_next_is_admitted_with_it(
    tmp_path: Path, procs: Procs
) -> None:
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    argv = ltoguard_cmd(rustc, "app", ["--crate-type", "bin", "-C", "lto=fat"])
    env = clean_env(tmp_path, state, FAKE_SLEEP="1.5")
    for _ in range(2):
        p = procs.start(argv, env)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    saved = json.loads(
        (tmp_path / "xdg-cache" / "ltoguard" / history_file(os.geteuid())).read_text()
    )
    [entry] = saved["entries"].values()
    curve = curves.parse(entry["curve"])
    assert curve is not None and 1.3 < curve.seconds < 5
    lines = (state / f"events-{os.geteuid()}.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert "curve" not in first and first["estimate_basis"] == "default"
    assert second["estimate_basis"] == "history" and curves.parse(second["curve"]) is not None


def test_every_slice_counts_whatever_the_rounding_of_its_edge() -> None:
    # Slice 7 of a 254.38 s curve starts at 7 * 254.38 / 8 s: evaluated there, that
    # time must fall in slice 7, not in slice 6 by a rounding error.
    curve = Curve(254.38, (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0))
    for k, edge in enumerate(curve.edges()):
        assert curve.share(edge) == curve.shape[k]
    head = Running(pid=0, estimate=1000 * MiB, current=0, started=9.0, curve=curve)
    flat = Running(pid=1, estimate=1000 * MiB, current=900 * MiB, started=1.0)
    assert held_together([flat, head]) == 2000 * MiB


def test_a_backfill_beside_a_job_past_its_top_still_leaves_the_head_its_room() -> None:
    # The running job holds 600 MiB of its 1000 and its curve falls from here: along
    # the curve it grows no more. Once it ends, the head (900) must still fit beside
    # the backfilled job (300): it frees 600 MiB, not the 1000 its estimate says.
    falling = Curve(10.0, (1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.6, 0.6, 0.6, 0.6))
    running = [Running(pid=1, estimate=1000 * MiB, current=600 * MiB, started=1.0, ran=6.0,
                       curve=falling)]  # fmt: skip
    head = Head(900 * MiB, refused=True)
    for available in (500 * MiB, 600 * MiB):
        d = backfill(estimate=300 * MiB, head=head, ahead=1, running=running,
                     available=available, total=4000 * MiB, cpus=4)  # fmt: skip
        assert not d.ok


def test_a_job_that_relearns_takes_the_curve_with_the_estimate() -> None:
    job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, 2 * GiB, "default")
    pol = AdmissionPolicy(
        record,
        slots=None,
        memory=None,
        relearn=lambda: (300 * MiB, "siblings, scaled by inputs", LTO),
    )
    pol.refresh_estimate()
    assert (record.estimate, record.curve) == (300 * MiB, LTO)
    pol.again(400 * MiB, alone=False)  # it outgrew its estimate: its curve is no guide
    assert record.curve is None and record.estimate == 400 * MiB
