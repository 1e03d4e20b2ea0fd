from __future__ import annotations

from typing import Any

import pytest

from ltoguard.admission import (
    DEFAULT,
    KEEP,
    KILL,
    PAUSE,
    RESUME,
    Admission,
    Lend,
    Limits,
    Running,
    Why,
    admit,
    before_memory,
    behind,
    beside_compiles,
    choose_victim,
    critical,
    fall_per_watch,
    fit,
    floor_now,
    is_head,
    lending,
    lending_paused,
    near_the_floor,
    oldest,
    outstanding,
    pause_step,
    render,
    slot_cap,
)
from ltoguard.sizes import GiB, MiB
from ltoguard.structs import replace


def job(pid: int, estimate: int, current: int, started: float = 0.0) -> Running:
    return Running(pid=pid, estimate=estimate, current=current, started=started)


A = job(1, GiB, 400 * MiB, 10.0)  # 624 MiB still to come
B = job(2, 500 * MiB, 600 * MiB, 20.0)  # above its estimate: reserves nothing


def fit_of(head: int, running: list[Running], available: int, margin: int) -> Admission:
    return fit(estimate=head, running=running, available=available, margin=margin)


@pytest.mark.parametrize(
    ("head", "running", "available", "margin", "why"),
    [
        # Liveness: nothing guarded runs, so the head starts whatever memory says.
        (GiB, [], 8 * GiB, 0, Why.FIRST),
        (8 * GiB, [], GiB, 256 * MiB, Why.FIRST),
        (GiB, [], 0, 0, Why.FIRST),
        # Memory: head + A's outstanding 624 MiB + margin.
        (GiB, [A], GiB + 624 * MiB + 256 * MiB, 256 * MiB, Why.FITS),
        (GiB, [A], GiB + 624 * MiB + 256 * MiB - 1, 256 * MiB, Why.NO_ROOM),
        (GiB, [A], GiB + 624 * MiB, 0, Why.FITS),
        # B is over its estimate: it reserves nothing more (its usage is already
        # out of `available`).
        (GiB, [B], GiB, 0, Why.FITS),
        (GiB, [A, B], GiB + 624 * MiB, 0, Why.FITS),
        (GiB, [A, B], GiB + 623 * MiB, 0, Why.NO_ROOM),
    ],
)
def test_fit_truth_table(
    head: int, running: list[Running], available: int, margin: int, why: Why
) -> None:
    d = fit_of(head, running, available, margin)
    assert (d.ok, d.why) == (why is not Why.NO_ROOM, why)
    assert (d.estimate, d.available, d.margin) == (head, available, margin)
    assert d.reserved == outstanding(running) and d.running == len(running)
    assert d.names_estimate
    assert d.text and "\n" not in d.text


@pytest.mark.parametrize(
    ("running", "alone", "limit", "expected"),
    [
        (0, False, None, Admission(True, Why.FIRST)),
        (0, False, 1, Admission(True, Why.FIRST)),  # the first job starts whatever the cap
        (1, False, None, None),  # memory decides
        (1, False, 2, None),
        (1, False, 1, Admission(False, Why.SLOTS_FULL, running=1, limit=1)),
        (3, False, 2, Admission(False, Why.SLOTS_FULL, running=3, limit=2)),
        # A rerun after an OOM kill waits for every other job, cap or not.
        (0, True, None, Admission(True, Why.ALONE)),
        (0, True, 1, Admission(True, Why.ALONE)),
        (1, True, None, Admission(False, Why.NOT_ALONE, running=1)),
        (1, True, 5, Admission(False, Why.NOT_ALONE, running=1)),
    ],
)
def test_rules_before_memory(
    running: int, alone: bool, limit: int | None, expected: Admission | None
) -> None:
    assert before_memory(running=running, alone=alone, limit=limit) == expected


def test_nothing_starts_beside_a_rerun_alone() -> None:
    """A rerun after an OOM kill was promised the memory to itself: a waiter that
    would fit beside it waits for it to end, whatever the slot cap."""
    for limit in (None, 5):
        d = before_memory(running=1, alone=False, limit=limit, beside_alone=True)
        assert d == Admission(False, Why.BESIDE_ALONE, running=1)
        assert d.text == "a job that ran out of memory is rerunning alone: waiting for it to end"
    assert before_memory(running=0, alone=False, limit=None, beside_alone=True) == Admission(
        True, Why.FIRST
    )
    rerun = replace(A, alone=True)
    assert admit(estimate=MiB, running=[A], available=100 * GiB, total=GiB).ok
    d = admit(estimate=MiB, running=[rerun], available=100 * GiB, total=GiB)
    assert (d.ok, d.why) == (False, Why.BESIDE_ALONE)


