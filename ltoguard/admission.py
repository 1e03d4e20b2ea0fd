"""Admission decisions for guarded jobs: pure functions over numbers, no I/O.

The semaphore gathers the facts (a MemorySnapshot, the running jobs and their
sampled memory, the head of the queue's estimate) and asks here whether the head
may start, which job to stop when memory runs out, and what counts as running out.
A running job asks here (`pause_step`) whether to pause itself before memory runs
out, to resume, or to stop itself because it ran out all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ltoguard.sizes import MiB, format_size

# Below this much free memory the OOM killer is close. A fat-LTO rustc can grow by
# tens of MB within one 100 ms sample, so the floor leaves room to notice and act;
# 10% keeps a small cgroup (1000 MiB -> 100 MiB) from being "critical" all the time.
CRITICAL_FLOOR_MAX = 256 * MiB


@dataclass(frozen=True)
class Running:
    """A guarded job that holds a slot: its estimate and what it holds now (bytes)."""

    pid: int
    estimate: int
    current: int
    started: float  # time.time() when it was admitted
    paused: bool = False  # stopped (SIGSTOP) to leave room for older jobs; grows no more


def critical_floor(total: int) -> int:
    """min(256 MiB, 10% of the bound's size): free memory below this is critical."""
    return max(0, min(CRITICAL_FLOOR_MAX, total // 10))


def default_margin(total: int) -> int:
    """Free memory admission keeps after all estimates: the critical floor itself.

    Estimates already lead the measured peaks (by 10% from history, more from the
    cold estimate), and a pair that outgrows them after all pauses its younger job
    (pause_step) before memory turns critical. Measured (gen workspace, two ~400
    MiB fat-LTO jobs): at 1.5 x the floor the two paired only from a 1050 MiB cap
    up, though plain cargo fitted both with ~240 MiB to spare at 950 MiB; at 1 x
    they paired from 1000 MiB up, with 0 OOM kills, and where a warm pair was
    admitted at the edge its younger job paused instead (~10 s, no loss against
    running them one after the other).
    """
    return critical_floor(total)


def outstanding(running: Sequence[Running]) -> int:
    """Memory the running jobs are still expected to take on top of what they hold."""
    return sum(max(0, r.estimate - r.current) for r in running)


def _jobs(n: int) -> str:
    return "1 job running" if n == 1 else f"{n} jobs running"


def admit(
    *,
    head_estimate: int,
    running: Sequence[Running],
    available: int,
    margin: int,
    slot_limit: int | None,
) -> tuple[bool, str]:
    """May the job at the head of the queue start now? Returns (yes, human reason).

    ``available`` is free memory now, so it already excludes what running jobs
    hold; their remaining growth (estimate minus current, per job) is reserved on
    top of the head's estimate and ``margin``. With no guarded job running the head
    always starts: no guarded job would ever free memory for it, so waiting could
    last forever (liveness); the reason says so when it does not fit.
    ``slot_limit`` (LTOGUARD_SLOTS=N) caps the count.
    """
    if slot_limit is not None and slot_limit < 1:
        raise ValueError(f"slot_limit must be at least 1, not {slot_limit}")
    needs = f"needs ~{format_size(head_estimate)}, {format_size(available)} free"
    if not running:
        if head_estimate + margin > available:
            return True, f"{needs}; starting anyway: no other guarded job is running"
        return True, f"{needs}; no other guarded job running"
    if slot_limit is not None and len(running) >= slot_limit:
        return False, f"{_jobs(len(running))}, the limit is {slot_limit} (LTOGUARD_SLOTS)"
    reserved = outstanding(running)
    fits = available >= head_estimate + reserved + margin
    detail = f"{needs}; {_jobs(len(running))}"
    if reserved:
        detail += f", expected to grow by {format_size(reserved)}"
    if margin:
        detail += f"; keeping {format_size(margin)} spare"
    return fits, detail


def choose_victim(running: Sequence[Running]) -> Running | None:
    """The job to stop when memory is critical: the youngest, as it lost least work.

    None with fewer than two jobs: stopping the only job frees memory for nobody
    (it would just be started again), so it is left to run or be OOM-killed.
    """
    if len(running) < 2:
        return None
    return max(running, key=lambda r: (r.started, r.pid))


def critical(available: int, total: int) -> bool:
    """Is free memory below the critical floor of a bound of size ``total``?"""
    return available < critical_floor(total)


# What a running guarded job does with its compile (pause_step).
KEEP, PAUSE, RESUME, KILL = "keep", "pause", "resume", "kill"
MIN_PAUSE = 1.0  # seconds a job stays paused before free memory may resume it


def _age_key(r: Running) -> tuple[float, int]:
    return (r.started, r.pid)


def still_to_grow(me: Running, others: Sequence[Running]) -> int:
    """What this job and the other running, not-paused jobs are still expected to
    take on top of what they hold (a paused job grows no more until it resumes)."""
    return outstanding([me, *(r for r in others if not r.paused)])


def older_running(me: Running, others: Sequence[Running]) -> int:
    """How many running, not-paused jobs are older than this one."""
    return sum(1 for r in others if not r.paused and _age_key(r) < _age_key(me))


def should_pause(me: Running, others: Sequence[Running], available: int, total: int) -> bool:
    """Pause this (running) job? When free memory minus what the running jobs are
    still expected to grow would go below the critical floor, the youngest running
    job pauses, so the older ones finish without anybody being killed. Never with no
    older job running: pausing it would free memory for nobody."""
    if older_running(me, others) == 0:
        return False
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return False  # a younger running job pauses first
    return available - still_to_grow(me, others) < critical_floor(total)


def should_resume(
    me: Running, others: Sequence[Running], available: int, total: int, paused_for: float
) -> bool:
    """Resume this (paused) job? At once when no older job holds a slot (they
    finished: the oldest job always runs); never while an older job is still paused
    (it resumes first: two resuming at once would grow together); at once when a
    younger one runs (it yields first); else when free memory covers everybody's
    growth, this job's included, with the admission margin to spare above the floor,
    after MIN_PAUSE seconds paused (the margin and the wait keep it from pausing and
    resuming in turn)."""
    if not any(_age_key(r) < _age_key(me) for r in others):
        return True
    if any(r.paused and _age_key(r) < _age_key(me) for r in others):
        return False  # an older paused job resumes first (else both grow at once)
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return True
    if paused_for < MIN_PAUSE:
        return False
    room = available - still_to_grow(me, others)
    return room >= critical_floor(total) + default_margin(total)


def pause_step(
    *,
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused: bool,
    paused_for: float = 0.0,
) -> str:
    """KEEP, PAUSE, RESUME or KILL for a running or paused job (``me``; ``others``:
    the other jobs holding slots). Free memory really critical: the youngest job of
    several is killed, paused or not (choose_victim), and a paused job that is not
    the victim stays paused; the oldest job is never left paused."""
    oldest = not any(_age_key(r) < _age_key(me) for r in others)
    if paused and oldest:
        return RESUME
    if critical(available, total):
        return KILL if choose_victim([me, *others]) is me else KEEP
    if paused:
        return RESUME if should_resume(me, others, available, total, paused_for) else KEEP
    return PAUSE if should_pause(me, others, available, total) else KEEP
