"""Every admission rule of ltoguard: pure functions over numbers, no I/O, no clock.

Who may try to start (only the head of the FIFO queue), which waiter lends cargo
its jobserver token, the slot cap (LTOGUARD_SLOTS), the rerun alone after an OOM
kill, the first job that always starts, whether the head fits in free memory, and
what a running job does with its compile (keep, pause, resume, stop). Each rule
returns its decision as data (`Admission`, `Lend`, `Step`) carrying the figures it
decided on; `Admission.text` renders the human line from them.

The I/O layers gather the facts and carry the decisions out: semaphore.py (queue
position, under its mutex), policy.py (memory, run records), lending.py (tokens
out), pause.py (signals). The tunable numbers live in `Limits`; every rule that
uses one takes a `Limits` (default `DEFAULT`), so a replay can try others.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ltoguard.curves import Curve
from ltoguard.sizes import MiB, format_size


@dataclass(frozen=True)
class Limits:
    """The policy's tunable numbers; the defaults are what ltoguard runs with."""

    # Free memory below the critical floor means the OOM killer is close: room to
    # notice a fast-growing compile between two samples and act.
    critical_floor_max: int = 256 * MiB
    # The floor is at most this share of the bound's size (600 MiB -> 15 MiB): it
    # must cover what a compile grows between two checks, and in its first seconds,
    # when it grows fastest, it is checked every FAST_WATCH seconds.
    critical_floor_divisor: int = 40
    # Free memory admission keeps after all estimates, in critical floors:
    # estimates lead the peaks already, and a pair that outgrows them pauses.
    margin_floors: float = 1.0
    # Seconds a paused job stays paused before free memory may resume it, so it
    # does not pause and resume in turn.
    min_pause: float = 1.0
    # Seconds between a running job's checks (pause_step), and in its first
    # ``fast_watch_for`` seconds, when a fat-LTO compile takes most of its peak.
    watch: float = 0.25
    fast_watch: float = 0.05
    fast_watch_for: float = 3.0
    # A running job with a learned curve is expected to end within this many times
    # its learned length (its last slice held until then); later, it pauses others.
    curve_slack: float = 1.2
    # A job holding more than its curve allows by this factor is off its curve.
    curve_tolerance: float = 1.1

    def watch_interval(self, age: float) -> float:
        """Seconds until the next check of a job that has run ``age`` seconds."""
        return self.fast_watch if age < self.fast_watch_for else self.watch

    def critical_floor(self, total: int) -> int:
        """Free memory below this is critical, under a bound of size ``total``."""
        return max(0, min(self.critical_floor_max, total // self.critical_floor_divisor))

    def margin(self, total: int) -> int:
        """Free memory admission keeps after all estimates."""
        return int(self.margin_floors * self.critical_floor(total))


DEFAULT = Limits()


@dataclass(frozen=True)
class Running:
    """A guarded job that holds a slot: its estimate and what it holds now (bytes)."""

    pid: int
    estimate: int
    current: int
    started: float  # time.time() when it was admitted
    paused: bool = False  # stopped (SIGSTOP) to leave room for older jobs; grows no more
    curve: Curve | None = None  # its memory over a run, learned (None: its estimate all along)
    ran: float = 0.0  # seconds its compile has run, pauses excluded


def critical(available: int, total: int, limits: Limits = DEFAULT) -> bool:
    """Is free memory below the critical floor of a bound of size ``total``?"""
    return available < limits.critical_floor(total)


def floor_now(total: int, falling: int, limits: Limits = DEFAULT) -> int:
    """The floor a pause keeps: the critical floor, raised to what free memory fell by
    since the last check (``falling`` bytes), as memory falling that fast may fall as
    far again before the next check; pausing then keeps it off the critical floor,
    where a compile is stopped and its work lost."""
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
    FIRST = "first"  # no other guarded job runs: starts, fits or not (liveness)
    SLOT_FREE = "slot free"  # under the slot cap (memory decides next)
    SLOTS_FULL = "slots full"  # LTOGUARD_SLOTS jobs run already
    FITS = "fits"  # estimate + the others' growth + margin fit in free memory
    NO_ROOM = "no room"  # they do not
    FITS_SWAP = "fits with swap"  # they fit once part of free swap counts (pressure low)
    PRESSURE = "pressure"  # sustained memory pressure holds new jobs until it falls
    BACKFILL = "backfill"  # not the head, but fits now and leaves the head's room (backfill)


@dataclass(frozen=True)
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
    if d.why is Why.SLOT_FREE:
        return f"{d.running} of {d.limit} slots in use"
    if d.why is Why.SLOTS_FULL:
        plural = "slot" if d.limit == 1 else "slots"
        return f"all {d.limit} {plural} in use (LTOGUARD_SLOTS)"
    if d.why is Why.PRESSURE:
        return (
            f"memory pressure {d.pressure or 0:.0f}% ({d.pressure_kind} avg10):"
            " waiting for it to fall"
        )
    if d.estimate is None or d.available is None:
        return "no other guarded job running"
    needs = f"needs ~{format_size(d.estimate)}, {format_size(d.available)} free"
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


def before_memory(*, running: int, alone: bool, limit: int | None) -> Admission | None:
    """The rules that need no memory reading, in order: the rerun alone after an
    OOM kill, the first job (nothing runs: it starts, as no guarded job would ever
    free memory for it), the slot cap. None: memory decides (`fit`)."""
    if alone:
        return Admission(
            running == 0, Why.ALONE if running == 0 else Why.NOT_ALONE, running=running
        )
    if running == 0:
        return Admission(True, Why.FIRST)
    cap = slot_cap(running, limit)
    return None if cap.ok else cap


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
    less what the running jobs hold now, plus ``margin``. Without learned curves that
    is the head's estimate plus each running job's growth still to come (estimate
    minus current); with them, a head whose peak comes after the running jobs end
    needs less. With nothing running it starts all the same (FIRST, with the figures)."""
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
) -> Admission:
    """May the head of the queue start now? Every rule in order, from figures alone
    (the policy applies the same rules, reading memory only when they need it)."""
    early = before_memory(running=len(running), alone=alone, limit=limit)
    if early is not None:
        return early
    margin = limits.margin(total)
    return fit(
        estimate=estimate,
        running=running,
        available=available,
        margin=margin,
        curve=curve,
        limits=limits,
    )


# -- backfill: a waiter behind a head that cannot start --------------------------

# At most this many jobs start before one head (see `backfill`): on estimates the
# rule never delays the head, so this bounds only what estimates get wrong.
BACKFILL_PASSES = 10
# With more jobs running than this, whether the head is delayed is not worked out
# (every set of them that may end first is tried): nobody backfills.
BACKFILL_RUNNING = 10
# Only the waiters this near the head try: each one that tries polls like the head.
BACKFILL_DEPTH = 8


@dataclass(frozen=True)
class Head:
    """What a waiter behind the head knows of it, from the tickets ahead of it."""

    estimate: int
    refused: bool  # its last attempt was refused for memory (NO_ROOM), not slots or alone
    passed: int = 0  # jobs that started before it while it waited (backfills)
    alone: bool = False  # it, or a waiter between it and this one, reruns alone


def leaves_room(
    *,
    estimate: int,
    head: int,
    running: Sequence[Running],
    available: int,
    margin: int,
    limit: int | None = None,
) -> bool:
    """Would the head start no later, on estimates, with a job of ``estimate`` started
    beside ``running`` now? Durations are not known, so every set of running jobs
    that may end first is tried.

    The head's spare once the set S has ended is
        s(S) = available - growth(running) - head - margin + sum(max(e, c) for S),
    (a running job frees at least what it holds or is expected to hold; growth is
    estimate minus current, each, as `fit` counts it without curves). Without this job the head starts
    after S once s(S) >= 0 (and a slot is free), and once all have ended whatever
    (FIRST). With it, s(S) - estimate >= 0 is needed (and a slot for one more).
    So for every S after which the head would start without it, it must start with
    it; for S = all that reads head + estimate + margin <= available + what the
    running jobs hold now."""
    n = len(running)
    if n > BACKFILL_RUNNING:
        return False
    # Flat growth, whatever the curves say: each job is credited below with at least
    # its estimate when it ends, so its growth must be counted the same way.
    growth = sum(max(0, r.estimate - r.current) for r in running)
    base = available - growth - head - margin
    frees = [max(r.estimate, r.current) for r in running]
    sums = {(0, 0)}  # (jobs ended, bytes they free), over every set of them
    for f in frees:
        sums |= {(k + 1, s + f) for k, s in sums}
    for ended, freed in sums:
        left = n - ended
        spare = base + freed
        alone_now = left == 0
        without = alone_now or (spare >= 0 and (limit is None or left < limit))
        with_me = spare >= estimate and (limit is None or left + 1 < limit)
        if without and not with_me:
            return False
    return True


def backfill(
    *,
    estimate: int,
    head: Head,
    ahead: int,
    running: Sequence[Running],
    available: int,
    total: int,
    limit: int | None = None,
    alone: bool = False,
    cpus: int | None = None,
    passes: int = BACKFILL_PASSES,
    depth: int = BACKFILL_DEPTH,
    limits: Limits = DEFAULT,
    curve: Curve | None = None,
) -> Admission:
    """May a waiter with ``ahead`` live waiters before it start now, before the head?

    Only while the head cannot start for memory (it tried and was refused NO_ROOM),
    if this job fits now beside the running jobs by `fit`'s rule, leaves the head
    its room (`leaves_room`: on estimates the head starts no later than it would
    have), a slot is free for it, fewer compiles run (not paused) than ``cpus`` (one
    more would slow the running ones, and the head with them), the head was passed
    fewer than ``passes`` times, and it is among the ``depth`` waiters nearest the
    head. A rerun alone after an OOM kill is never passed and never passes. Yes is
    BACKFILL (with `fit`'s figures), no is BEHIND."""
    no = behind(ahead)
    if alone or head.alone or not head.refused or head.passed >= passes or not running:
        return no
    if is_head(ahead) or ahead > depth:
        return no
    if limit is not None and len(running) >= limit:
        return no
    if cpus is not None and sum(1 for r in running if not r.paused) >= cpus:
        return no
    margin = limits.margin(total)
    now = fit(
        estimate=estimate,
        running=running,
        available=available,
        margin=margin,
        curve=curve,
        limits=limits,
    )
    if not now.ok:
        return no
    room = leaves_room(
        estimate=estimate,
        head=head.estimate,
        running=running,
        available=available,
        margin=margin,
        limit=limit,
    )
    if not room:
        return no
    return Admission(
        True, Why.BACKFILL, estimate, available, now.reserved, margin, len(running), limit, ahead
    )


# -- lending ---------------------------------------------------------------------


class Lend(enum.Enum):
    """Does a waiter lend cargo its jobserver token now, and if not, why not."""

    LEND = "lend"
    FIRST_TRY = "first try"  # the head's first attempt is made with the token in hand
    TOO_FAR = "too far"  # not among the ``depth`` waiters nearest the head
    LENT = "lent"  # lent already
    TOKENS_OUT = "tokens out"  # ``depth`` tokens are out over the state directory


def lending(
    *, ahead: int, tried: bool, lent: bool, depth: int, tokens_out: int | Callable[[], int]
) -> Lend:
    """A waiter lends once it waits (the head after its first attempt), if it is
    among the ``depth`` nearest the head and fewer than ``depth`` tokens are out.
    ``tokens_out`` may be a callable: it is called only when the count decides."""
    if not tried and is_head(ahead):
        return Lend.FIRST_TRY
    if ahead >= depth:
        return Lend.TOO_FAR
    if lent:
        return Lend.LENT
    out = tokens_out() if callable(tokens_out) else tokens_out
    return Lend.LEND if out < depth else Lend.TOKENS_OUT


# -- a running job: keep, pause, resume or stop ----------------------------------


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
    if not any(_age_key(r) < _age_key(me) for r in others):
        return True
    if any(r.paused and _age_key(r) < _age_key(me) for r in others):
        return False  # an older paused job resumes first (else both grow at once)
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return True
    if paused_for < limits.min_pause:
        return False
    # Resumed, it grows along its curve again: judged as running.
    room = available - still_to_grow(dataclasses.replace(me, paused=False), others, limits)
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
    free memory fell by since this job's last check (a pause keeps at least that)."""
    oldest = not any(_age_key(r) < _age_key(me) for r in others)
    if paused and oldest:
        return Step.RESUME
    if critical(available, total, limits):
        return Step.KILL if choose_victim([me, *others]) is me else Step.KEEP
    if paused:
        resume = should_resume(me, others, available, total, paused_for, limits, falling)
        return Step.RESUME if resume else Step.KEEP
    pause = should_pause(me, others, available, total, limits, falling)
    return Step.PAUSE if pause else Step.KEEP


# -- pressure and swap -----------------------------------------------------------


@dataclass(frozen=True)
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
    # pauses the youngest job (half the bound kept pairs out that plain cargo ran on
    # light swap: docs/benchmarks.md).
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
    if d.ok or swap <= 0:
        return d
    if available + swap < estimate + d.reserved + margin:
        return d
    return Admission(
        True, Why.FITS_SWAP, estimate, available, d.reserved, margin, d.running, swap=swap
    )


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
    oldest = not any(_age_key(r) < _age_key(me) for r in others)
    if paused and oldest:
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