def test_no_more_guarded_jobs_run_than_there_are_cpus() -> None:
    """With slots = auto, as many guarded jobs as CPUs running (not paused): one more
    would take no CPU of its own, only slow them (and their learned curves with them)
    and hold memory. A paused job holds no CPU; a rerun alone decides first."""
    two = Admission(False, Why.CPUS_BUSY, running=2, limit=2)
    assert before_memory(running=2, alone=False, limit=None, busy=2, cpus=2) == two
    assert two.text == "2 jobs running on 2 CPUs: one more would only slow them"
    assert before_memory(running=2, alone=False, limit=None, busy=1, cpus=2) is None
    assert before_memory(running=1, alone=False, limit=None, busy=1, cpus=2) is None
    alone = before_memory(running=1, alone=False, limit=None, busy=1, cpus=1)
    assert alone is not None
    assert alone.text == "1 job running on 1 CPU: one more would only slow them"
    assert before_memory(running=0, alone=False, limit=None, busy=0, cpus=1) == Admission(
        True, Why.FIRST
    )
    full = before_memory(running=2, alone=False, limit=2, busy=2, cpus=2)
    assert full is not None and full.why is Why.SLOTS_FULL
    # A slot cap the user set is what they asked for: three slots, three jobs.
    assert before_memory(running=2, alone=False, limit=3, busy=2, cpus=2) is None
    rerun = before_memory(running=2, alone=True, limit=None, busy=2, cpus=2)
    assert rerun is not None and rerun.why is Why.NOT_ALONE
    # admit counts the running jobs that are not paused.
    lots, both = 100 * GiB, [A, B]
    busy = admit(estimate=MiB, running=both, available=lots, total=lots, cpus=2)
    assert busy.why is Why.CPUS_BUSY
    paused = [A, replace(B, paused=True)]
    assert admit(estimate=MiB, running=paused, available=lots, total=lots, cpus=2).why is Why.FITS
    assert admit(estimate=MiB, running=[A, B], available=100 * GiB, total=64 * GiB).ok


@pytest.mark.parametrize(
    ("running", "limit", "ok"),
    [(0, None, True), (5, None, True), (0, 1, True), (1, 1, False), (1, 2, True), (2, 2, False)],
)
def test_slot_cap(running: int, limit: int | None, ok: bool) -> None:
    d = slot_cap(running, limit)
    assert (d.ok, d.why) == (ok, Why.SLOT_FREE if ok else Why.SLOTS_FULL)
    assert (d.running, d.limit) == (running, limit)
    assert not d.names_estimate


@pytest.mark.parametrize(
    ("running", "available", "total", "limit", "alone", "ok", "why"),
    [
        ([], 0, GiB, None, False, True, Why.FIRST),
        ([A], 100 * GiB, 64 * GiB, 1, False, False, Why.SLOTS_FULL),  # cap before memory
        ([A], 100 * GiB, 64 * GiB, 2, False, True, Why.FITS),
        ([A, B], 100 * GiB, 64 * GiB, 2, False, False, Why.SLOTS_FULL),
        ([A, B], 100 * GiB, 64 * GiB, 3, False, True, Why.FITS),
        ([A, B], GiB, 64 * GiB, 3, False, False, Why.NO_ROOM),  # slots fit, memory does not
        # The margin is the critical floor of the bound's size: 256 MiB of 24 GiB.
        ([A], GiB + 880 * MiB, 24 * GiB, None, False, True, Why.FITS),
        ([A], GiB + 880 * MiB - 1, 24 * GiB, None, False, False, Why.NO_ROOM),
        ([A], 100 * GiB, 64 * GiB, None, True, False, Why.NOT_ALONE),
        ([], 0, GiB, None, True, True, Why.ALONE),
    ],
)
def test_admit_applies_every_rule_in_order(
    running: list[Running],
    available: int,
    total: int,
    limit: int | None,
    alone: bool,
    ok: bool,
    why: Why,
) -> None:
    d = admit(
        estimate=GiB, running=running, available=available, total=total, limit=limit, alone=alone
    )
    assert (d.ok, d.why) == (ok, why)


