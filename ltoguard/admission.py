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

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ltoguard.sizes import MiB, format_size


@dataclass(frozen=True)
class Limits:
    """The policy's tunable numbers; the defaults are what ltoguard runs with."""

    # Free memory below the critical floor means the OOM killer is close: room to
    # notice a fast-growing compile between two samples and act.
    critical_floor_max: int = 256 * MiB
    # The floor is at most this share of the bound's size, so a small cgroup is
    # not "critical" all the time (1000 MiB -> 100 MiB).
    critical_floor_divisor: int = 10
    # Free memory admission keeps after all estimates, in critical floors:
    # estimates lead the peaks already, and a pair that outgrows them pauses.
    margin_floors: float = 1.0
    # Seconds a paused job stays paused before free memory may resume it, so it
    # does not pause and resume in turn.
    min_pause: float = 1.0

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


def critical(available: int, total: int, limits: Limits = DEFAULT) -> bool:
    """Is free memory below the critical floor of a bound of size ``total``?"""
    return available < limits.critical_floor(total)


def outstanding(running: Sequence[Running]) -> int:
    """Memory the running jobs are still expected to take on top of what they hold."""
    return sum(max(0, r.estimate - r.current) for r in running)


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
    BACKFILL = "backfill"  # not the head, but fits now and leaves the head's room (backfill)


@dataclass(frozen=True)
class Admission:
    """An admission decision and the figures it was made on (bytes; None: not read)."""

    ok: bool
    why: Why
    estimate: int | None = None  # the head's estimate
    available: int | None = None  # free memory now (what running jobs hold excluded)
    reserved: int = 0  # what the running jobs are still expected to grow by
    margin: int = 0  # free memory kept after all that
    running: int = 0  # guarded jobs holding slots
    limit: int | None = None  # LTOGUARD_SLOTS
    ahead: int = 0  # waiters ahead in the queue

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
    if d.estimate is None or d.available is None:
        return "no other guarded job running"
    needs = f"needs ~{format_size(d.estimate)}, {format_size(d.available)} free"
    if d.why is Why.FIRST:
        if d.estimate + d.margin > d.available:
            return f"{needs}; starting anyway: no other guarded job is running"
        return f"{needs}; no other guarded job running"
    detail = f"{needs}; {_jobs(d.running)}"
    if d.reserved:
        detail += f", expected to grow by {format_size(d.reserved)}"
    if d.margin:
        detail += f"; keeping {format_size(d.margin)} spare"
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


def fit(*, estimate: int, running: Sequence[Running], available: int, margin: int) -> Admission:
    """Does the head fit beside the running jobs? ``available`` is free memory now,
    so it already excludes what they hold; their remaining growth (estimate minus
    current, per job) is reserved on top of the head's estimate and ``margin``. With
    nothing running it starts all the same (FIRST, with the figures)."""
    reserved = outstanding(running)
    if not running:
        return Admission(True, Why.FIRST, estimate, available, 0, margin)
    ok = available >= estimate + reserved + margin
    why = Why.FITS if ok else Why.NO_ROOM
    return Admission(ok, why, estimate, available, reserved, margin, len(running))


def admit(
    *,
    estimate: int,
    running: Sequence[Running],
    available: int,
    total: int,
    limit: int | None = None,
    alone: bool = False,
    limits: Limits = DEFAULT,
) -> Admission:
    """May the head of the queue start now? Every rule in order, from figures alone
    (the policy applies the same rules, reading memory only when they need it)."""
    early = before_memory(running=len(running), alone=alone, limit=limit)
    if early is not None:
        return early
    return fit(estimate=estimate, running=running, available=available, margin=limits.margin(total))


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
    estimate minus current, each, as in `fit`). Without this job the head starts
    after S once s(S) >= 0 (and a slot is free), and once all have ended whatever
    (FIRST). With it, s(S) - estimate >= 0 is needed (and a slot for one more).
    So for every S after which the head would start without it, it must start with
    it; for S = all that reads head + estimate + margin <= available + what the
    running jobs hold now."""
    n = len(running)
    if n > BACKFILL_RUNNING:
        return False
    base = available - outstanding(running) - head - margin
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
    now = fit(estimate=estimate, running=running, available=available, margin=margin)
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


def still_to_grow(me: Running, others: Sequence[Running]) -> int:
    """What this job and the other running, not-paused jobs are still expected to
    take on top of what they hold (a paused job grows no more until it resumes)."""
    return outstanding([me, *(r for r in others if not r.paused)])


def older_running(me: Running, others: Sequence[Running]) -> int:
    """How many running, not-paused jobs are older than this one."""
    return sum(1 for r in others if not r.paused and _age_key(r) < _age_key(me))


def should_pause(
    me: Running, others: Sequence[Running], available: int, total: int, limits: Limits = DEFAULT
) -> bool:
    """Pause this (running) job? When free memory minus what the running jobs are
    still expected to grow would go below the critical floor, the youngest running
    job pauses, so the older ones finish without anybody being killed. Never with no
    older job running: pausing it would free memory for nobody."""
    if older_running(me, others) == 0:
        return False
    if any(not r.paused and _age_key(r) > _age_key(me) for r in others):
        return False  # a younger running job pauses first
    return available - still_to_grow(me, others) < limits.critical_floor(total)


def should_resume(
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused_for: float,
    limits: Limits = DEFAULT,
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
    room = available - still_to_grow(me, others)
    return room >= limits.critical_floor(total) + limits.margin(total)


def pause_step(
    *,
    me: Running,
    others: Sequence[Running],
    available: int,
    total: int,
    paused: bool,
    paused_for: float = 0.0,
    limits: Limits = DEFAULT,
) -> Step:
    """KEEP, PAUSE, RESUME or KILL for a running or paused job (``me``; ``others``:
    the other jobs holding slots). Free memory really critical: the youngest job of
    several is killed, paused or not (choose_victim), and a paused job that is not
    the victim stays paused; the oldest job is never left paused."""
    oldest = not any(_age_key(r) < _age_key(me) for r in others)
    if paused and oldest:
        return Step.RESUME
    if critical(available, total, limits):
        return Step.KILL if choose_victim([me, *others]) is me else Step.KEEP
    if paused:
        resume = should_resume(me, others, available, total, paused_for, limits)
        return Step.RESUME if resume else Step.KEEP
    return Step.PAUSE if should_pause(me, others, available, total, limits) else Step.KEEP
