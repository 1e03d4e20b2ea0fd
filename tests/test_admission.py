from __future__ import annotations

import pytest

from ltoguard.admission import (
    Running,
    admit,
    choose_victim,
    critical,
    critical_floor,
    default_margin,
    outstanding,
)
from ltoguard.sizes import GiB, MiB


def job(pid: int, estimate: int, current: int, started: float = 0.0) -> Running:
    return Running(pid=pid, estimate=estimate, current=current, started=started)


A = job(1, GiB, 400 * MiB, 10.0)  # 624 MiB still to come
B = job(2, 500 * MiB, 600 * MiB, 20.0)  # above its estimate: reserves nothing


@pytest.mark.parametrize(
    ("head", "running", "available", "margin", "slots", "expected"),
    [
        # Liveness: nothing guarded runs, so the head starts whatever memory says.
        (GiB, [], 8 * GiB, 0, None, True),
        (8 * GiB, [], GiB, 256 * MiB, None, True),
        (GiB, [], 0, 0, 1, True),
        # Slot limit alone.
        (MiB, [A], 100 * GiB, 0, 1, False),
        (MiB, [A], 100 * GiB, 0, 2, True),
        (MiB, [A, B], 100 * GiB, 0, 2, False),
        # Memory: head + A's outstanding 624 MiB + margin.
        (GiB, [A], GiB + 624 * MiB + 256 * MiB, 256 * MiB, None, True),
        (GiB, [A], GiB + 624 * MiB + 256 * MiB - 1, 256 * MiB, None, False),
        (GiB, [A], GiB + 624 * MiB, 0, None, True),
        # B is over its estimate: it reserves nothing more (its usage is already
        # out of `available`).
        (GiB, [B], GiB, 0, None, True),
        (GiB, [A, B], GiB + 624 * MiB, 0, None, True),
        (GiB, [A, B], GiB + 623 * MiB, 0, None, False),
        # Both limits: memory fits but slots do not, and the other way round.
        (MiB, [A, B], 100 * GiB, 0, 3, True),
        (GiB, [A, B], GiB, 0, 3, False),
        (MiB, [A, B], 100 * GiB, 0, 2, False),
    ],
)
def test_admit_truth_table(
    head: int,
    running: list[Running],
    available: int,
    margin: int,
    slots: int | None,
    expected: bool,
) -> None:
    ok, reason = admit(
        head_estimate=head, running=running, available=available, margin=margin, slot_limit=slots
    )
    assert ok is expected
    assert reason and "\n" not in reason


def test_reasons_are_human() -> None:
    ok, reason = admit(
        head_estimate=700 * MiB, running=[A, B], available=450 * MiB, margin=0, slot_limit=None
    )
    assert not ok
    assert reason == "needs ~700 MiB, 450 MiB free; 2 jobs running, expected to grow by 624 MiB"

    ok, reason = admit(
        head_estimate=700 * MiB, running=[B], available=4 * GiB, margin=256 * MiB, slot_limit=None
    )
    assert ok
    assert reason == "needs ~700 MiB, 4 GiB free; 1 job running; keeping 256 MiB spare"

    ok, reason = admit(head_estimate=MiB, running=[A, B], available=4 * GiB, margin=0, slot_limit=2)
    assert (ok, reason) == (False, "2 jobs running, the limit is 2 (LTOGUARD_SLOTS)")


def test_liveness_reason_warns_when_it_does_not_fit() -> None:
    ok, reason = admit(head_estimate=2 * GiB, running=[], available=GiB, margin=0, slot_limit=None)
    assert ok
    assert reason == "needs ~2 GiB, 1 GiB free; starting anyway: no other guarded job is running"
    ok, reason = admit(head_estimate=GiB, running=[], available=2 * GiB, margin=0, slot_limit=None)
    assert ok
    assert "anyway" not in reason


@pytest.mark.parametrize("slots", [0, -1])
def test_bad_slot_limit(slots: int) -> None:
    with pytest.raises(ValueError, match="slot_limit"):
        admit(head_estimate=1, running=[], available=1, margin=0, slot_limit=slots)


def test_outstanding() -> None:
    assert outstanding([]) == 0
    assert outstanding([A, B]) == 624 * MiB


def test_choose_victim_is_youngest_of_two_or_more() -> None:
    assert choose_victim([]) is None
    assert choose_victim([A]) is None
    assert choose_victim([A, B]) is B
    assert choose_victim([B, A]) is B
    c = job(3, GiB, GiB, 20.0)  # same start as B: the higher pid started later
    assert choose_victim([A, c, B]) is c


@pytest.mark.parametrize(
    ("available", "total", "expected"),
    [
        (255 * MiB, 24 * GiB, True),
        (256 * MiB, 24 * GiB, False),
        (99 * MiB, 1000 * MiB, True),  # small cgroup: 10% = 100 MiB
        (100 * MiB, 1000 * MiB, False),
        (0, 0, False),  # unknown size: no floor
        (0, 1, False),
    ],
)
def test_critical(available: int, total: int, expected: bool) -> None:
    assert critical(available, total) is expected


def test_floor_and_margin_scale() -> None:
    assert critical_floor(24 * GiB) == 256 * MiB
    assert critical_floor(1000 * MiB) == 100 * MiB
    assert default_margin(24 * GiB) == 256 * MiB
    assert default_margin(1000 * MiB) == 100 * MiB
    # Admission with the default margin never lands in the critical zone by itself.
    for total in (512 * MiB, 1000 * MiB, 4 * GiB, 64 * GiB):
        assert default_margin(total) >= critical_floor(total)
