"""The admission policy of one guarded job: may it start beside the running ones?

The semaphore calls the policy, under its mutex, whenever the job is at the head of
the queue. The policy gathers the facts (the running jobs' estimates and current
memory, free memory, the job's own estimate, freshly learned if a sibling finished
meanwhile) and asks admission.py's pure rules. It owns the estimate of its job
(kept in the job's record, so the record written at admission shows it) and a short
cache of its last "no", because reading memory costs 1-2 ms and the head decides
every FULL_RECHECK seconds and whenever a slot frees.

Memory, learning and the clock are passed in, so the policy is tested without a
semaphore or a machine in a given state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ltoguard.admission import Running, admit, default_margin
from ltoguard.estimates import DEFAULT_ESTIMATE, default_estimate
from ltoguard.memory import available_memory
from ltoguard.proctree import job_memory
from ltoguard.semaphore import Snapshot, slot_limit_policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ltoguard.jobs import JobRecord
    from ltoguard.memory import MemorySnapshot

    ReadMemory = Callable[..., MemorySnapshot]  # available_memory's signature
    Relearn = Callable[[], tuple[int, str]]  # (estimate, basis) from the history now

MEMORY_RECHECK = 0.5  # seconds a waiting head reuses a "does not fit" (= FULL_RECHECK)
# Bases a job may still improve on while it waits: a sibling that finishes
# meanwhile knows more than the default, and the job's own history more than both.
_RELEARNABLE = (
    "default",
    "inputs",
    "siblings",
    "siblings, scaled by inputs",
    "history, other toolchain",
    "siblings, other toolchain",
)


@dataclass
class _LastNo:
    running: tuple[int, ...]  # the slots held when it was decided
    when: float
    reason: str


def running_jobs(
    snap: Snapshot, default: int, rss: Callable[[int], int] = job_memory
) -> list[Running]:
    """The guarded jobs holding slots, from their records (estimate, start) and their
    memory now. A record that says nothing counts as a job of ``default`` size."""
    out = []
    for h in snap.holders:
        rec = h.record or {}
        pid = rec.get("child") or rec.get("pid") or 0
        est = rec.get("estimate")
        started = rec.get("started")
        valid_pid = isinstance(pid, int) and pid > 0
        out.append(
            Running(
                pid=pid if valid_pid else 0,
                estimate=est if isinstance(est, int) else default,
                current=rss(pid) if valid_pid else 0,
                started=float(started) if isinstance(started, (int, float)) else 0.0,
                paused=rec.get("paused") is True,
            )
        )
    return out


class AdmissionPolicy:
    """Called as ``policy(snapshot) -> (admit?, human reason)``."""

    def __init__(
        self,
        record: JobRecord,
        *,
        slots: int | None,
        memory_setting: str | None,
        relearn: Relearn | None = None,
        read_memory: ReadMemory = available_memory,
        rss: Callable[[int], int] = job_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record = record
        self.slots = slots
        self.memory_setting = memory_setting
        self.relearn = relearn
        self.read_memory = read_memory
        self.rss = rss
        self.clock = clock
        self.alone = False  # rerunning after an OOM kill: only with nothing else running
        self._slot_cap = slot_limit_policy(slots) if slots is not None else None
        self._last_no: _LastNo | None = None

    def __call__(self, snap: Snapshot) -> tuple[bool, str]:
        if self.alone:
            if snap.running:
                return False, "rerunning alone after running out of memory"
            return True, "alone, after running out of memory"
        if snap.running == 0:
            return self._first(), "no other guarded job running"
        if self._slot_cap is not None:  # before memory: it costs nothing to read
            ok, why = self._slot_cap(snap)
            if not ok:
                return False, f"{why} (LTOGUARD_SLOTS)"
        # Re-read at once when the set of running jobs changes (one ended: memory
        # freed), else at most every MEMORY_RECHECK seconds.
        held = tuple(sorted(h.slot for h in snap.holders))
        now = self.clock()
        last = self._last_no
        if last is not None and last.running == held and now - last.when < MEMORY_RECHECK:
            return False, last.reason
        if last is None or last.running != held:
            self.refresh_estimate()
        return self._decide(snap, held, now)

    def _first(self) -> bool:
        """Nothing else runs: start (no guarded job would ever free memory for it);
        still read memory, for the estimate's scale and the report."""
        try:
            mem = self.read_memory(self.memory_setting)
        except ValueError:
            return True
        self._saw(mem)
        self._admitted_with(mem, 0)
        return True

    def _decide(self, snap: Snapshot, held: tuple[int, ...], now: float) -> tuple[bool, str]:
        running = running_jobs(snap, DEFAULT_ESTIMATE, self.rss)
        usage = sum(r.current for r in running)
        mem = self.read_memory(self.memory_setting, guarded_usage=usage)
        self._saw(mem)
        ok, reason = admit(
            head_estimate=self.record.estimate,
            running=running,
            available=mem.available,
            margin=default_margin(mem.total),
            slot_limit=self.slots,
        )
        if ok:
            self._admitted_with(mem, usage)
        else:
            self._last_no = _LastNo(held, now, reason)
        return ok, reason

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
        if self.record.basis == "default":
            self.record.estimate = default_estimate(mem.total)

    def read_bound(self) -> None:
        """Read memory once before queueing, so the ticket names the bound (and the
        default estimate its scale) from the start; a bad setting waits for later."""
        try:
            self._saw(self.read_memory(self.memory_setting))
        except ValueError:
            pass

    def refresh_estimate(self) -> None:
        """A job that queued knowing little may learn from a sibling that finished meanwhile."""
        if self.relearn is None or self.record.basis not in _RELEARNABLE:
            return
        estimate, basis = self.relearn()
        if basis != "default":
            self.record.estimate, self.record.basis = estimate, basis

    def again(self, estimate_at_least: int, *, alone: bool) -> None:
        """The job queues again after outgrowing its estimate: wait for at least this
        much (and, with ``alone``, for nothing else to run); no earlier "no" holds."""
        self.record.estimate = max(self.record.estimate, estimate_at_least)
        self.record.basis = "raised"
        self.alone = self.alone or alone  # once rerunning alone, alone for good
        self._last_no = None