FIRST, ALONE = Admission(True, Why.FIRST), Admission(True, Why.ALONE)


@pytest.mark.parametrize(
    ("early", "available", "compiling", "ok"),
    [
        (FIRST, 1100 * MiB, 0, True),  # fits: 1 GiB + 76 MiB of margin
        (FIRST, 1100 * MiB, 900 * MiB, True),  # fits, whatever the compiles hold
        (FIRST, 1100 * MiB - 1, 900 * MiB, False),  # short; fits once they end
        (FIRST, 600 * MiB, 500 * MiB, False),  # the edge of "fits once they end"
        (FIRST, 600 * MiB, 500 * MiB - 1, True),  # short even then: waiting cannot help
        (FIRST, 600 * MiB, 0, True),  # short, and nothing compiles beside it
        (ALONE, 1100 * MiB, 900 * MiB, True),
        (ALONE, 1100 * MiB - 1, 900 * MiB, False),
        (ALONE, 600 * MiB, 100 * MiB, False),  # short even then: the kill said it does not fit
        (ALONE, 600 * MiB, 0, True),
    ],
)
def test_beside_compiles(early: Admission, available: int, compiling: int, ok: bool) -> None:
    margin = 76 * MiB
    d = beside_compiles(
        early, estimate=GiB, available=available, margin=margin, compiling=compiling
    )
    assert d.ok is ok
    if ok:
        assert d is early  # the rule that let it start, as it was
    else:
        assert (d.why, d.compiling, d.margin) == (Why.COMPILING, compiling, margin)
        assert "but the build's other compiles hold" in d.text


def test_admit_waits_for_the_builds_compiles_only_with_nothing_guarded_running() -> None:
    kw: dict[str, Any] = dict(estimate=GiB, available=GiB, total=GiB, compiling=900 * MiB)
    assert admit(running=[], alone=True, **kw).why is Why.COMPILING
    assert admit(running=[], alone=True, **{**kw, "compiling": 0}).why is Why.ALONE
    assert admit(running=[], **kw).why is Why.COMPILING
    assert admit(running=[], **{**kw, "compiling": 0}).why is Why.FIRST
    assert admit(running=[A], **kw).why is Why.NO_ROOM  # beside a guarded job: fit decides
    assert admit(running=[A], alone=True, **kw).why is Why.NOT_ALONE


def test_admit_takes_other_limits() -> None:
    """A replay may try another margin: here none, where the default keeps 256 MiB."""

    def ok(limits: Limits) -> bool:
        available = GiB + 624 * MiB  # the head and A's growth, nothing to spare
        return admit(
            estimate=GiB, running=[A], available=available, total=24 * GiB, limits=limits
        ).ok

    assert not ok(DEFAULT)
    assert ok(Limits(margin_floors=0))


@pytest.mark.parametrize(
    ("decision", "text"),
    [
        (
            fit_of(700 * MiB, [A, B], 450 * MiB, 0),
            "needs ~700 MiB, 450 MiB free; 2 jobs running, expected to grow by 624 MiB",
        ),
        (
            fit_of(700 * MiB, [B], 4 * GiB, 256 * MiB),
            "needs ~700 MiB, 4 GiB free; 1 job running; keeping 256 MiB spare",
        ),
        (
            fit_of(2 * GiB, [], GiB, 0),
            "needs ~2 GiB, 1 GiB free; starting anyway: no other guarded job is running",
        ),
        (fit_of(GiB, [], 2 * GiB, 0), "needs ~1 GiB, 2 GiB free; no other guarded job running"),
        (Admission(True, Why.FIRST), "no other guarded job running"),
        (slot_cap(2, 2), "all 2 slots in use (LTOGUARD_SLOTS)"),
        (slot_cap(1, 1), "all 1 slot in use (LTOGUARD_SLOTS)"),
        (slot_cap(1, 3), "1 of 3 slots in use"),
        (
            before_memory(running=1, alone=True, limit=None),
            "rerunning alone after running out of memory",
        ),
        (before_memory(running=0, alone=True, limit=None), "alone, after running out of memory"),
        (behind(3), "3 waiting ahead"),
    ],
)
def test_reasons_are_rendered_from_the_figures(decision: Admission | None, text: str) -> None:
    assert decision is not None
    assert decision.text == render(decision) == text


def test_only_the_head_tries() -> None:
    assert is_head(0)
    assert not is_head(1)
    assert behind(2) == Admission(False, Why.BEHIND, ahead=2)
    assert not behind(2).names_estimate


