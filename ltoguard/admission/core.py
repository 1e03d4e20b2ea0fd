"""Admission's shared parts and the head's rules: the tunable numbers (`Limits`), a
running job as the rules see it (`Running`) and what it is expected to hold along
its learned curve, the decision (`Admission`, `Why`) and its human line, the FIFO
position, the slot cap or the CPUs, the rerun alone, the first job, and memory
(`fit`, `admit`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from ltoguard.curves import Curve
from ltoguard.sizes import MiB, format_size
from ltoguard.structs import struct


@struct(frozen=True)
class Limits:
    """The policy's tunable numbers; the defaults are what ltoguard runs with."""

    # Free memory below the critical floor means the OOM killer is close: room to
    # notice a fast-growing compile between two samples and act.
    critical_floor_max: int = 256 * MiB
    # The floor is at most this share of the bound's size: it must cover what a
    # compile grows between two checks, which come every `fast_watch` seconds while
    # it grows fastest and every `tight_watch` near the floor.
    critical_floor_divisor: int = 40
    # Free memory admission keeps after all estimates, in critical floors: thin, as a
    # pair that outgrows its estimates pauses rather than gets killed.
    margin_floors: float = 1.0
    # Seconds a paused job stays paused before free memory may resume it, so it
    # does not pause and resume in turn.
    min_pause: float = 1.0
    # Seconds between a running job's checks (pause_step), and in its first
    # ``fast_watch_for`` seconds, when a fat-LTO compile takes most of its peak.
    watch: float = 0.25
    fast_watch: float = 0.05
    fast_watch_for: float = 3.0
    # Later, while free memory is within this many of the floor a pause keeps after
    # what the running jobs are still expected to grow (steps.near_the_floor), the
    # checks come every ``tight_watch`` seconds: a compile can grow by more than the
    # critical floor within one ``watch``, and the kernel acts at 0, not at the floor.
    tight_floors: float = 3.0
    tight_watch: float = 0.1
    # A running job with a learned curve is expected to end within this many times
    # its learned length (its last slice held until then); later, it counts at its
    # estimate again.
    curve_slack: float = 1.2
    # A job holding more than its curve allows by this factor is off its curve.
    curve_tolerance: float = 1.1

    def watch_interval(self, age: float, settled: bool = False, tight: bool = False) -> float:
        """Seconds until the next check of a job that has run ``age`` seconds; the slow
        rate if ``settled`` (it ran with no older slot holder: steps.oldest never
        pauses), sooner than that while ``tight`` (steps.near_the_floor)."""
        if settled:
            return self.watch
        if age < self.fast_watch_for:
            return self.fast_watch
        return self.tight_watch if tight else self.watch

    def critical_floor(self, total: int) -> int:
        """Free memory below this is critical, under a bound of size ``total``."""
        return max(0, min(self.critical_floor_max, total // self.critical_floor_divisor))

    def margin(self, total: int) -> int:
        """Free memory admission keeps after all estimates."""
        return int(self.margin_floors * self.critical_floor(total))


DEFAULT = Limits()


@struct(frozen=True)
class Running:
    """A guarded job that holds a slot: its estimate and what it holds now (bytes)."""

    pid: int
    estimate: int
    current: int
    started: float  # time.time() when it was admitted
    paused: bool = False  # stopped (SIGSTOP) to leave room for older jobs; grows no more
    curve: Curve | None = None  # its memory over a run, learned (None: its estimate all along)
    ran: float = 0.0  # seconds its compile has run, pauses excluded
    alone: bool = False  # a rerun after an OOM kill: nothing may start beside it


def critical(available: int, total: int, limits: Limits = DEFAULT) -> bool:
    """Is free memory below the critical floor of a bound of size ``total``?"""
    return available < limits.critical_floor(total)


def floor_now(total: int, falling: int, limits: Limits = DEFAULT) -> int:
    """The floor a pause keeps: the critical floor, raised to what free memory fell by
    over a regular check (``falling`` bytes: steps.fall_per_watch), as memory falling
    that fast may fall as far again before the next; pausing then keeps it off the
    critical floor, where a compile is stopped and its work lost."""
    return max(limits.critical_floor(total), falling)


def outstanding(running: Sequence[Running], limits: Limits = DEFAULT) -> int:
    """Memory the running jobs are still expected to take on top of what they hold:
    the most they are expected to hold at once from now on, less what they hold."""
    return max(0, held_together(running, limits) - sum(r.current for r in running))


def expected(r: Running, t: float, limits: Limits = DEFAULT) -> int:
    """Bytes ``r`` is expected to hold ``t`` seconds from now: its estimate all along
    (or what it holds, if more) without a curve or while paused; with a curve, the
    curve scaled to its estimate (what it holds, if more) until its learned end, its
    last slice until ``curve_slack`` times that, then nothing."""
    flat = max(r.current, r.estimate)
    if r.curve is None or r.paused or off_curve(r, limits):
        return flat
    x = r.ran + t
    share = r.curve.share(x)
    if share is None:
        if x >= r.curve.seconds * limits.curve_slack:
            return 0
        share = r.curve.shape[-1]
    return max(r.current, int(r.estimate * share))


def off_curve(r: Running, limits: Limits = DEFAULT) -> bool:
    """Does the job hold more now than its curve allows at this point of its run, or
    run past its expected end? Then this run does not follow the curve (it rises
    sooner or higher, or runs slower), and it is expected at its estimate all along."""
    if r.curve is None:
        return False
    if r.ran >= r.curve.seconds * limits.curve_slack:
        return True  # ran past its expected end: it may hold on for a while yet
    share = r.curve.share(r.ran)
    allowed = r.estimate * (r.curve.shape[-1] if share is None else share)
    return r.current > allowed * limits.curve_tolerance


def held_together(jobs: Sequence[Running], limits: Limits = DEFAULT) -> int:
    """The most ``jobs`` are expected to hold at once from now on (bytes). Each job's
    expectation steps only where its curve's slices begin or it ends, so the sum is
    evaluated at those moments."""
    moments = {0.0}
    for r in jobs:
        if r.curve is not None and not r.paused:
            ends = (r.curve.seconds, r.curve.seconds * limits.curve_slack)
            moments.update(x - r.ran for x in (*r.curve.edges(), *ends) if x > r.ran)
    return max(sum(expected(r, t, limits) for r in jobs) for t in moments)


# -- admission -------------------------------------------------------------------


class Why(enum.Enum):
    """The rule that decided an admission."""

    BEHIND = "behind"  # others wait ahead in the queue: only the head may try
    ALONE = "alone"  # rerun after an OOM kill, nothing else runs: starts
    NOT_ALONE = "not alone"  # rerun after an OOM kill waits for the others to end
    BESIDE_ALONE = "beside alone"  # a rerun after an OOM kill runs: nothing starts beside it
    FIRST = "first"  # no other guarded job runs: starts, fits or not (liveness)
    SLOT_FREE = "slot free"  # under the slot cap (memory decides next)
    SLOTS_FULL = "slots full"  # LTOGUARD_SLOTS jobs run already
    CPUS_BUSY = "cpus busy"  # as many guarded jobs run (not paused) as there are CPUs
    FITS = "fits"  # estimate + the others' growth + margin fit in free memory
    NO_ROOM = "no room"  # they do not
    FITS_SWAP = "fits with swap"  # they fit once part of free swap counts (pressure low)
    PRESSURE = "pressure"  # sustained memory pressure holds new jobs until it falls
    BACKFILL = "backfill"  # not the head, but fits now and leaves the head's room (backfill)
    # Nothing guarded runs, but the build's ordinary compiles hold the memory it
    # lacks: waits for them (beside_compiles).
    COMPILING = "compiling"


@struct(frozen=True)
class Admission:
    """An admission decision and the figures it was made on (bytes; None: not read)."""

    ok: bool
    why: Why
    estimate: int | None = None  # the head's estimate
    available: int | None = None  # free memory now (what running jobs hold excluded)
    # What must be free beyond the head's estimate: the running jobs' growth still to
    # come; below zero when their learned curves end before the head's peak.
    reserved: int = 0
    margin: int = 0  # free memory kept after all that
    running: int = 0  # guarded jobs holding slots
    limit: int | None = None  # LTOGUARD_SLOTS
    ahead: int = 0  # waiters ahead in the queue
    pressure: float | None = None  # PSI avg10 (percent) that held the job
    pressure_kind: str = ""  # "full" or "some": which figure it was
    swap: int = 0  # free swap counted as room
    compiling: int = 0  # what the build's ordinary compiles hold (COMPILING)

    @property
    def names_estimate(self) -> bool:
        """Does `text` say the estimate already (a memory decision)?"""
        return self.estimate is not None and self.available is not None

    @property
    def text(self) -> str:
        """The human reason, one line."""
        return render(self)


def _jobs(n: int) -> str:
    return "1 job running" if n == 1 else f"{n} jobs running"


def render(d: Admission) -> str:
    """The human reason for an admission decision, made from its figures only."""
    if d.why is Why.BEHIND:
        return f"{d.ahead} waiting ahead"
    if d.why is Why.ALONE:
        return "alone, after running out of memory"
    if d.why is Why.NOT_ALONE:
        return "rerunning alone after running out of memory"
    if d.why is Why.BESIDE_ALONE:
        return "a job that ran out of memory is rerunning alone: waiting for it to end"
    if d.why is Why.SLOT_FREE:
        return f"{d.running} of {d.limit} slots in use"
    if d.why is Why.SLOTS_FULL:
        plural = "slot" if d.limit == 1 else "slots"
        return f"all {d.limit} {plural} in use (LTOGUARD_SLOTS)"
    if d.why is Why.CPUS_BUSY:
        cpus = "1 CPU" if d.limit == 1 else f"{d.limit} CPUs"
        return f"{_jobs(d.running)} on {cpus}: one more would only slow them"
    pressure = f"memory pressure {d.pressure or 0:.0f}% ({d.pressure_kind} avg10)"
    if d.estimate is None or d.available is None:
        if d.why is Why.PRESSURE:
            return f"{pressure}: waiting for it to fall"
        return "no other guarded job running"
    needs = f"needs ~{format_size(d.estimate)}, {format_size(d.available)} free"
    if d.why is Why.COMPILING:
        return (
            f"{needs}; no other guarded job running, but the build's other compiles hold"
            f" {format_size(d.compiling)}: waiting for them to end"
        )
    if d.why is Why.FIRST:
        if d.estimate + d.margin > d.available:
            return f"{needs}; starting anyway: no other guarded job is running"
        return f"{needs}; no other guarded job running"
    detail = f"{needs}; {_jobs(d.running)}"
    if d.reserved > 0:
        detail += f", expected to grow by {format_size(d.reserved)}"
    elif d.reserved < 0:
        together = format_size(d.estimate + d.reserved)
        detail += f", ending before its peak (~{together} needed beside it)"
    if d.margin:
        detail += f"; keeping {format_size(d.margin)} spare"
    if d.swap:
        detail += f"; counting {format_size(d.swap)} of free swap (memory pressure low)"
    if d.why is Why.PRESSURE:  # memory refuses it too (pressure_held)
        return f"{detail}; {pressure} as well"
    if d.why is Why.BACKFILL:
        beside = "the running job" if d.running == 1 else f"the {d.running} running jobs"
        return (
            f"started before {d.ahead} waiting ahead: fits beside {beside}"
            f" and leaves room for the head; {detail}"
        )
    return detail


def is_head(ahead: int) -> bool:
    """FIFO: only the waiter with nobody live ahead of it may try to be admitted."""
    return ahead == 0


def behind(ahead: int) -> Admission:
    """The "no" of a waiter with ``ahead`` live waiters before it."""
    return Admission(False, Why.BEHIND, ahead=ahead)


def slot_cap(running: int, limit: int | None) -> Admission:
    """LTOGUARD_SLOTS: at most ``limit`` guarded jobs at once (None: no cap)."""
    if limit is None or running < limit:
        return Admission(True, Why.SLOT_FREE, running=running, limit=limit)
    return Admission(False, Why.SLOTS_FULL, running=running, limit=limit)


def before_memory(
    *,
    running: int,
    alone: bool,
    limit: int | None,
    beside_alone: bool = False,
    busy: int = 0,
    cpus: int | None = None,
) -> Admission | None:
    """The rules that need no memory reading, in order: the rerun alone after an
    OOM kill, and nothing beside one (``beside_alone``: a running job is such a
    rerun), the first job (nothing runs: it starts, as no guarded job would ever
    free memory for it), the slot cap, and without one (``limit`` None: auto) the
    CPUs: with ``busy`` jobs running (not paused) on as many ``cpus``, one more
    would take no CPU of its own, only slow them (and their learned curves) and
    hold memory. None: memory decides (`fit`)."""
    if alone:
        return Admission(
            running == 0, Why.ALONE if running == 0 else Why.NOT_ALONE, running=running
        )
    if beside_alone and running > 0:
        return Admission(False, Why.BESIDE_ALONE, running=running)
    if running == 0:
        return Admission(True, Why.FIRST)
    cap = slot_cap(running, limit)
    if not cap.ok:
        return cap
    if limit is None and cpus is not None and busy >= cpus:
        return Admission(False, Why.CPUS_BUSY, running=busy, limit=cpus)
    return None


def beside_compiles(
    early: Admission, *, estimate: int, available: int, margin: int, compiling: int
) -> Admission:
    """A job about to start with no other guarded job running (``early``: FIRST, or
    ALONE after running out of memory) waits while it does not fit in free memory
    and the build's ordinary compiles hold memory (``compiling``: what they hold
    now). Started beside them, it or one of them is OOM-killed, and a killed library
    compile fails the build. No guarded job frees memory for it, but they do: they
    end. The first job starts where it would not fit even once they end (waiting
    cannot help); a rerun waits all the same (free memory just after the kill lags
    behind, and the kill showed that it does not fit beside them)."""
    need = estimate + margin
    if available >= need or compiling <= 0:
        return early
    if early.why is Why.FIRST and available + compiling < need:
        return early
    return Admission(False, Why.COMPILING, estimate, available, 0, margin, compiling=compiling)


def fit(
    *,
    estimate: int,
    running: Sequence[Running],
    available: int,
    margin: int,
    curve: Curve | None = None,
    limits: Limits = DEFAULT,
) -> Admission:
    """Does the head fit beside the running jobs? ``available`` is free memory now,
    so it already excludes what they hold. What must be free: the most the running
    jobs and the head are expected to hold at once from now on (`held_together`),
    less what the running jobs hold now, plus ``margin``. Without learned
    curves that is the head's estimate plus each running job's growth still to come
    (estimate minus current); with them, a head whose peak comes after the running
    jobs end needs less. With nothing running it starts all the same (FIRST, with the figures)."""
    if not running:
        return Admission(True, Why.FIRST, estimate, available, 0, margin)
    head = Running(pid=0, estimate=estimate, current=0, started=math.inf, curve=curve)
    held = sum(r.current for r in running)
    need = max(0, held_together([*running, head], limits) - held)
    ok = available >= need + margin
    why = Why.FITS if ok else Why.NO_ROOM
    return Admission(ok, why, estimate, available, need - estimate, margin, len(running))


def admit(
    *,
    estimate: int,
    running: Sequence[Running],
    available: int,
    total: int,
    limit: int | None = None,
    alone: bool = False,
    limits: Limits = DEFAULT,
    curve: Curve | None = None,
    compiling: int = 0,
    cpus: int | None = None,
) -> Admission:
    """May the head of the queue start now? Every rule in order, from figures alone
    (the policy applies the same rules, reading memory only when they need it).
    ``compiling``: what the build's ordinary compiles hold (`beside_compiles`)."""
    early = before_memory(
        running=len(running),
        alone=alone,
        limit=limit,
        beside_alone=any(r.alone for r in running),
        busy=sum(1 for r in running if not r.paused),
        cpus=cpus,
    )
    margin = limits.margin(total)
    if early is not None and early.why in (Why.FIRST, Why.ALONE):
        return beside_compiles(
            early, estimate=estimate, available=available, margin=margin, compiling=compiling
        )
    if early is not None:
        return early
    return fit(
        estimate=estimate,
        running=running,
        available=available,
        margin=margin,
        curve=curve,
        limits=limits,
    )
