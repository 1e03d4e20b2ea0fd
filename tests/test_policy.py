"""The admission policy of one job, without a semaphore: snapshots, memory and the
clock are made up, so each rule is pinned by a table."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ltoguard import memory as memory_mod
from ltoguard.admission import Admission, Why
from ltoguard.cgroups import Constraint
from ltoguard.configvalues import MemorySetting
from ltoguard.curves import Curve
from ltoguard.estimates import Basis
from ltoguard.jobs import Job, JobRecord
from ltoguard.memory import MemorySnapshot
from ltoguard.policy import COMPILING_PATIENCE, MEMORY_RECHECK, AdmissionPolicy, running_jobs
from ltoguard.pressure import Brake
from ltoguard.semaphore import Holder, Snapshot
from ltoguard.sizes import GiB, MiB
from ltoguard.structs import replace


def snap(*records: dict[str, Any] | None) -> Snapshot:
    """Slots 0..n-1 held, with these run records."""
    return Snapshot([Holder(k, rec) for k, rec in enumerate(records)], [])


@dataclass
class Memory:
    """Stands in for available_memory: a fixed answer, and every call counted."""

    available: int
    total: int = 8 * GiB
    calls: list[int] = field(default_factory=list)  # guarded_usage of each call

    def __call__(self, setting: object = None, *, guarded_usage: int = 0) -> MemorySnapshot:
        self.calls.append(guarded_usage)
        return MemorySnapshot(self.available, self.total, "test")


def make(
    estimate: int,
    basis: str = "history",
    *,
    available: int = 4 * GiB,
    total: int = 8 * GiB,
    slots: int | None = None,
    relearn: Callable[[], tuple[int, str, Curve | None]] | None = None,
    rss: Callable[[int], int] = lambda pid: 0,
    clock: Callable[[], float] = lambda: 0.0,
    compiling: Callable[[], int] = lambda: 0,
    cpus: int = 64,
) -> tuple[AdmissionPolicy, JobRecord, Memory]:
    job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, estimate, basis)
    memory = Memory(available, total)
    pol = AdmissionPolicy(
        record,
        slots=slots,
        memory=None,
        relearn=relearn,
        read_memory=memory,
        rss=rss,
        clock=clock,
        brake=Brake(None),  # no PSI: the host's pressure stays out of these tests
        read_swap=lambda *a, **k: 0,  # nor its swap
        compiling=compiling,  # nor the test runner's other processes
        cpus=cpus,  # nor its CPU count
    )
    return pol, record, memory


ONE = {"pid": 11, "estimate": GiB, "started": 1.0}


@pytest.mark.parametrize(
    ("estimate", "available", "running", "slots", "ok", "reason_part"),
    [
        # Nothing else runs: always start (no guarded job would free memory for it).
        (16 * GiB, 1 * GiB, (), None, True, "no other guarded job running"),
        # Fits beside one job that is still expected to grow by 1 GiB (rss 0).
        (1 * GiB, 3 * GiB, (ONE,), None, True, "1 job running"),
        # 1 GiB head + 1 GiB growth + margin 256 MiB > 2 GiB free.
        (1 * GiB, 2 * GiB, (ONE,), None, False, "expected to grow by 1 GiB"),
        # The slot cap decides before memory.
        (1 * MiB, 64 * GiB, (ONE,), 1, False, "all 1 slot in use (LTOGUARD_SLOTS)"),
        (1 * MiB, 64 * GiB, (ONE, ONE), 3, True, "2 jobs running"),
        # A record without an estimate counts as a job of the 2 GiB default.
        (1 * GiB, 3 * GiB, ({"pid": 12},), None, False, "expected to grow by 2 GiB"),
    ],
)
def test_admission_table(
    estimate: int,
    available: int,
    running: tuple[dict[str, Any], ...],
    slots: int | None,
    ok: bool,
    reason_part: str,
) -> None:
    pol, _record, _memory = make(estimate, available=available, total=24 * GiB, slots=slots)
    got = pol(snap(*running))
    assert got.ok is ok
    assert reason_part in got.text


def test_the_cpus_decide_before_memory_and_a_paused_job_holds_none() -> None:
    """Two jobs running on two CPUs: the head waits, and no memory is read for that
    (each holder's record says whether it is paused)."""
    pol, _record, memory = make(MiB, available=64 * GiB, cpus=2)
    got = pol(snap(ONE, dict(ONE, pid=12)))
    assert (got.ok, got.why) == (False, Why.CPUS_BUSY)
    assert memory.calls == []
    pol, _record, memory = make(MiB, available=64 * GiB, cpus=2)
    got = pol(snap(ONE, dict(ONE, pid=12, paused=True)))
    assert (got.ok, got.why) == (True, Why.FITS)
    assert memory.calls != []
    pol, _record, _memory = make(MiB, available=64 * GiB, cpus=3)
    assert pol(snap(ONE, dict(ONE, pid=12))).ok


def test_a_no_for_the_cpus_is_not_reused_once_a_running_job_paused() -> None:
    """A job that pauses frees no slot, so the set of running jobs is the same; the
    head decides again at once all the same (a "no" for memory is reused for
    MEMORY_RECHECK seconds, one for the CPUs is not)."""
    pol, _record, _memory = make(MiB, available=64 * GiB, cpus=2)
    other = dict(ONE, pid=12)
    assert pol(snap(ONE, other)).why is Why.CPUS_BUSY
    assert pol(snap(ONE, dict(other, paused=True))).why is Why.FITS
    pol, _record, memory = make(3 * GiB, available=2 * GiB, cpus=2)
    assert pol(snap(ONE)).why is Why.NO_ROOM
    memory.available = 64 * GiB
    assert pol(snap(ONE)).why is Why.NO_ROOM  # within MEMORY_RECHECK: reused


def test_a_rerun_alone_keeps_the_others_out() -> None:
    """Its run record says ``alone`` (the ticket's mark, passing.marked_alone): a job
    that fits beside it waits, and no memory is read for that."""
    pol, _record, memory = make(MiB, available=64 * GiB)
    assert pol(snap(ONE)).ok
    pol, _record, memory = make(MiB, available=64 * GiB)
    got = pol(snap(dict(ONE, alone=True)))
    assert (got.ok, got.why) == (False, Why.BESIDE_ALONE)
    assert memory.calls == []
    both = running_jobs(snap(ONE, dict(ONE, alone=True)), GiB, rss=lambda pid: 0)
    assert [r.alone for r in both] == [False, True]


def test_a_job_that_waited_for_the_slot_cap_learns_its_estimate_again_when_it_frees() -> None:
    """LTOGUARD_SLOTS=1: the job that held the slot left its peak; the one that waited
    starts first (nothing else runs) on what it learns then, which decides whether
    it waits for the build's compiles."""
    history = [(3 * GiB, "inputs", None)]
    pol, record, _memory = make(
        3 * GiB, "inputs", available=2 * GiB, total=24 * GiB, slots=1,
        relearn=lambda: history[-1], compiling=lambda: GiB,
    )  # fmt: skip
    assert pol(snap(ONE)).why is Why.SLOTS_FULL
    history.append((100 * MiB, "siblings", None))  # ONE ended and left its peak
    assert pol(snap()) == Admission(True, Why.FIRST)  # 100 MiB fits: no wait for the compiles
    assert (record.estimate, record.basis) == (100 * MiB, "siblings")


def test_alone_waits_for_an_empty_gate() -> None:
    pol, _record, memory = make(GiB)
    pol.again(2 * GiB, alone=True)
    assert pol(snap(ONE)) == Admission(False, Why.NOT_ALONE, running=1)
    assert memory.calls == []  # waiting for the others asks nothing of memory
    assert pol(snap()) == Admission(True, Why.ALONE)
    assert memory.calls == [0]  # once alone: does it fit beside the build's compiles?


@pytest.mark.parametrize("alone", [False, True], ids=["first", "rerun alone"])
def test_nothing_guarded_runs_but_the_builds_compiles_hold_the_memory(alone: bool) -> None:
    # 8 GiB: the margin is one critical floor, 204.8 MiB. Needs 1 GiB + the margin.
    looked: list[int] = []

    def compiling() -> int:
        looked.append(1)
        return 700 * MiB

    now = [0.0]
    pol, _record, memory = make(GiB, available=GiB, compiling=compiling, clock=lambda: now[0])
    if alone:
        pol.again(GiB, alone=True)
    got = pol(snap())
    assert not got.ok and got.why is Why.COMPILING and got.compiling == 700 * MiB
    assert got.text == (
        "needs ~1 GiB, 1 GiB free; no other guarded job running, but the build's"
        " other compiles hold 700 MiB: waiting for them to end"
    )
    assert pol(snap()) is got and len(memory.calls) == 1  # reused within MEMORY_RECHECK
    now[0] = MEMORY_RECHECK
    memory.available = 2 * GiB  # they ended
    again = pol(snap())
    assert again.ok and again.why is (Why.ALONE if alone else Why.FIRST)
    assert len(looked) == 1  # with room, the compiles are not looked up


def test_waiting_for_the_compiles_ends_after_its_patience() -> None:
    now = [0.0]
    pol, _record, _memory = make(GiB, available=GiB, compiling=lambda: GiB, clock=lambda: now[0])
    assert pol(snap()).why is Why.COMPILING
    now[0] = COMPILING_PATIENCE - 1
    assert pol(snap()).why is Why.COMPILING
    now[0] = COMPILING_PATIENCE
    assert pol(snap()) == Admission(True, Why.FIRST)  # as it did before the rule


def test_under_a_budget_the_compiles_show_in_real_free_memory() -> None:
    # LTOGUARD_MEMORY=2G: the budget left is 2 GiB (no guarded job holds any), but
    # the cgroup has 600 MiB free: the compiles hold the rest.
    def read(setting: object = None, *, guarded_usage: int = 0) -> MemorySnapshot:
        cgroup = Constraint(600 * MiB, 4 * GiB, "cgroup")
        return MemorySnapshot(2 * GiB, 2 * GiB, "budget", (cgroup,))

    pol, _record, _memory = make(GiB, compiling=lambda: GiB)
    pol.read_memory = read
    pol.memory = MemorySetting("2G", 2 * GiB)
    got = pol(snap())
    assert got.why is Why.COMPILING and got.available == 600 * MiB
    pol.memory = None  # auto: what it read is real free memory already
    pol.again(GiB, alone=False)
    assert pol(snap()) == Admission(True, Why.FIRST)


def test_the_estimate_is_learned_again_when_the_last_running_job_ends() -> None:
    learned: list[int] = []

    def relearn() -> tuple[int, str, Curve | None]:
        learned.append(1)
        return 100 * MiB, "siblings", None

    pol, record, _memory = make(
        3 * GiB // 2, "inputs", available=GiB, relearn=relearn, compiling=lambda: GiB
    )
    assert pol(snap()).why is Why.COMPILING and learned == []
    assert pol._last_no is not None
    pol._last_no = replace(pol._last_no, running=((0, "11-1.0"),))  # as if one had run then
    assert pol(snap()) == Admission(True, Why.FIRST)  # it ended: 100 MiB now fits
    assert learned == [1] and record.estimate == 100 * MiB


def test_a_slot_handed_to_the_next_job_counts_as_a_change() -> None:
    """One job ends and the head takes its slot between two looks: the same slot is
    held, by another job. The waiter must not reuse its last "no" for it, and learns
    its estimate again (the job that ended left its peak)."""
    history = [(3 * GiB, "inputs", None)]  # what relearning finds: nothing yet

    def relearn() -> tuple[int, str, Curve | None]:
        return history[-1]

    clock = [0.0]
    pol, record, _memory = make(
        3 * GiB, "inputs", available=2 * GiB, total=24 * GiB, relearn=relearn,
        clock=lambda: clock[0],
    )  # fmt: skip
    assert not pol(snap(ONE)).ok
    history.append((100 * MiB, "siblings", None))  # ONE ended and left its peak
    clock[0] = MEMORY_RECHECK / 2  # within the time a "no" is reused
    assert not pol(snap(ONE)).ok  # the same holder: the "no" is reused
    other = dict(ONE, pid=12, started=2.0)  # slot 0 again, another holder
    assert pol(snap(other)).ok
    assert (record.estimate, record.basis) == (100 * MiB, "siblings")


def test_the_first_job_starts_where_waiting_for_the_compiles_cannot_help() -> None:
    pol, _record, memory = make(2 * GiB, available=GiB, compiling=lambda: 700 * MiB)
    assert pol(snap()) == Admission(True, Why.FIRST)  # 1 GiB + 700 MiB < 2 GiB + margin
    assert memory.calls == [0]


def test_a_rerun_alone_short_even_without_the_compiles_waits_for_them_all_the_same() -> None:
    held = [700 * MiB]
    pol, _record, _memory = make(2 * GiB, available=GiB, compiling=lambda: held[0])
    pol.again(2 * GiB, alone=True)
    assert pol(snap()).why is Why.COMPILING  # 1 GiB + 700 MiB < 2 GiB + margin
    held[0] = 0
    pol.again(2 * GiB, alone=True)  # (forgets the "no" it reuses for MEMORY_RECHECK)
    assert pol(snap()) == Admission(True, Why.ALONE)  # nothing compiles: it runs


def test_once_alone_always_alone() -> None:
    # An OOM rerun that later stops itself (youngest of several) still reruns alone.
    pol, _record, _memory = make(GiB)
    pol.again(2 * GiB, alone=True)
    pol.again(3 * GiB, alone=False)
    assert pol(snap(ONE)).why is Why.NOT_ALONE


def test_again_raises_the_estimate_and_forgets_the_last_no() -> None:
    pol, record, memory = make(GiB, available=2 * GiB)
    assert not pol(snap(ONE)).ok
    pol.again(3 * GiB, alone=False)
    assert (record.estimate, record.basis) == (3 * GiB, "raised")
    pol(snap(ONE))
    assert len(memory.calls) == 2  # the earlier "no" was not reused
    pol.again(GiB, alone=False)  # never lowered
    assert record.estimate == 3 * GiB


def test_admission_records_the_memory_it_decided_on() -> None:
    pol, record, memory = make(GiB, available=3 * GiB, rss=lambda pid: 500 * MiB)
    assert pol(snap(ONE)).ok
    assert memory.calls == [500 * MiB]  # the running job's memory is passed as guarded usage
    assert record.available_at_admit == 3 * GiB
    assert record.budget == 3 * GiB + 500 * MiB
    assert record.mem_source == "test"


def test_the_default_estimate_scales_to_the_budget() -> None:
    pol, record, _memory = make(2 * GiB, "default", available=900 * MiB, total=1000 * MiB)
    assert pol(snap()).ok
    assert record.estimate == 500 * MiB  # half of a 1000 MiB bound
    assert record.ticket()["estimate"] == 500 * MiB  # what the run record will show


@pytest.mark.parametrize(
    ("basis", "learned", "expected"),
    [
        ("default", (700 * MiB, "siblings"), (700 * MiB, "siblings")),
        ("siblings", (800 * MiB, "history"), (800 * MiB, "history")),
        ("default", (2 * GiB, "default"), (2 * GiB, "default")),  # nothing new: kept
        ("history", (100 * MiB, "siblings"), (GiB, "history")),  # own history wins
        ("configured", (100 * MiB, "history"), (GiB, "configured")),
    ],
)
def test_a_waiting_job_relearns_from_siblings(
    basis: str, learned: tuple[int, str], expected: tuple[int, str]
) -> None:
    asked: list[int] = []

    def relearn() -> tuple[int, str, Curve | None]:
        asked.append(1)
        return (*learned, None)

    start = 2 * GiB if basis == "default" else GiB
    pol, record, _memory = make(start, basis, available=64 * GiB, total=64 * GiB, relearn=relearn)
    pol(snap(ONE))  # the running set is new to it: it asks the history again
    assert (record.estimate, record.basis) == expected
    assert bool(asked) is (basis in ("default", "siblings"))


def test_waiting_head_rereads_memory_only_when_it_may_have_changed() -> None:
    """The head asks every 50 ms; reading memory costs ~1-2 ms, so a "does not fit"
    is reused until a running job ends or MEMORY_RECHECK passes (waiting
    costs no CPU worth mentioning)."""
    clock = [1000.0]
    pol, _record, memory = make(GiB, available=100 * MiB, clock=lambda: clock[0])
    one = snap({"pid": 0, "estimate": GiB})
    two = snap(None, None)
    for _ in range(50):  # 2.5 s of polling at one instant: one read
        assert pol(one) == pol(one)
        assert not pol(one).ok
    assert len(memory.calls) == 1
    clock[0] += MEMORY_RECHECK / 2
    pol(one)
    assert len(memory.calls) == 1
    pol(two)  # the running set changed: read at once
    assert len(memory.calls) == 2
    pol(two)
    assert len(memory.calls) == 2
    clock[0] += MEMORY_RECHECK + 0.01  # memory may have moved: read again
    pol(two)
    assert len(memory.calls) == 3


def test_running_jobs_reads_records_defensively() -> None:
    seen: list[int] = []

    def rss(pid: int) -> int:
        seen.append(pid)
        return pid * MiB

    records = snap(
        {"pid": 5, "child": 7, "estimate": GiB, "started": 3.5},
        {"pid": "x", "estimate": "big"},  # another user's junk: counted, at the default
        None,
    )
    got = running_jobs(records, 2 * GiB, rss)
    assert [(r.pid, r.estimate, r.current, r.started) for r in got] == [
        (7, GiB, 7 * MiB, 3.5),
        (0, 2 * GiB, 0, 0.0),
        (0, 2 * GiB, 0, 0.0),
    ]
    assert seen == [7]  # only a real pid is read


def test_policy_module_reads_memory_through_available_memory() -> None:
    # The default reader is the real one (what a build uses).
    pol = AdmissionPolicy(
        JobRecord(Job(["x"], kind="run", name="x", what="run x", key="k", group="g"), 1, "x"),
        slots=None,
        memory=None,
    )
    assert pol.read_memory is memory_mod.available_memory


def test_running_jobs_reads_the_paused_flag() -> None:
    records = snap({"pid": 5, "paused": True}, {"pid": 6, "paused": "yes"}, {"pid": 7})
    got = running_jobs(records, GiB, lambda pid: 0)
    assert [r.paused for r in got] == [True, False, False]  # only a real true counts


@pytest.mark.parametrize(
    ("decision", "line"),
    [
        # A memory decision names the estimate already: only its basis is added.
        (
            Admission(False, Why.NO_ROOM, 700 * MiB, 450 * MiB, 0, 0, 2),
            "needs ~700 MiB, 450 MiB free; 2 jobs running; estimated from siblings",
        ),
        # Any other reason gets the estimate and its basis.
        (Admission(False, Why.BEHIND, ahead=3), "3 waiting ahead; needs ~700 MiB (siblings)"),
        (
            Admission(False, Why.SLOTS_FULL, running=1, limit=1),
            "all 1 slot in use (LTOGUARD_SLOTS); needs ~700 MiB (siblings)",
        ),
    ],
)
def test_the_waiting_line_is_made_from_the_decision(
    decision: Admission, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltoguard.guard import GuardedRun

    run = GuardedRun.__new__(GuardedRun)  # only what _announce reads
    run.job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    run.record = JobRecord(run.job, 700 * MiB, Basis.SIBLINGS)
    run.waiting = None
    run._announce(snap(), decision)
    run._announce(snap(), Admission(False, Why.BEHIND, ahead=1))  # once per job
    assert run.waiting == line
    err = capsys.readouterr().err
    assert err == f"ltoguard: crate w (bin) waits ({line}; running: none)\n"


def test_the_started_line_names_what_held_the_job_last(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Queued behind a job about to start, then held by the CPU rule once that one ran
    (the race a CI run hit): the waiting line says the first reason, true when said;
    the line cargo keeps says the one that held the job until it started."""
    from ltoguard import messages
    from ltoguard.guard import GuardedRun

    monkeypatch.setattr(messages, "_channel", messages.Channel(-1, False, True))
    run = GuardedRun.__new__(GuardedRun)  # only what _announce and _started read
    run.job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    run.record = JobRecord(run.job, 134 * MiB, Basis.INPUTS)
    run.waiting, run.held_by, run.told_wait = None, None, False
    run._announce(snap(), Admission(False, Why.BEHIND, ahead=1))
    cpu = Admission(False, Why.CPUS_BUSY, running=1, limit=1)
    run._announce(snap(), cpu)
    run._announce(snap(), cpu)
    run._started(6.1)
    assert run.waiting == "1 waiting ahead; needs ~134 MiB (inputs)"  # the first reason
    assert capsys.readouterr().err == (  # cargo keeps this line (its stderr out of reach)
        "ltoguard: crate w (bin) waited 6.1s before it started (1 job running on 1 CPU:"
        " one more would only slow them; needs ~134 MiB (inputs))\n"
    )


def test_the_started_line_gives_the_basis_of_the_figure_it_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused on the inputs' estimate, then admitted once a sibling's peak rescaled it:
    the line names the refusal's figure, so it names that figure's basis (the demo
    said "needs ~367 MiB ...; estimated from siblings, scaled by inputs" of a figure
    drawn from the inputs alone)."""
    from ltoguard import messages
    from ltoguard.guard import GuardedRun

    monkeypatch.setattr(messages, "_channel", messages.Channel(-1, False, True))
    run = GuardedRun.__new__(GuardedRun)  # only what _announce and _started read
    run.job = Job(["rustc"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    run.record = JobRecord(run.job, 367 * MiB, Basis.INPUTS)
    run.waiting, run.held_by, run.told_wait = None, None, False
    run._announce(snap(), Admission(False, Why.NO_ROOM, 367 * MiB, 300 * MiB, 0, 0, 1))
    run.record.estimate, run.record.basis = 250 * MiB, Basis.SIBLINGS_SCALED  # relearned
    run._started(13.7)
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ltoguard: crate w (bin) waited 13.7s before it started"
        " (needs ~367 MiB, 300 MiB free; 1 job running; estimated from inputs)"
    )


def test_basis_values_are_what_records_and_events_hold() -> None:
    assert [b.value for b in Basis] == [
        "history",
        "siblings, scaled by inputs",
        "siblings",
        "history, other toolchain",
        "siblings, other toolchain",
        "inputs",
        "default",
        "configured",
        "raised",
    ]
    assert {b for b in Basis if b.relearnable} == {
        Basis.DEFAULT,
        Basis.INPUTS,
        Basis.SIBLINGS,
        Basis.SIBLINGS_SCALED,
        Basis.HISTORY_OTHER_TOOLCHAIN,
        Basis.SIBLINGS_OTHER_TOOLCHAIN,
    }
    assert json.dumps({"b": Basis.SIBLINGS_SCALED}) == '{"b": "siblings, scaled by inputs"}'
    assert f"({Basis.RAISED})" == "(raised)" and Basis("raised") is Basis.RAISED
