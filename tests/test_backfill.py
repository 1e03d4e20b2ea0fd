"""Backfill: a waiter behind a head that cannot start for memory starts before it
when it fits now and leaves the head its room (admission.backfill), in the pure
rule, the policy, the replay and real processes."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from ltoguard import admission
from ltoguard.admission import (
    BACKFILL_DEPTH,
    BACKFILL_PASSES,
    BACKFILL_RUNNING,
    Head,
    Limits,
    Running,
    Why,
    backfill,
)
from ltoguard.cgroups import usable_cpus
from ltoguard.jobs import Job, JobRecord
from ltoguard.memory import MemorySnapshot
from ltoguard.policy import AdmissionPolicy, head_of
from ltoguard.pressure import Brake
from ltoguard.semaphore import Holder, Snapshot
from ltoguard.sizes import GiB, MiB
from ltoguard.structs import replace
from scripts import simulate
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc, read_log, wait_for
from tests.test_simulate import event  # recorded under 1000 MiB, 100 MiB held by the rest

TOTAL = 1000 * MiB
LIMITS = Limits(critical_floor_divisor=10)  # margin: one critical floor, 100 MiB


def big(current: int = 400 * MiB, estimate: int = 500 * MiB, pid: int = 1) -> Running:
    return Running(pid=pid, estimate=estimate, current=current, started=float(pid))


def rule(**kw: Any) -> admission.Admission:
    """The case every test starts from: one 500 MiB job running (400 MiB now), 300
    MiB free, a 500 MiB head refused for memory, a 100 MiB waiter one place behind."""
    args: dict[str, Any] = dict(
        estimate=100 * MiB,
        head=Head(500 * MiB, refused=True),
        ahead=1,
        running=[big()],
        available=300 * MiB,
        total=TOTAL,
        limits=LIMITS,
    )
    args.update(kw)
    return backfill(**args)


def test_a_small_job_passes_a_head_that_cannot_start() -> None:
    d = rule()
    assert d.ok and d.why is Why.BACKFILL
    # needs 100 + growth 100 + margin 100 <= 300 free; the head (500) fits beside it
    # once the running job ends: 500 + 100 + 100 <= 300 + 400.
    assert (d.estimate, d.available, d.reserved, d.margin, d.running, d.ahead) == (
        100 * MiB,
        300 * MiB,
        100 * MiB,
        100 * MiB,
        1,
        1,
    )
    assert d.text == (
        "started before 1 waiting ahead: fits beside the running job and leaves room for"
        " the head; needs ~100 MiB, 300 MiB free; 1 job running, expected to grow by 100 MiB;"
        " keeping 100 MiB spare"
    )
    two = rule(running=[big(), big(0, 0, pid=2)], ahead=3)
    assert two.ok and two.text.startswith("started before 3 waiting ahead: fits beside the 2")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"head": Head(500 * MiB, refused=False)}, id="a: head not refused for memory"),
        pytest.param({"estimate": 101 * MiB}, id="b: does not fit now"),
        pytest.param({"head": Head(601 * MiB, refused=True)}, id="c: head would not fit beside it"),
        pytest.param(
            {"head": Head(500 * MiB, refused=True, alone=True)}, id="d: head reruns alone"
        ),
        pytest.param({"alone": True}, id="d: it reruns alone itself"),
        pytest.param(
            {"running": [replace(big(), alone=True)]}, id="d: the running job reruns alone"
        ),
        pytest.param({"limit": 1}, id="d: slot cap"),
        pytest.param({"cpus": 1}, id="every CPU busy"),
        pytest.param(
            {"head": Head(500 * MiB, refused=True, passed=BACKFILL_PASSES)}, id="head passed enough"
        ),
        pytest.param({"ahead": 0}, id="the head itself"),
        pytest.param({"ahead": BACKFILL_DEPTH + 1}, id="too far behind"),
        pytest.param({"running": []}, id="nothing runs: the head starts"),
        pytest.param(
            {"running": [big(), big(111 * MiB, 100 * MiB, pid=2)], "estimate": 0},
            id="a running job outgrew its estimate",
        ),
    ],
)
def test_each_condition_can_refuse(change: dict[str, Any]) -> None:
    d = rule(**change)
    assert not d.ok and d.why is Why.BEHIND
    assert d.text == f"{d.ahead} waiting ahead"


def test_the_edges_of_the_inequalities_pass() -> None:
    assert rule(estimate=100 * MiB).ok  # b: 100 + 100 + 100 == 300
    assert rule(head=Head(600 * MiB, refused=True), estimate=0).ok  # c: 600+0+100 == 700
    assert rule(limit=2, cpus=2, head=Head(500 * MiB, True, passed=BACKFILL_PASSES - 1)).ok


def test_a_running_job_may_hold_its_estimate_and_a_curves_tolerance_more() -> None:
    """Backfill rests on the running jobs' estimates: while one holds more than its
    estimate by more than `Limits.curve_tolerance` (1.1), nobody passes the head."""
    within = [big(), big(109 * MiB, 100 * MiB, pid=2)]
    assert rule(running=within, estimate=0).ok
    assert rule(running=[big(), big(109 * MiB, 0, pid=2)], estimate=0).ok  # no estimate
    assert not rule(running=[big(), big(111 * MiB, 100 * MiB, pid=2)], estimate=0).ok
    assert rule(running=[big(), big(111 * MiB, 100 * MiB, pid=2)], estimate=0,
                limits=Limits(critical_floor_divisor=10, curve_tolerance=1.2)).ok  # fmt: skip


def test_a_generic_build_stops_fewer_compiles_without_passing_beside_an_outgrown_job() -> None:
    """The generic kind's cold build at 872 MiB (bins predicted 4-7 x low): waiters
    passed the head beside a job holding five times its estimate, at their own low
    estimates, and were stopped (the build stopped 5 compiles). Replayed cold, no
    job passes then, and fewer are stopped."""
    path = Path(__file__).resolve().parent / "data" / "heldout" / "sweepG-generic-872MiB.jsonl"
    jobs = simulate.load_trace(path)
    res = simulate.simulate(jobs, 872 * MiB, estimates="cold")
    assert (res.kills, res.failed, res.backfills) == (0, 0, 0)
    assert res.stops <= 1


def test_a_byte_past_the_edges_refuses() -> None:
    small_head = Head(400 * MiB, refused=True)  # c allows 200 MiB: b's edge alone refuses
    assert rule(estimate=100 * MiB, head=small_head).ok
    assert not rule(estimate=100 * MiB + 1, head=small_head).ok  # b: 100 + 1 + 100 + 100 > 300
    assert not rule(head=Head(600 * MiB + 1, refused=True), estimate=0).ok  # c


def test_a_head_that_fits_once_one_of_two_jobs_ends_is_not_delayed() -> None:
    """With two jobs running, the head may start when either ends: passing it must
    leave it that start. Checking only "once all have ended" would let a stream of
    small jobs keep it out for ever."""
    small = Running(pid=2, estimate=200 * MiB, current=200 * MiB, started=2.0)
    running = [big(), small]
    # 400 MiB free, 100 MiB still to grow: the 300 MiB head (+ 100 margin) has 100
    # MiB too few now, and 100 MiB to spare once the 200 MiB job ends.
    args = dict(head=Head(300 * MiB, refused=True), running=running, available=400 * MiB)
    assert not rule(estimate=150 * MiB, **args).ok  # it would take those 100 MiB
    # ... though it fits now (150 + 100 + 100 <= 400), and once all have ended the
    # head would fit beside it (300 + 150 + 100 <= 400 + 600): not enough.
    assert rule(estimate=100 * MiB, **args).ok  # this one leaves the head its room


def test_with_too_many_running_nobody_backfills() -> None:
    many = [big(0, MiB, pid=k) for k in range(BACKFILL_RUNNING + 1)]
    assert not rule(running=many, available=900 * MiB, estimate=MiB).ok
    assert rule(running=many[:-1], available=900 * MiB, estimate=MiB).ok


def _head_starts_after(
    order: list[Running], n_ended_max: int, *, me: Running | None, **kw: Any
) -> int:
    """How many of the running jobs (ending in ``order``) must end before admission.admit
    lets the head start; ``me``, if given, runs all along. Ended jobs grew to their
    estimates first, so what they free is what they hold at most."""
    for ended in range(n_ended_max + 1):
        gone = order[:ended]
        left = order[ended:] + ([me] if me is not None else [])
        freed = sum(r.current for r in gone)  # they grew by their growth, then freed it all
        d = admission.admit(
            estimate=kw["head"],
            running=left,
            available=kw["available"] + freed,
            total=TOTAL,
            limit=kw["limit"],
        )
        if d.ok:
            return ended
    return n_ended_max + 1


def test_on_estimates_a_backfill_never_delays_the_head_whatever_ends_first() -> None:
    """Checked against admission.admit itself: over random running sets, estimates
    and slot caps, whenever the rule lets a job pass, the head starts after no more
    jobs have ended, in every order they may end in, than it would have without it."""
    rng = random.Random(7)
    passed = 0
    for _ in range(6000):
        n = rng.randint(1, 4)
        running = []
        for k in range(n):
            est = rng.randint(1, 60) * 10 * MiB
            running.append(Running(k + 1, est, rng.randint(0, 70) * 10 * MiB, float(k)))
        head = rng.randint(1, 80) * 10 * MiB
        mine = rng.randint(0, 40) * 10 * MiB
        grow = sum(max(0, r.estimate - r.current) for r in running)
        available = max(0, rng.randint(0, 1000) * MiB - sum(r.current for r in running)) + grow // 2
        limit = rng.choice([None, None, n + 1, n + 2])
        refused = admission.admit(
            estimate=head, running=running, available=available, total=TOTAL, limit=limit
        )
        if refused.ok or refused.why is not Why.NO_ROOM:
            continue
        d = backfill(
            estimate=mine,
            head=Head(head, refused=True),
            ahead=1,
            running=running,
            available=available,
            total=TOTAL,
            limit=limit,
        )
        if not d.ok:
            continue
        passed += 1
        me = Running(99, mine, 0, 99.0)
        for order in itertools.permutations(running):
            kw = dict(head=head, available=available, limit=limit)
            without = _head_starts_after(list(order), n, me=None, **kw)
            with_me = _head_starts_after(list(order), n, me=me, **kw)
            assert with_me <= without, (running, head, mine, available, limit, order)
    assert passed > 100  # the rule let a job pass that often


# -- the policy ------------------------------------------------------------------


class Memory:
    def __init__(self, available: int, total: int = 8 * GiB) -> None:
        self.available, self.total, self.calls = available, total, 0

    def __call__(self, setting: object = None, *, guarded_usage: int = 0) -> MemorySnapshot:
        self.calls += 1
        return MemorySnapshot(self.available, self.total, "test")


def policy(
    estimate: int, available: int, slots: int | None = None
) -> tuple[AdmissionPolicy, Memory]:
    job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    memory = Memory(available)
    pol = AdmissionPolicy(
        JobRecord(job, estimate, "history"),
        slots=slots,
        memory=None,
        read_memory=memory,
        rss=lambda pid: GiB,
    )
    pol.cpus = 4
    pol.brake = Brake(None)  # no PSI: the host's pressure stays out of these tests
    return pol, memory


HOLDING = Snapshot([Holder(0, {"pid": 11, "estimate": 2 * GiB, "started": 1.0})], [])
HEAD = "q-00000000000000000001-1000-5.json"


def ticket(**fields: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(HEAD, dict({"estimate": 5 * GiB // 2, "refused": "no room"}, **fields))]


def test_the_policy_passes_a_head_its_ticket_says_was_refused_for_memory() -> None:
    # 8 GiB budget: 1 GiB + 1 GiB growth + 256 MiB margin <= 3 GiB free; the head (2.5
    # GiB) fits beside it once the running job (1 GiB now, 2 GiB at most) has ended.
    pol, memory = policy(GiB, 3 * GiB)
    d = pol.backfill(HOLDING, ticket(), 1)
    assert d.ok and d.why is Why.BACKFILL and memory.calls == 1
    assert pol.record.budget == 3 * GiB + GiB  # what it saw at admission, for the report


@pytest.mark.parametrize(
    "fields",
    [{"refused": "slots full"}, {"refused": None}, {"alone": True}, {"estimate": "3G"}],
)
def test_the_policy_reads_no_memory_unless_the_head_may_be_passed(fields: dict[str, Any]) -> None:
    pol, memory = policy(GiB, 3 * GiB)
    assert pol.backfill(HOLDING, ticket(**fields), 1).why is Why.BEHIND
    assert memory.calls == 0


def test_sustained_memory_pressure_holds_backfill_too(tmp_path: Path) -> None:
    pol, memory = policy(GiB, 3 * GiB)
    psi = tmp_path / "memory.pressure"
    psi.write_text("some avg10=50.00 avg60=1.00 avg300=1.00 total=1\n"
                   "full avg10=23.00 avg60=1.00 avg300=1.00 total=1\n")  # fmt: skip
    pol.brake = Brake(str(psi))
    assert pol.brake.read().value == "high" and not pol.brake.on
    assert pol.backfill(HOLDING, ticket(), 1).why is Why.BEHIND  # the second reading holds
    assert memory.calls == 0


def test_a_waiter_between_that_reruns_alone_is_never_passed() -> None:
    pol, _ = policy(GiB, 3 * GiB)
    between = ("q-00000000000000000002-1000-6.json", {"estimate": GiB, "alone": True})
    assert not pol.backfill(HOLDING, [*ticket(), between], 2).ok
    pol.alone = True
    assert not pol.backfill(HOLDING, ticket(), 1).ok


def test_passes_are_counted_from_the_ticket_and_the_running_jobs_that_passed() -> None:
    running = [Holder(0, {"pid": 11, "estimate": GiB, "started": 1.0})]
    running += [Holder(k, {"pid": 20 + k, "started": 2.0, "passed": HEAD}) for k in (1, 2)]
    snap = Snapshot(running, [])
    head = head_of(ticket(passed_by=["21-2.0", "9-1.0"]), snap)
    assert head is not None and head.passed == 3  # 9-1.0 ended; 21 and 22 run
    assert head.refused and not head.alone and head.estimate == 5 * GiB // 2
    assert head_of([(HEAD, {"estimate": True})], snap) is None


def test_one_slot_or_one_cpu_never_backfills_so_nobody_polls() -> None:
    pol, _ = policy(GiB, 3 * GiB)
    assert pol.may_backfill
    assert not policy(GiB, 3 * GiB, slots=1)[0].may_backfill
    pol.cpus = 1
    assert not pol.may_backfill


# -- the replay ------------------------------------------------------------------


def large_first(
    tmp_path: Path, smalls: int = 6, large_s: float = 10, small_s: float = 3
) -> list[simulate.TraceJob]:
    """cargo starts three large LTO jobs first (500 MiB; no two fit in 900 MiB), then
    small ones (100 MiB) that would fit beside one."""
    rows = [event(f"large{k}", 0.1 * k, large_s, 500) for k in range(3)]
    rows += [event(f"small{k}", 0.5 + 0.1 * k, small_s, 100) for k in range(smalls)]
    path = tmp_path / "large-first-1000MiB.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return simulate.load_trace(path)


def test_large_jobs_first_small_ones_pass_and_no_head_waits_longer(tmp_path: Path) -> None:
    fifo = simulate.simulate(large_first(tmp_path), 1000 * MiB, backfill=False)
    bf = simulate.simulate(large_first(tmp_path), 1000 * MiB, backfill=True)
    assert bf.backfills == 6 and fifo.backfills == 0
    # No job waits longer at the head (one poll of slack), the large ones included.
    for name, waited in bf.head_waits.items():
        assert waited <= fifo.head_waits[name] + simulate.TICK, name
    assert bf.row()["max_head_wait_s"] <= fifo.row()["max_head_wait_s"]
    # The LTO phase gets shorter: the small jobs ran beside the large ones.
    assert bf.wall < fifo.wall - 4  # 30.0 s against 34.6 s
    assert bf.wall == pytest.approx(30, abs=1.0)  # the three large ones, back to back
    # Every job finished, none killed or stopped.
    assert len(bf.head_waits) == 9 and bf.failed == 0
    assert (bf.kills, bf.stops) == (0, 0)
    assert bf.passed == {"large1": 4, "large2": 6}  # passing large1 passed large2 too


def test_more_small_jobs_than_fit_beside_the_large_ones(tmp_path: Path) -> None:
    """The small jobs left over run once the large ones are through; one that ends up
    at the head then may wait there in another situation than without backfill (here
    the last one, ~3 s instead of ~1.5 s), but no job that was passed waits longer,
    nor does anyone wait longer than the longest wait without backfill."""
    fifo = simulate.simulate(large_first(tmp_path, smalls=9), 1000 * MiB, backfill=False)
    bf = simulate.simulate(large_first(tmp_path, smalls=9), 1000 * MiB, backfill=True)
    for name in bf.passed:
        assert bf.head_waits[name] <= fifo.head_waits[name] + simulate.TICK, name
    assert bf.row()["max_head_wait_s"] <= fifo.row()["max_head_wait_s"]
    assert bf.wall < fifo.wall - 5 and bf.failed == 0 and len(bf.head_waits) == 12


def test_one_head_is_passed_at_most_backfill_passes_times(tmp_path: Path) -> None:
    """A 60 s large job and 1 s small ones: the rule would let them all pass the next
    large one; the bound stops it at BACKFILL_PASSES, and everything finishes."""
    jobs = large_first(tmp_path, smalls=30, large_s=60, small_s=1)
    res = simulate.simulate(jobs, 1000 * MiB, backfill=True)
    assert res.row()["max_passed"] == BACKFILL_PASSES
    assert res.passed["large1"] == BACKFILL_PASSES
    assert res.failed == 0 and len(res.head_waits) == 33
    unbounded = simulate.simulate(jobs, 1000 * MiB, backfill=True, passes=1000)
    assert unbounded.passed["large1"] > BACKFILL_PASSES


TRACES = sorted((Path(__file__).resolve().parent / "data" / "traces").glob("*.jsonl"))


@pytest.mark.parametrize("estimates", ["recorded", "history"])
@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_on_the_recorded_traces_nothing_gets_worse(path: Path, estimates: str) -> None:
    """Nor does the phase end much later: a job that starts before the head may hold
    the CPU the head would have started on (admission's CPU rule) for the rest of its
    run (docs/design.md, backfill: the one trace where it does)."""
    cap = simulate.cap_from_name(path)
    assert cap is not None
    fifo = simulate.simulate(simulate.load_trace(path), cap, estimates=estimates, backfill=False)
    bf = simulate.simulate(simulate.load_trace(path), cap, estimates=estimates, backfill=True)
    assert bf.wall <= max(fifo.wall + 0.5, fifo.wall * 1.035)
    assert (bf.kills, bf.stops, bf.failed) <= (fifo.kills, fifo.stops, fifo.failed)
    assert bf.row()["max_head_wait_s"] <= fifo.row()["max_head_wait_s"] + 0.5


def test_the_cli_flag(capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(TRACES[0].parent / "real-6-bins-600MiB.jsonl")
    assert simulate.main([trace, "--json", "--no-backfill"]) == 0
    assert simulate.main([trace, "--json"]) == 0
    off, on = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (off["backfill"], off["backfills"], on["backfill"]) == (False, 0, True)
    assert on["backfills"] >= 1 and "max_head_wait_s" in on


# -- real processes --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(usable_cpus() < 2, reason="nothing passes the head on one CPU")
def test_a_small_job_passes_a_large_head_that_cannot_start(tmp_path: Path, procs: Procs) -> None:
    """A large job runs; the next large one cannot start beside it (300 MiB budget);
    a small one queued after it starts at once, and the large head still starts the
    moment the first ends, while the small one runs."""
    state = tmp_path / "state"
    rustc = make_fake_rustc(tmp_path)
    env = clean_env(tmp_path, state, LTOGUARD_MEMORY="300M", LTOGUARD_SLOTS="auto")
    cfg = tmp_path / "xdg-config" / "ltoguard"
    cfg.mkdir(parents=True)
    cfg.joinpath("config.toml").write_text(
        '[crates.large1]\nmemory = "150M"\n[crates.large2]\nmemory = "150M"\n'
        '[crates.small]\nmemory = "40M"\n'
    )
    log = tmp_path / "log.jsonl"
    large1 = procs.holder(rustc, env, name="large1")
    head = procs.start(ltoguard_cmd(rustc, "large2"), dict(env, FAKE_NAME="large2"))
    assert head.stderr is not None and b"waits" in head.stderr.readline()  # refused: no room
    small = procs.holder(rustc, env, name="small")  # returns once its compile started
    assert [e["name"] for e in read_log(log) if e["what"] == "start"] == ["large1", "small"]
    names = sorted(p.name for p in state.iterdir() if p.name.startswith("run-"))
    records = [json.loads((state / n).read_text()) for n in names]
    (head_ticket,) = [p for p in state.iterdir() if p.name.startswith("q-")]
    assert [r["passed"] for r in records if r["crate"] == "small"] == [head_ticket.name]
    # The head says in its ticket why it waits, and, once it looked again, who passed it.
    small_id = next(f"{r['pid']}-{r['started']}" for r in records if r["crate"] == "small")

    def head_says() -> dict[str, Any]:
        try:
            return dict(json.loads(head_ticket.read_text()))
        except ValueError:
            return {}  # read while the head rewrote it

    assert head_says()["refused"] == "no room" and head_says()["estimate"] == 150 * MiB
    assert wait_for(lambda: head_says().get("passed_by") == [small_id], 5)
    large1.release()
    assert wait_for(
        lambda: any(e["name"] == "large2" and e["what"] == "start" for e in read_log(log)), 10
    )
    ends = {e["name"]: e["t"] for e in read_log(log) if e["what"] == "end"}
    starts = {e["name"]: e["t"] for e in read_log(log) if e["what"] == "start"}
    assert "small" not in ends  # the head started beside it
    assert starts["large2"] - ends["large1"] < 1.5  # not delayed: one poll and a start
    small.release()
    assert head.wait(timeout=30) == 0
    assert small.proc.wait(timeout=30) == 0


def test_a_backfilled_job_says_it_started_before_the_waiters_ahead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under cargo (its stderr out of reach: the line cargo may replay stays true)."""
    from ltoguard import messages
    from ltoguard.guard import GuardedRun

    monkeypatch.setattr(messages, "_channel", messages.Channel(-1, False, True))
    run = GuardedRun.__new__(GuardedRun)  # only what _started reads
    run.job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    run.record = JobRecord(run.job, 100 * MiB, "history")
    run.waiting, run.told_wait = "2 waiting ahead; needs ~100 MiB (history)", False
    run._started(3.25, rule(ahead=2))
    assert capsys.readouterr().err == (
        "ltoguard: crate w (bin) started before 2 waiting ahead: fits beside the running job"
        " and leaves room for the head; needs ~100 MiB, 300 MiB free; 1 job running,"
        " expected to grow by 100 MiB; keeping 100 MiB spare (waited 3.2s; estimated from"
        " history)\n"
    )
    run._started(1.0, admission.Admission(True, Why.FITS, 100 * MiB, 300 * MiB))
    assert capsys.readouterr().err == ""  # the wait was told once
