"""Memory pressure and swap: sustained pressure holds admissions and pauses the
youngest job; free swap counts as room unless pressure is high."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ltoguard.admission.core import DEFAULT, Admission, Limits, Running, Why, critical, fit
from ltoguard.admission.steps import (
    Step,
    _age_key,
    choose_victim,
    older_running,
    oldest,
    pause_step,
)
from ltoguard.curves import Curve
from ltoguard.structs import replace, struct


@struct(frozen=True)
class PressureLimits:
    """When memory pressure (PSI avg10, percent) holds and pauses jobs, and how much
    free swap counts as room; the defaults are what ltoguard runs with."""

    # full: every task stalled on memory at once; a few percent of that is the
    # build waiting for its own pages: the start of thrashing.
    high_full: float = 5.0
    # some: at least one task stalled; light swapping stays well below this.
    high_some: float = 40.0
    # The brake lets go only below both of these, so it does not flap at the edge.
    low_full: float = 1.0
    low_some: float = 10.0
    # Readings in a row above "high" before the brake holds: one spike is not thrash.
    sustained: int = 2
    # Share of free swap admission may count: the rest is for what everything else
    # gets pushed out meanwhile.
    swap_share: float = 0.5
    # A pair may overflow its bound by at most this share of the bound's size: a
    # fat-LTO compile leaves part of its memory untouched for long stretches, and
    # that part swaps cheaply; where it does not, memory pressure rises and the brake
    # pauses the youngest job.
    swap_overflow_share: float = 1.0


DEFAULT_PRESSURE = PressureLimits()


class Level(enum.Enum):
    """One memory pressure reading, against PressureLimits."""

    NONE = "none"  # no PSI here: the pressure and swap rules do nothing
    LOW = "low"  # below both low thresholds: free swap may count as room
    MID = "mid"  # between: the brake keeps its state
    HIGH = "high"  # above a high threshold


def pressure_level(
    some10: float | None, full10: float | None, limits: PressureLimits = DEFAULT_PRESSURE
) -> Level:
    """The level of one reading (None: no PSI)."""
    if some10 is None or full10 is None:
        return Level.NONE
    if full10 >= limits.high_full or some10 >= limits.high_some:
        return Level.HIGH
    if full10 < limits.low_full and some10 < limits.low_some:
        return Level.LOW
    return Level.MID


def braking(was: bool, recent: Sequence[Level], limits: PressureLimits = DEFAULT_PRESSURE) -> bool:
    """Does the brake hold after these readings (oldest first)? It takes hold after
    ``sustained`` HIGH readings in a row and lets go at the first LOW one, or when
    PSI cannot be read."""
    if not recent or recent[-1] is Level.NONE:
        return False
    if was:
        return recent[-1] is not Level.LOW
    n = max(1, limits.sustained)
    return len(recent) >= n and all(level is Level.HIGH for level in recent[-n:])


def pressure_figure(
    some10: float, full10: float, limits: PressureLimits = DEFAULT_PRESSURE
) -> tuple[float, str]:
    """The figure to name: whichever of full and some is nearer its high threshold."""
    if full10 * limits.high_some >= some10 * limits.high_full:
        return full10, "full"
    return some10, "some"


def pressure_hold(
    *,
    brake: bool,
    some10: float,
    full10: float,
    running: int,
    limits: PressureLimits = DEFAULT_PRESSURE,
) -> Admission | None:
    """The head waits while the brake holds; None: memory decides (fit). Asked only
    with a job running: the first job starts regardless (before_memory)."""
    if not brake:
        return None
    value, kind = pressure_figure(some10, full10, limits)
    return Admission(False, Why.PRESSURE, running=running, pressure=value, pressure_kind=kind)


def swap_counted(swap_free: int, total: int, limits: PressureLimits = DEFAULT_PRESSURE) -> int:
    """Free swap that may count as room under a bound of size ``total``: a share of
    it, and at most the overflow a pair may take. The caller asks only when pressure
    allows it (admission: not HIGH; a running job: not braking)."""
    if swap_free <= 0 or total <= 0:
        return 0
    return max(0, int(min(swap_free * limits.swap_share, total * limits.swap_overflow_share)))


def fit_with_swap(
    *,
    estimate: int,
    running: Sequence[Running],
    available: int,
    margin: int,
    swap: int,
    curve: Curve | None = None,
    limits: Limits = DEFAULT,
) -> Admission:
    """fit, and on a "no", again with ``swap`` (swap_counted) on top of free memory."""
    d = fit(
        estimate=estimate,
        running=running,
        available=available,
        margin=margin,
        curve=curve,
        limits=limits,
    )
    return with_swap(d, swap)


def pressure_held(hold: Admission, memory: Admission) -> Admission:
    """The brake's "no" (``hold``, kept: its ticket says pressure, so nobody passes),
    carrying the memory decision's figures when free memory (swap counted where it
    would be) refuses the job as well: the job would wait without the pressure too,
    and its line says what it needs."""
    if memory.ok or memory.estimate is None or memory.available is None:
        return hold
    return replace(
        hold,
        estimate=memory.estimate,
        available=memory.available,
        reserved=memory.reserved,
        margin=memory.margin,
        running=memory.running,
    )


def with_swap(decision: Admission, swap: int) -> Admission:
    """`fit`'s "no" (``decision``) asked again with ``swap`` (swap_counted) on top of
    free memory; any other decision as it is."""
    d = decision
    if d.ok or d.why is not Why.NO_ROOM or swap <= 0 or d.estimate is None or d.available is None:
        return d
    if d.available + swap < d.estimate + d.reserved + d.margin:
        return d
    return replace(d, ok=True, why=Why.FITS_SWAP, swap=swap)


def pressure_step(
    *,
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused: bool,
    paused_for: float = 0.0,
    swap: int = 0,
    brake: bool = False,
    limits: Limits = DEFAULT,
    falling: int = 0,
) -> Step:
    """pause_step with memory pressure and swap: ``swap`` (swap_counted) counts as
    free memory; while the brake holds, the youngest running job of several pauses
    and a paused one stays paused (the oldest always runs; critical memory still
    kills the youngest). With no swap and no brake it is pause_step."""
    if not brake:
        return pause_step(
            me=me,
            others=others,
            available=available + swap,
            total=total,
            paused=paused,
            paused_for=paused_for,
            limits=limits,
            falling=falling,
        )
    if paused and oldest(me, others):
        return Step.RESUME
    if critical(available + swap, total, limits):
        return Step.KILL if choose_victim([me, *others]) is me else Step.KEEP
    if paused:
        return Step.KEEP
    youngest = not any(not r.paused and _age_key(r) > _age_key(me) for r in others)
    # One job paused for pressure at a time: PSI's 10 s average falls slowly, and
    # pausing the next youngest at each check would stop all but the oldest.
    if any(r.paused for r in others):
        return Step.KEEP
    return Step.PAUSE if youngest and older_running(me, others) else Step.KEEP