@pytest.mark.parametrize(
    ("ahead", "tried", "lent", "out", "expected"),
    [
        (0, False, False, 0, Lend.FIRST_TRY),  # the head tries once with its token
        (0, True, False, 0, Lend.LEND),  # told "no" once: it lends
        (1, False, False, 0, Lend.LEND),  # behind one, within the depth of 2
        (2, False, False, 0, Lend.TOO_FAR),
        (1, True, True, 0, Lend.LENT),
        (1, False, False, 1, Lend.LEND),
        (1, False, False, 2, Lend.TOKENS_OUT),  # the depth's worth is out already
        (0, True, False, 5, Lend.TOKENS_OUT),
    ],
)
def test_lending(ahead: int, tried: bool, lent: bool, out: int, expected: Lend) -> None:
    got = lending(ahead=ahead, tried=tried, lent=lent, depth=2, tokens_out=out)
    assert got is expected
    counted: list[int] = []

    def count() -> int:
        counted.append(1)
        return out

    assert lending(ahead=ahead, tried=tried, lent=lent, depth=2, tokens_out=count) is expected
    # Counting lists the state directory: only when the count decides.
    assert bool(counted) is (expected in (Lend.LEND, Lend.TOKENS_OUT))


@pytest.mark.parametrize(
    ("lent", "out", "expected"),
    [
        (False, 0, Lend.LEND),
        (False, 1, Lend.LEND),
        (False, 2, Lend.TOKENS_OUT),  # the depth's worth is out: one more would buy a waiter
        (True, 5, Lend.LENT),  # lent already (paused again before it took it back)
    ],
)
def test_lending_paused(lent: bool, out: int, expected: Lend) -> None:
    assert lending_paused(lent=lent, depth=2, tokens_out=out) is expected
    counted: list[int] = []

    def count() -> int:
        counted.append(1)
        return out

    assert lending_paused(lent=lent, depth=2, tokens_out=count) is expected
    assert bool(counted) is (not lent)


def test_outstanding() -> None:
    assert outstanding([]) == 0
    assert outstanding([A, B]) == 624 * MiB


def test_choose_victim_is_youngest_of_two_or_more() -> None:
    assert choose_victim([]) is None
    assert choose_victim([A]) is None
    assert choose_victim([A, B]) is B
    assert choose_victim([B, A]) is B
    c = job(3, GiB, GiB, 20.0)  # same start as B: the higher pid started later
    assert choose_victim([A, c, B]) is c


@pytest.mark.parametrize(
    ("available", "total", "expected"),
    [
        (255 * MiB, 24 * GiB, True),
        (256 * MiB, 24 * GiB, False),
        (24 * MiB, 1000 * MiB, True),  # small cgroup: 1/40 = 25 MiB
        (25 * MiB, 1000 * MiB, False),
        (0, 0, False),  # unknown size: no floor
        (0, 1, False),
    ],
)
def test_critical(available: int, total: int, expected: bool) -> None:
    assert critical(available, total) is expected


def test_floor_and_margin_scale() -> None:
    assert DEFAULT.critical_floor(24 * GiB) == 256 * MiB
    assert DEFAULT.critical_floor(1000 * MiB) == 25 * MiB
    assert DEFAULT.margin(24 * GiB) == 256 * MiB
    assert DEFAULT.margin(1000 * MiB) == 25 * MiB
    # Admission with the default margin never lands in the critical zone by itself.
    for total in (512 * MiB, 1000 * MiB, 4 * GiB, 64 * GiB):
        assert DEFAULT.margin(total) >= DEFAULT.critical_floor(total)


def test_limits_scale_floor_and_margin() -> None:
    small = Limits(critical_floor_max=64 * MiB, critical_floor_divisor=20, margin_floors=2)
    assert small.critical_floor(24 * GiB) == 64 * MiB
    assert small.critical_floor(1000 * MiB) == 50 * MiB
    assert small.margin(1000 * MiB) == 100 * MiB
    assert critical(49 * MiB, 1000 * MiB, small) and not critical(50 * MiB, 1000 * MiB, small)


