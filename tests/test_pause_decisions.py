"""The pure pause/resume/kill decisions of a running guarded job (ltoguard.admission.steps)."""

from __future__ import annotations

import pytest

from ltoguard.admission import (
    DEFAULT,
    KEEP,
    KILL,
    PAUSE,
    RESUME,
    Limits,
    Outlook,
    Running,
    Step,
    older_running,
    outlook,
    pause_step,
    should_pause,
    should_resume,
    still_to_grow,
    unforeseen_fall,
)
from ltoguard.curves import Curve
from ltoguard.sizes import GiB, MiB
from ltoguard.structs import replace

TOTAL = 24 * GiB  # critical floor 256 MiB, margin as much


def job(pid: int, estimate: int, current: int, started: float, paused: bool = False) -> Running:
    return Running(pid=pid, estimate=estimate, current=current, started=started, paused=paused)


OLD = job(1, 2 * GiB, GiB, 10.0)  # 1 GiB still to come
ME = job(2, GiB, 600 * MiB, 20.0)  # 424 MiB still to come
YOUNG = job(3, GiB, 100 * MiB, 30.0)  # 924 MiB still to come
NEEDS = GiB + 424 * MiB  # OLD's and ME's growth
EDGE = NEEDS + 256 * MiB  # free memory at which the projection meets the floor


def test_growth_counts_only_running_jobs() -> None:
    assert still_to_grow(ME, [OLD]) == NEEDS
    assert still_to_grow(ME, [replace(OLD, paused=True)]) == 424 * MiB
    assert still_to_grow(ME, [OLD, YOUNG]) == NEEDS + 924 * MiB
    assert older_running(ME, [OLD, YOUNG]) == 1
    assert older_running(ME, [replace(OLD, paused=True), YOUNG]) == 0


@pytest.mark.parametrize(
    ("me", "others", "available", "expected"),
    [
        (ME, [OLD], EDGE - 1, True),  # the projection goes below the floor
        (ME, [OLD], EDGE, False),  # exactly at the floor: not below it
        (ME, [OLD], 100 * GiB, False),
        (ME, [], 0, False),  # alone: pausing frees memory for nobody
        (OLD, [ME], 0, False),  # the oldest never pauses
        (ME, [OLD, YOUNG], 0, False),  # a younger running job pauses first
        # ... unless it is paused already: then it grows no more, and ME is next.
        (ME, [OLD, replace(YOUNG, paused=True)], EDGE - 1, True),
        (ME, [OLD, replace(YOUNG, paused=True)], EDGE, False),
        # Every older job paused: none would profit from ME pausing.
        (ME, [replace(OLD, paused=True)], 0, False),
        # Over its estimate, ME reserves nothing more: only OLD's growth counts.
        (replace(ME, current=2 * GiB), [OLD], GiB + 256 * MiB - 1, True),
        (replace(ME, current=2 * GiB), [OLD], GiB + 256 * MiB, False),
        # The same start time: the higher pid counts as the younger (choose_victim).
        (replace(ME, started=10.0), [OLD], 0, True),
        (replace(OLD, started=20.0), [replace(ME, started=20.0, pid=0)], 0, True),
    ],
)
def test_should_pause(me: Running, others: list[Running], available: int, expected: bool) -> None:
    assert should_pause(me, others, available, TOTAL) is expected


ROOM = NEEDS + 256 * MiB + 256 * MiB  # the floor and the margin above the growth


@pytest.mark.parametrize(
    ("others", "available", "paused_for", "expected"),
    [
        ([], 0, 0.0, True),  # the older jobs finished: at once, whatever memory says
        ([YOUNG], 0, 0.0, True),  # only younger ones left: ME is the oldest
        ([OLD, YOUNG], 0, 0.0, True),  # a younger job runs: it yields first
        ([OLD, replace(YOUNG, paused=True)], 0, 9.0, False),
        ([OLD], ROOM, DEFAULT.min_pause, True),  # room for everybody's growth and the margin
        ([OLD], ROOM - 1, 60.0, False),  # above the floor but within the margin: stay
        ([OLD], EDGE, 60.0, False),  # where it paused: no flapping
        ([OLD], 100 * GiB, DEFAULT.min_pause - 0.01, False),  # hysteresis: not too soon
        ([OLD], 100 * GiB, DEFAULT.min_pause, True),
        # The older job is paused itself: it resumes first (as the oldest, at once),
        # whatever the room: two resuming at once would grow together.
        ([replace(OLD, paused=True)], 0, 60.0, False),
        ([replace(OLD, paused=True)], 100 * GiB, 60.0, False),
        ([job(0, GiB, GiB, 5.0), replace(OLD, paused=True)], 100 * GiB, 60.0, False),
    ],
)
def test_should_resume(
    others: list[Running], available: int, paused_for: float, expected: bool
) -> None:
    assert should_resume(ME, others, available, TOTAL, paused_for) is expected


@pytest.mark.parametrize(
    ("me", "others", "available", "paused", "expected"),
    [
        (ME, [OLD], 100 * GiB, False, KEEP),
        (ME, [OLD], EDGE - 1, False, PAUSE),
        (ME, [OLD], EDGE - 1, True, KEEP),
        (ME, [OLD], 100 * GiB, True, RESUME),
        # Really critical: the youngest of several is killed, running or paused.
        (ME, [OLD], 255 * MiB, False, KILL),
        (ME, [OLD], 255 * MiB, True, KILL),
        (ME, [OLD], 256 * MiB, True, KEEP),  # at the floor: not critical yet
        (ME, [OLD, YOUNG], 255 * MiB, False, KEEP),  # YOUNG is the victim
        (ME, [OLD, YOUNG], 255 * MiB, True, KEEP),  # ... and ME does not resume
        (OLD, [ME], 255 * MiB, False, KEEP),
        (ME, [], 255 * MiB, False, KEEP),  # alone: killing it would help nobody
        # The oldest job is never left paused, critical or not.
        (ME, [], 255 * MiB, True, RESUME),
        (ME, [YOUNG], 255 * MiB, True, RESUME),
    ],
)
def test_pause_step(
    me: Running, others: list[Running], available: int, paused: bool, expected: Step
) -> None:
    got = pause_step(
        me=me, others=others, available=available, total=TOTAL, paused=paused, paused_for=60.0
    )
    assert got is expected and isinstance(got, Step)


