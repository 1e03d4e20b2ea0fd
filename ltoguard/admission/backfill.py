"""Backfill: a waiter behind a head refused for memory may start first when it fits
now and, on estimates, leaves the head its room."""

from __future__ import annotations

from collections.abc import Sequence

from ltoguard.admission.core import (
    DEFAULT,
    Admission,
    Limits,
    Running,
    Why,
    behind,
    fit,
    is_head,
)
from ltoguard.curves import Curve
from ltoguard.structs import replace, struct

# At most this many jobs start before one head (see `backfill`): on estimates the
# rule never delays the head, so this bounds only what estimates get wrong.
BACKFILL_PASSES = 10
# With more jobs running than this, whether the head is delayed is not worked out
# (every set of them that may end first is tried): nobody backfills.
BACKFILL_RUNNING = 10
# Only the waiters this near the head try: each one that tries polls like the head.
BACKFILL_DEPTH = 8


@struct(frozen=True)
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
    estimate minus current, each, as `fit` counts it without curves). Without this
    job the head starts after S once s(S) >= 0 (and a slot is free), and once all
    have ended whatever (FIRST). With it, s(S) - estimate >= 0 is needed (and a
    slot for one more).
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


def outgrown_estimate(r: Running, limits: Limits = DEFAULT) -> bool:
    """Does a running job hold more than its estimate by more than the tolerance
    of a curve (`Limits.curve_tolerance`)? Then its estimate no longer says what it
    will hold, nor what it frees when it ends (docs/design.md, Backfill)."""
    return r.estimate > 0 and r.current > r.estimate * limits.curve_tolerance


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
    head. A rerun alone after an OOM kill is never passed, never passes, and has
    nobody start beside it. Nor
    does anyone pass while a running job holds more than its estimate allows
    (`outgrown_estimate`): the head's promise rests on the running jobs' estimates,
    and that one's is wrong. Yes is BACKFILL (with `fit`'s figures), no is BEHIND."""
    no = behind(ahead)
    if alone or head.alone or not head.refused or head.passed >= passes or not running:
        return no
    if any(r.alone for r in running):
        return no
    if any(outgrown_estimate(r, limits) for r in running):
        return no
    if is_head(ahead) or ahead > depth:
        return no
    if limit is not None and len(running) >= limit:
        return no
    if cpus is not None and sum(1 for r in running if not r.paused) >= cpus:
        return no
    now = fit(
        estimate=estimate, running=running, available=available,
        margin=limits.margin(total), curve=curve, limits=limits,
    )  # fmt: skip
    if not now.ok or not leaves_room(
        estimate=estimate, head=head.estimate, running=running, available=available,
        margin=now.margin, limit=limit,
    ):  # fmt: skip
        return no
    return replace(now, why=Why.BACKFILL, limit=limit, ahead=ahead)
