"""A running job's step: keep, pause, resume or stop its compile, so the older jobs
finish without anybody being OOM-killed."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from ltoguard.admission.core import DEFAULT, Limits, Running, critical, floor_now, outstanding
from ltoguard.structs import replace, struct


def choose_victim(running: Sequence[Running]) -> Running | None:
    """The job to stop when memory is critical: the youngest, as it lost least work.

    None with fewer than two jobs: stopping the only job frees memory for nobody
    (it would just be started again), so it is left to run or be OOM-killed.
    """
    if len(running) < 2:
        return None
    return max(running, key=_age_key)


class Step(str, enum.Enum):
    """What a running guarded job does with its compile (pause_step)."""

    KEEP = "keep"
    PAUSE = "pause"
    RESUME = "resume"
    KILL = "kill"

    def __str__(self) -> str:
        return self.value


KEEP, PAUSE, RESUME, KILL = Step.KEEP, Step.PAUSE, Step.RESUME, Step.KILL


def _age_key(r: Running) -> tuple[float, int]:
    return (r.started, r.pid)


def oldest(me: Running, others: Sequence[Running]) -> bool:
    """No other slot holder (running or paused) is older than this job. The oldest
    job always runs: no step pauses or stops it, and a paused one resumes."""
    return not any(_age_key(r) < _age_key(me) for r in others)


def still_to_grow(me: Running, others: Sequence[Running], limits: Limits = DEFAULT) -> int:
    """What this job and the other running, not-paused jobs are still expected to
    take on top of what they hold (a paused job grows no more until it resumes)."""
    return outstanding([me, *(r for r in others if not r.paused)], limits)


def older_running(me: Running, others: Sequence[Running]) -> int:
    """How many running, not-paused jobs are older than this one."""
    return sum(1 for r in others if not r.paused and _age_key(r) < _age_key(me))


def should_pause(
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    limits: Limits = DEFAULT,
    falling: int = 0,
) -> bool:
    """Pause this (running) job? When free memory minus what the running jobs are
    still expected to grow would go below the critical floor, the youngest running
    job pauses, so the older ones finish without anybody being killed. Never with no
    older job running: pausing it would free memory for nobody."""
    if older_running(me, others) == 0:
        return False
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return False  # a younger running job pauses first
    return available - still_to_grow(me, others, limits) < floor_now(total, falling, limits)


def fall_per_watch(falling: int, elapsed: float, age: float, limits: Limits = DEFAULT) -> int:
    """What free memory fell by (``falling`` bytes) over the ``elapsed`` seconds since a
    job's last check, as a fall over its regular interval at its ``age``: a check
    near the floor comes sooner than that (``tight_watch``), and the pause keeps what
    it kept at the regular rate (``floor_now``)."""
    regular = limits.watch_interval(age)
    if elapsed >= regular:
        return falling
    return int(falling * regular / max(elapsed, limits.fast_watch))


@struct(frozen=True)
class Outlook:
    """What a job's check saw of the running, not-paused slot holders (unforeseen_fall)."""

    held: Mapping[int, int]  # what each held, by pid
    estimate: Mapping[int, int]  # each one's estimate, by pid
    room: int  # free memory less what they are still expected to grow (outstanding)
    free: int  # free memory


def outlook(running: Sequence[Running], available: int, limits: Limits = DEFAULT) -> Outlook:
    """The Outlook of ``running`` (every slot holder, paused ones included) with
    ``available`` bytes free."""
    live = [r for r in running if not r.paused]
    return Outlook(
        {r.pid: r.current for r in live},
        {r.pid: r.estimate for r in live},
        available - outstanding(live, limits),
        available,
    )


def unforeseen_fall(fell: int, before: Outlook | None, now: Outlook) -> int:
    """What of a fall in free memory (``fell`` bytes between two checks) was not
    foreseen: what the room (free memory less what the running jobs are still
    expected to grow) lost, plus, for each job, the part of its rise that would take
    it past its estimate if it rose as much again. A rise
    the jobs were expected to make leaves the room as it was: counted in the floor a
    pause keeps (floor_now) as well, it paused a pair that fits. Never more than
    ``fell``; all of it when the running jobs are not those of the last check (one
    started, ended, paused or resumed)."""
    if before is None or before.held.keys() != now.held.keys():
        return fell
    near = 0
    for pid, held in now.held.items():
        rise = max(0, held - before.held[pid])
        near += max(0, rise - max(0, now.estimate[pid] - held))
    return min(fell, max(0, before.room - now.room) + near)


def near_the_floor(
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    limits: Limits = DEFAULT,
    falling: int = 0,
) -> bool:
    """Is free memory, less what the running jobs are still expected to grow,
    within ``tight_floors`` times the floor a pause keeps? (For a paused job, which
    only a critical floor stops: free memory within that many critical floors.)
    Then the job is checked sooner (Limits.watch_interval): the pause and the stop
    act between two checks only if the memory left covers what the compiles take in
    between."""
    if me.paused:
        return available < limits.tight_floors * limits.critical_floor(total)
    room = available - still_to_grow(me, others, limits)
    return room < limits.tight_floors * floor_now(total, falling, limits)


def should_resume(
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused_for: float,
    limits: Limits = DEFAULT,
    falling: int = 0,
) -> bool:
    """Resume this (paused) job? At once when no older job holds a slot (they
    finished: the oldest job always runs); never while an older job is still paused
    (it resumes first: two resuming at once would grow together); at once when a
    younger one runs (it yields first); else when free memory covers everybody's
    growth, this job's included, with the admission margin to spare above the floor,
    after ``min_pause`` seconds paused (the margin and the wait keep it from pausing
    and resuming in turn)."""
    if oldest(me, others):
        return True
    if any(r.paused and _age_key(r) < _age_key(me) for r in others):
        return False  # an older paused job resumes first (else both grow at once)
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return True
    if paused_for < limits.min_pause:
        return False
    # Resumed, it grows along its curve again: judged as running.
    room = available - still_to_grow(replace(me, paused=False), others, limits)
    return room >= floor_now(total, falling, limits) + limits.margin(total)


def pause_step(
    *,
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused: bool,
    paused_for: float = 0.0,
    limits: Limits = DEFAULT,
    falling: int = 0,
) -> Step:
    """KEEP, PAUSE, RESUME or KILL for a running or paused job (``me``; ``others``:
    the other jobs holding slots). Free memory really critical: the youngest job of
    several is killed, paused or not (choose_victim), and a paused job that is not
    the victim stays paused; the oldest job is never left paused. ``falling``: bytes
    free memory fell by over a regular check (fall_per_watch; a pause keeps at least
    that)."""
    if paused and oldest(me, others):
        return Step.RESUME
    if critical(available, total, limits):
        return Step.KILL if choose_victim([me, *others]) is me else Step.KEEP
    if paused:
        resume = should_resume(me, others, available, total, paused_for, limits, falling)
        return Step.RESUME if resume else Step.KEEP
    pause = should_pause(me, others, available, total, limits, falling)
    return Step.PAUSE if pause else Step.KEEP