# Another policy, as a replay may try: a 128 MiB floor, no margin, 5 s minimum pause.
OTHER = Limits(critical_floor_max=128 * MiB, margin_floors=0, min_pause=5.0)


@pytest.mark.parametrize(
    ("available", "paused", "paused_for", "default", "other"),
    [
        (NEEDS + 200 * MiB, False, 0.0, PAUSE, KEEP),  # below 256 MiB's edge, above 128's
        (NEEDS + 127 * MiB, False, 0.0, PAUSE, PAUSE),
        (200 * MiB, False, 0.0, KILL, PAUSE),  # critical only under the larger floor
        (127 * MiB, False, 0.0, KILL, KILL),
        # Resuming wants floor + margin of room, after the minimum pause.
        (NEEDS + 200 * MiB, True, 60.0, KEEP, RESUME),
        (NEEDS + 512 * MiB, True, 2.0, RESUME, KEEP),
        (NEEDS + 512 * MiB, True, 5.0, RESUME, RESUME),
    ],
)
def test_pause_step_takes_other_limits(
    available: int, paused: bool, paused_for: float, default: Step, other: Step
) -> None:
    def step(limits: Limits) -> Step:
        return pause_step(
            me=ME,
            others=[OLD],
            available=available,
            total=TOTAL,
            paused=paused,
            paused_for=paused_for,
            limits=limits,
        )

    assert (step(DEFAULT), step(OTHER)) == (default, other)


def test_unforeseen_fall_is_what_the_room_lost_not_the_jobs_foreseen_rise() -> None:
    before = outlook([replace(OLD, current=GiB - 50 * MiB), replace(ME, current=500 * MiB)], EDGE)
    # Both rose as expected (50 and 100 MiB): the room is as it was.
    now = outlook([OLD, ME], EDGE - 150 * MiB)
    assert now.room == before.room
    assert unforeseen_fall(150 * MiB, before, now) == 0
    # The rest of the build took 50 MiB more: that part counts.
    assert unforeseen_fall(200 * MiB, before, outlook([OLD, ME], EDGE - 200 * MiB)) == 50 * MiB
    assert unforeseen_fall(0, before, now) == 0
    # A paused job is no running job: not in the outlook, whatever it holds.
    paused = outlook([OLD, replace(ME, paused=True)], 0)
    assert set(paused.held) == {1}


def test_unforeseen_fall_counts_a_rise_past_the_estimate_or_near_it() -> None:
    def seen(estimate: int, current: int, available: int) -> Outlook:
        return outlook([OLD, replace(ME, estimate=estimate, current=current)], available)

    # ME rose 100 MiB, the last 50 past its estimate: the room lost 50 MiB, and as
    # much again would all go past it: the whole fall counts.
    before = seen(550 * MiB, 500 * MiB, EDGE)
    assert (
        unforeseen_fall(100 * MiB, before, seen(550 * MiB, 600 * MiB, EDGE - 100 * MiB))
        == 100 * MiB
    )
    # 50 MiB rise, 20 MiB under its estimate: the room is as it was, but as much
    # again takes it 30 MiB past.
    before = seen(570 * MiB, 500 * MiB, EDGE)
    now = seen(570 * MiB, 550 * MiB, EDGE - 50 * MiB)
    assert now.room == before.room
    assert unforeseen_fall(50 * MiB, before, now) == 30 * MiB
    # Far under its estimate: nothing.
    before = seen(GiB, 500 * MiB, EDGE)
    assert unforeseen_fall(50 * MiB, before, seen(GiB, 550 * MiB, EDGE - 50 * MiB)) == 0


def test_unforeseen_fall_counts_a_rise_over_a_learned_curve() -> None:
    """A job with a learned curve is expected at its curve: a rise over it (within the
    curve's tolerance, so not off it) was not foreseen, though under its estimate."""
    curve = Curve(10.0, (0.5,) * 10)  # half its peak all along
    me = Running(pid=2, estimate=GiB, current=512 * MiB, started=20.0, curve=curve, ran=2.0)
    before = outlook([OLD, me], EDGE)
    now = outlook([OLD, replace(me, current=560 * MiB)], EDGE - 48 * MiB)
    assert unforeseen_fall(48 * MiB, before, now) == 48 * MiB


def test_unforeseen_fall_is_the_whole_fall_when_the_running_jobs_changed() -> None:
    before = outlook([OLD], EDGE)
    assert unforeseen_fall(200 * MiB, before, outlook([OLD, ME], EDGE)) == 200 * MiB  # started
    assert unforeseen_fall(200 * MiB, outlook([OLD, ME], EDGE), before) == 200 * MiB  # ended
    resumed = outlook([OLD, ME], EDGE)
    assert (
        unforeseen_fall(200 * MiB, outlook([OLD, replace(ME, paused=True)], EDGE), resumed)
        == 200 * MiB
    )
    assert unforeseen_fall(200 * MiB, None, resumed) == 200 * MiB  # the first check