def test_a_fast_fall_of_free_memory_raises_the_floor_a_pause_keeps() -> None:
    me = Running(pid=2, estimate=100 * MiB, current=100 * MiB, started=2.0)
    older = Running(pid=1, estimate=GiB, current=GiB, started=1.0)
    total = 4 * GiB  # floor 102 MiB
    kw: dict[str, Any] = {"me": me, "others": [older], "total": total, "paused": False}
    assert pause_step(available=200 * MiB, **kw) is KEEP
    assert pause_step(available=200 * MiB, falling=150 * MiB, **kw) is KEEP
    assert pause_step(available=200 * MiB, falling=250 * MiB, **kw) is PAUSE
    # Falling fast never stops a compile by itself: only the critical floor does.
    assert pause_step(available=101 * MiB, **kw) is KILL
    assert pause_step(available=103 * MiB, falling=GiB, **kw) is PAUSE
    assert floor_now(total, 0) == DEFAULT.critical_floor(total) == 4 * GiB // 40
    # A paused job resumes only once the floor the fall asks for is free as well.
    paused = dict(kw, paused=True, paused_for=5.0)
    room = DEFAULT.critical_floor(total) + DEFAULT.margin(total)
    assert pause_step(available=room, **paused) is RESUME
    assert pause_step(available=room, falling=room, **paused) is KEEP


def test_a_young_compile_is_watched_often() -> None:
    assert DEFAULT.watch_interval(0.0) == DEFAULT.fast_watch < DEFAULT.watch
    assert DEFAULT.watch_interval(DEFAULT.fast_watch_for - 0.01) == DEFAULT.fast_watch
    assert DEFAULT.watch_interval(DEFAULT.fast_watch_for) == DEFAULT.watch
    # Once the oldest, nothing a check decides changes for it: the slow rate.
    assert DEFAULT.watch_interval(0.0, settled=True) == DEFAULT.watch


def test_near_the_floor_a_compile_is_watched_sooner() -> None:
    later = DEFAULT.fast_watch_for + 1.0
    assert DEFAULT.watch_interval(later, tight=True) == DEFAULT.tight_watch < DEFAULT.watch
    assert DEFAULT.watch_interval(0.0, tight=True) == DEFAULT.fast_watch  # as often as ever
    assert DEFAULT.watch_interval(later, settled=True, tight=True) == DEFAULT.watch
    total = GiB
    floor = DEFAULT.critical_floor(total)
    me = job(2, 100 * MiB, 90 * MiB, started=2.0)  # 10 MiB still to grow
    older = job(1, 500 * MiB, 500 * MiB, started=1.0)
    near = 10 * MiB + int(DEFAULT.tight_floors * floor) - MiB
    assert near_the_floor(me, [older], near, total)
    assert not near_the_floor(me, [older], near + 2 * MiB, total)
    # Falling fast, the floor a pause keeps is higher: so is "near".
    assert near_the_floor(me, [older], near + 2 * MiB, total, falling=2 * floor)
    # Paused, only the critical floor stops it: near is within that many of it.
    paused = replace(me, paused=True)
    assert near_the_floor(paused, [older], int(DEFAULT.tight_floors * floor) - MiB, total)
    assert not near_the_floor(paused, [older], int(DEFAULT.tight_floors * floor) + MiB, total)


def test_a_fall_seen_sooner_counts_as_over_the_regular_interval() -> None:
    """A tight check sees the fall of 0.1 s: the pause keeps what it kept when the
    checks came every 0.25 s (that fall, scaled), not less."""
    later = DEFAULT.fast_watch_for + 1.0
    assert fall_per_watch(10 * MiB, DEFAULT.tight_watch, later) == 25 * MiB
    assert fall_per_watch(10 * MiB, DEFAULT.watch, later) == 10 * MiB
    assert fall_per_watch(10 * MiB, 2 * DEFAULT.watch, later) == 10 * MiB  # a late check
    assert fall_per_watch(10 * MiB, DEFAULT.fast_watch, 0.5) == 10 * MiB  # its regular rate
    # Never scaled by more than a fast check's share (no division by a tiny time).
    assert fall_per_watch(10 * MiB, 0.0, later) == 50 * MiB


def test_the_oldest_holder_counts_paused_ones_too() -> None:
    me = Running(pid=5, estimate=MiB, current=0, started=20.0)
    older = Running(pid=9, estimate=MiB, current=0, started=10.0)
    younger = Running(pid=1, estimate=MiB, current=0, started=30.0)
    assert oldest(me, []) and oldest(me, [younger])
    assert not oldest(me, [older]) and not oldest(me, [replace(older, paused=True)])
    # Same start: the pid decides, as for the victim.
    assert not oldest(me, [replace(older, started=20.0, pid=4)])
