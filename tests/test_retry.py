"""What happens after an attempt: the pure next-step function, by table."""

from __future__ import annotations

import signal

import pytest

from ltoguard.attempt import AttemptResult
from ltoguard.retry import (
    DONE,
    OOM_RERUN_HEADROOM,
    REQUEUE,
    RERUN_ALONE,
    VICTIM_HEADROOM,
    RetryState,
    next_step,
)
from ltoguard.sizes import MiB

WHAT = "crate app (bin, lto=fat)"
PEAK = 400 * MiB
KILLED = -signal.SIGKILL


@pytest.mark.parametrize(
    ("result", "state", "action", "after", "raised", "learn", "code", "outcome", "says"),
    [
        # Finished: done with its status, the peak learned.
        (AttemptResult(0, PEAK), RetryState(), DONE, RetryState(), 0, True, 0, "ok", ""),
        (AttemptResult(1, PEAK), RetryState(), DONE, RetryState(), 0, True, 1, "failed", ""),
        # Killed by someone else's SIGKILL (not OOM): nothing learned from it.
        (
            AttemptResult(KILLED, PEAK),
            RetryState(),
            DONE,
            RetryState(),
            0,
            False,
            KILLED,
            "failed",
            "",
        ),
        # Interrupted by Ctrl-C: its status is the compiler's.
        (
            AttemptResult(-signal.SIGINT, PEAK),
            RetryState(),
            DONE,
            RetryState(),
            0,
            True,
            -2,
            "failed",
            "",
        ),
        # Stopped itself to free memory: queue again at the head, estimate above its peak.
        (
            AttemptResult(KILLED, PEAK, stopped_itself=True),
            RetryState(reruns=0, requeues=1),
            REQUEUE,
            RetryState(reruns=0, requeues=2),
            int(PEAK * VICTIM_HEADROOM),
            False,
            0,
            "",
            "stopped this compile (youngest of the running ones, at 400 MiB) and queued it again",
        ),
        # First OOM kill: rerun alone with headroom; the cut-short peak is not learned
        # (siblings scaled by it would be estimated low meanwhile).
        (
            AttemptResult(KILLED, PEAK, out_of_memory=True),
            RetryState(),
            RERUN_ALONE,
            RetryState(reruns=1),
            int(PEAK * OOM_RERUN_HEADROOM),
            False,
            0,
            "",
            "ran out of memory (killed at 400 MiB); running it again, alone, on one codegen thread",
        ),
        # Out of memory even alone: fail with the real status and a line naming its size.
        (
            AttemptResult(KILLED, PEAK, out_of_memory=True),
            RetryState(reruns=1),
            DONE,
            RetryState(reruns=1),
            0,
            True,
            KILLED,
            "oom",
            "error: crate app (bin, lto=fat) ran out of memory even when it ran alone (it used 400 MiB)",
        ),
        # LLVM's own out-of-memory abort counts the same (exit 101 from rustc).
        (
            AttemptResult(101, PEAK, out_of_memory=True),
            RetryState(reruns=1),
            DONE,
            RetryState(reruns=1),
            0,
            True,
            101,
            "oom",
            "ran out of memory even when it ran alone",
        ),
    ],
)
def test_next_step(
    result: AttemptResult,
    state: RetryState,
    action: str,
    after: RetryState,
    raised: int,
    learn: bool,
    code: int,
    outcome: str,
    says: str,
) -> None:
    step = next_step(result, state, WHAT, threads=True)
    assert step.action == action
    assert step.state == after
    assert step.estimate_at_least == raised
    assert step.learn is learn
    assert (step.code, step.outcome) == (code, outcome)
    if says:
        assert says in step.message
    else:
        assert step.message == ""


def test_stopping_itself_wins_over_an_oom_reading() -> None:
    # A compile we killed ourselves is a requeue, never an OOM rerun.
    step = next_step(
        AttemptResult(KILLED, PEAK, stopped_itself=True, out_of_memory=True),
        RetryState(),
        WHAT,
        threads=True,
    )
    assert step.action == REQUEUE


def test_a_command_s_rerun_says_nothing_of_codegen_threads() -> None:
    # One codegen thread is rustc's (attempt.py): `ltoguard run` commands keep theirs.
    result = AttemptResult(KILLED, PEAK, out_of_memory=True)
    step = next_step(result, RetryState(), "command make", threads=False)
    assert step.action == RERUN_ALONE
    assert (
        step.message
        == "command make ran out of memory (killed at 400 MiB); running it again, alone"
    )
