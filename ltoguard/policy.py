"""The admission policy of one guarded job: may it start beside the running ones?

The semaphore calls the policy, under its mutex, whenever the job is at the head of
the queue, and its `backfill` while the job waits among the nearest behind it. The
policy gathers the facts (the running jobs' estimates and current memory, free
memory, the job's own estimate, freshly learned if a sibling finished meanwhile)
and applies ltoguard.admission's rules, reading memory only when they need it.
It owns the estimate of its job (kept in the job's record, so the record written at
admission shows it) and a short cache of its last "no", because reading memory
costs more than the decision and the head decides again whenever a slot frees.

Memory, learning and the clock are passed in, so the policy is tested without a
semaphore or a machine in a given state.
"""

from __future__ import annotations

import time

from ltoguard import curves
from ltoguard.admission import (
    DEFAULT,
    Admission,
    Head,
    Level,
    Limits,
    Running,
    Why,
    backfill,
    before_memory,
    behind,
    beside_compiles,
    fit,
    pressure_held,
    pressure_hold,
    swap_counted,
    with_swap,
)
from ltoguard.cgroups import cpus_here
from ltoguard.estimates import DEFAULT_ESTIMATE, Basis, default_estimate
from ltoguard.memory import available_memory, available_swap
from ltoguard.passing import passers
from ltoguard.pressure import Brake
from ltoguard.proctree import compiling_beside, job_memory
from ltoguard.semaphore import Snapshot
from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ltoguard.configvalues import MemorySetting
    from ltoguard.jobs import JobRecord
    from ltoguard.memory import MemorySnapshot

    ReadMemory = Callable[..., MemorySnapshot]  # available_memory's signature
    ReadSwap = Callable[..., int]  # available_swap's signature
    # (estimate, basis, the curve it is admitted with) from the history now
    Relearn = Callable[[], tuple[int, str, curves.Curve | None]]

MEMORY_RECHECK = 0.5  # seconds a waiting head reuses a "does not fit" (= FULL_RECHECK)
# Seconds a job with nothing guarded running waits for the build's ordinary compiles
# at most (they end; this bounds what was not foreseen), then starts as it used to.
COMPILING_PATIENCE = 600.0


# Who runs: each slot held, with the run holding it (Holder.run).
Held = tuple[tuple[int, str], ...]


def holding(snap: Snapshot) -> Held:
    """Who runs, as a waiter tells one moment from the next: by slot and run (a job
    that ended left its peak: estimates change)."""
    return tuple(sorted((h.slot, h.run) for h in snap.holders))


@struct
class _LastNo:
    running: Held  # who ran when it was decided
    when: float
    decision: Admission


def running_jobs(
    snap: Snapshot,
    default: int,
    rss: Callable[[int], int] = job_memory,
    now: Callable[[], float] = time.time,
) -> list[Running]:
    """The guarded jobs holding slots, from their records (estimate, start, learned
    curve, seconds paused) and their memory now. A record that says nothing counts
    as a job of ``default`` size."""
    out = []
    t = now()
    for h in snap.holders:
        rec = h.record or {}
        pid = rec.get("child") or rec.get("pid") or 0
        est = rec.get("estimate")
        started = _seconds(rec.get("started"))
        valid_pid = isinstance(pid, int) and pid > 0
        paused = rec.get("paused") is True
        ran = 0.0
        if started:
            since = _seconds(rec.get("paused_since"))
            ran = t - started - _seconds(rec.get("paused_s")) - (t - since if since else 0.0)
        out.append(
            Running(
                pid=pid if valid_pid else 0,
                estimate=est if isinstance(est, int) else default,
                current=rss(pid) if valid_pid else 0,
                started=started,
                paused=paused,
                curve=curves.parse(rec.get("curve")),
                ran=max(0.0, ran),
                alone=rec.get("alone") is True,
            )
        )
    return out


def rerun_running(snap: Snapshot) -> bool:
    """Does a running job rerun alone after an OOM kill (its record says so)?"""
    return any((h.record or {}).get("alone") is True for h in snap.holders)


def busy(snap: Snapshot) -> int:
    """How many running jobs are not paused (their records say so)."""
    return sum(1 for h in snap.holders if (h.record or {}).get("paused") is not True)


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def head_of(tickets: Sequence[tuple[str, dict[str, Any]]], snap: Snapshot) -> Head | None:
    """The head as the waiters behind it see it: from its ticket (``tickets``: the
    waiters ahead, head first, name and fields) and the running jobs that passed it.
    None when its ticket names no estimate."""
    name, fields = tickets[0]
    estimate = fields.get("estimate")
    if not isinstance(estimate, int) or isinstance(estimate, bool) or estimate <= 0:
        return None
    by = fields.get("passed_by")
    seen = {p for p in by if isinstance(p, str)} if isinstance(by, list) else set()
    return Head(
        estimate,
        refused=fields.get("refused") == Why.NO_ROOM.value,
        passed=len(seen | passers(snap, name)),
        alone=any(t.get("alone") is True for _, t in tickets),
    )


class AdmissionPolicy:
    """Called as ``policy(snapshot) -> Admission`` (ltoguard.admission's decision)."""

    def __init__(
        self,
        record: JobRecord,
        *,
        slots: int | None,
        memory: MemorySetting | None,
        relearn: Relearn | None = None,
        read_memory: ReadMemory = available_memory,
        rss: Callable[[int], int] = job_memory,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits = DEFAULT,
        brake: Brake | None = None,
        read_swap: ReadSwap = available_swap,
        compiling: Callable[[], int] = compiling_beside,
        cpus: int | None = None,
    ) -> None:
        self.record = record
        self.slots = slots
        self.memory = memory
        self.relearn = relearn
        self.read_memory = read_memory
        self.rss = rss
        self.clock = clock
        self.limits = limits
        self.alone = False  # rerunning after an OOM kill: only with nothing else running
        self.cpus = cpus  # None: read at the first decision
        self._last_no: _LastNo | None = None
        # Made at the first decision beside a running job: finding the PSI file reads
        # the cgroup tables, which a job that starts at once never needs.
        self.brake = brake
        self.read_swap = read_swap
        self._backfill_held: Held | None = None
        self.compiling = compiling
        self._compiling_since: float | None = None  # when it first waited for them

    def __call__(self, snap: Snapshot) -> Admission:
        early = before_memory(
            running=snap.running,
            alone=self.alone,
            limit=self.slots,
            beside_alone=rerun_running(snap),
            busy=busy(snap),
            cpus=self._cpus() if snap.running and self.slots is None else None,
        )
        # Re-read at once when the set of running jobs changes (one ended: memory
        # freed), else at most every MEMORY_RECHECK seconds.
        held = holding(snap)
        now = self.clock()
        last = self._last_no
        if early is not None:
            if not early.ok:
                # Kept so that the change is seen when a slot frees (the estimate is
                # learned again: the job that ended left its peak).
                self._last_no = _LastNo(held, now, early)
                return early
            if (again := self._recent(held, now)) is not None:
                return again
            if last is not None and last.running != held:
                self.refresh_estimate()  # the last running job ended meanwhile
            return self._alone(early, held, now)
        if (again := self._recent(held, now)) is not None:
            return again
        if last is None or last.running != held:
            self.refresh_estimate()
        return self._decide(snap, held, now)

    def _recent(self, held: Held, now: float) -> Admission | None:
        """The last "no", if the same jobs run and it is under MEMORY_RECHECK old; not
        one for the CPUs (a running job may have paused since, with no slot freed)."""
        last = self._last_no
        if last is None or last.running != held or now - last.when >= MEMORY_RECHECK:
            return None
        return None if last.decision.why is Why.CPUS_BUSY else last.decision

    def _cpus(self) -> int:
        if self.cpus is None:
            self.cpus = cpus_here()
        return self.cpus

    @property
    def may_backfill(self) -> bool:
        """Could the job ever start before the head? Not with one slot or one CPU
        (admission.backfill), so then it waits without polling."""
        return (self.slots is None or self.slots > 1) and self._cpus() > 1

    def backfill(
        self, snap: Snapshot, tickets: Sequence[tuple[str, dict[str, Any]]], ahead: int
    ) -> Admission:
        """May the job start before the head, ``ahead`` places behind it
        (admission.backfill)? Memory is read only when the head's ticket says it was
        refused for memory and may be passed."""
        head = head_of(tickets, snap)
        if head is None or not head.refused or head.alone or self.alone or not snap.holders:
            return behind(ahead)
        if rerun_running(snap):
            return behind(ahead)  # nothing starts beside a rerun alone
        if self._pressure().on:
            return behind(ahead)  # sustained pressure holds every admission
        held = holding(snap)
        if held != self._backfill_held:
            self._backfill_held = held
            self.refresh_estimate()
        running, usage, mem = self._read(snap)
        decision = backfill(
            estimate=self.record.estimate,
            head=head,
            ahead=ahead,
            running=running,
            available=mem.available,
            total=mem.total,
            limit=self.slots,
            alone=self.alone,
            cpus=self._cpus(),
            limits=self.limits,
            curve=self.record.curve,
        )
        if decision.ok:
            self._admitted_with(mem, usage)
        return decision

    def _pressure(self) -> Brake:
        """The brake, with memory pressure read now."""
        if self.brake is None:
            self.brake = Brake.here()
        self.brake.read()
        return self.brake

    def _read(self, snap: Snapshot) -> tuple[list[Running], int, MemorySnapshot]:
        """The running jobs, what they hold together, and free memory beside them."""
        running = running_jobs(snap, DEFAULT_ESTIMATE, self.rss)
        usage = sum(r.current for r in running)
        mem = self.read_memory(self.memory, guarded_usage=usage)
        self._saw(mem)
        return running, usage, mem

    def _alone(self, early: Admission, held: Held, now: float) -> Admission:
        """No other guarded job runs (FIRST, or ALONE after running out of memory): the
        job starts unless the build's ordinary compiles hold the memory it lacks
        (admission.beside_compiles); they are looked up only when it lacks memory,
        and not after COMPILING_PATIENCE seconds of waiting for them."""
        mem = self.read_memory(self.memory)
        self._saw(mem)
        margin = self.limits.margin(mem.total)
        estimate = self.record.estimate
        free = mem.available
        if self.memory is not None and self.memory.size > 0 and mem.constraints:
            # A budget (LTOGUARD_MEMORY=SIZE) counts the guarded jobs alone: the
            # compiles show in real free memory.
            free = min(c.available for c in mem.constraints)
        patient = self._compiling_since is None or now - self._compiling_since < COMPILING_PATIENCE
        decision = beside_compiles(
            early,
            estimate=estimate,
            available=free,
            margin=margin,
            compiling=self.compiling() if free < estimate + margin and patient else 0,
        )
        if decision.ok:
            self._admitted_with(mem, 0)
        else:
            if self._compiling_since is None:
                self._compiling_since = now
            self._last_no = _LastNo(held, now, decision)
        return decision

    def _decide(self, snap: Snapshot, held: Held, now: float) -> Admission:
        brake = self._pressure()
        hold = pressure_hold(
            brake=brake.on,
            some10=brake.last.some10 if brake.last else 0.0,
            full10=brake.last.full10 if brake.last else 0.0,
            running=snap.running,
            limits=brake.limits,
        )
        running, usage, mem = self._read(snap)
        decision = fit(
            estimate=self.record.estimate,
            running=running,
            available=mem.available,
            margin=self.limits.margin(mem.total),
            curve=self.record.curve,
            limits=self.limits,
        )
        # Swap counts unless pressure is high (light swapping, not thrash), and is read
        # only when RAM alone says no.
        if not decision.ok and brake.level in (Level.LOW, Level.MID):
            swap = swap_counted(self.read_swap(self.memory), mem.total, brake.limits)
            decision = with_swap(decision, swap)
        if hold is not None:
            # Sustained pressure holds every admission (and its ticket keeps waiters
            # from passing); where memory says no as well, the line says both.
            decision = pressure_held(hold, decision)
        if decision.ok:
            self._admitted_with(mem, usage)
        else:
            self._last_no = _LastNo(held, now, decision)
        return decision

    def _admitted_with(self, mem: MemorySnapshot, usage: int) -> None:
        """What memory looked like when the job was admitted (for the report)."""
        self.record.budget = mem.available + usage
        self.record.available_at_admit = mem.available
        self.record.mem_source = mem.source
        if mem.constraints:
            self.record.physical = min(c.available for c in mem.constraints) + usage

    def _saw(self, mem: MemorySnapshot) -> None:
        """A memory reading: the bound it decides against, and the default's scale."""
        self.record.limit_total, self.record.limit_source = mem.total, mem.source
        if self.record.basis == Basis.DEFAULT:
            self.record.estimate = default_estimate(mem.total)

    def read_bound(self) -> None:
        """Read memory once before queueing, so the ticket names the bound (and the
        default estimate its scale) from the start."""
        self._saw(self.read_memory(self.memory))

    def refresh_estimate(self) -> None:
        """A job that queued knowing little may learn from a sibling that finished meanwhile."""
        if self.relearn is None or not Basis(self.record.basis).relearnable:
            return
        estimate, basis, curve = self.relearn()
        if basis != Basis.DEFAULT:
            self.record.estimate, self.record.basis = estimate, basis
            self.record.curve = curve

    def again(self, estimate_at_least: int, *, alone: bool) -> None:
        """The job queues again after outgrowing its estimate: wait for at least this
        much (and, with ``alone``, for nothing else to run); no earlier "no" holds."""
        self.record.estimate = max(self.record.estimate, estimate_at_least)
        self.record.basis = Basis.RAISED
        self.record.curve = None  # this run left its curve: it is no guide any more
        self.alone = self.alone or alone  # once rerunning alone, alone for good
        self._last_no = None
