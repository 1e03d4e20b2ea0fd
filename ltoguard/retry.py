"""What happens after an attempt: a pure function of its result and the retry state.

- It stopped itself (memory critical, youngest of several): queue again at the
  head, waiting next time for at least its peak plus VICTIM_HEADROOM.
- The kernel OOM-killed it, or LLVM ran out of memory: run it once more, alone,
  expecting its peak plus OOM_RERUN_HEADROOM (the cut-short peak is not learned);
  out of memory even alone: fail with its real status and one line giving its size.
- Anything else: done, with the compiler's status.

No I/O here: guard.py carries the step out (learn, say, queue, exit).
"""

from __future__ import annotations

import signal

from ltoguard.sizes import format_size
from ltoguard.structs import replace, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ltoguard.attempt import AttemptResult

VICTIM_HEADROOM = 1.10  # it was stopped while still growing
OOM_RERUN_HEADROOM = 1.25  # its peak was cut short by the kill

REQUEUE = "requeue"  # queue again at the head
RERUN_ALONE = "rerun alone"  # queue again, admitted only when no other guarded job runs
DONE = "done"


@struct(frozen=True)
class RetryState:
    reruns: int = 0  # OOM reruns so far (at most one)
    requeues: int = 0  # times it stopped itself to free memory


@struct(frozen=True)
class Step:
    action: str  # REQUEUE, RERUN_ALONE or DONE
    state: RetryState
    estimate_at_least: int = 0  # the job's estimate is raised to this (0: unchanged)
    learn: bool = False  # record the attempt's peak in the history
    message: str = ""  # one line for the user, without the "ltoguard: " prefix
    code: int = 0  # DONE: the exit status, as a returncode (-S: die by signal S)
    outcome: str = ""  # DONE: "ok", "failed" or "oom", for the event log


def next_step(result: AttemptResult, state: RetryState, what: str, *, threads: bool) -> Step:
    """``what`` names the job in messages ("crate foo (bin, lto=fat)"); a job that
    runs codegen threads (``threads``: Job.codegen_threads) reruns on one (attempt.py)."""
    size = format_size(result.peak)
    thread = ", on one codegen thread" if threads else ""
    if result.stopped_itself:
        return Step(
            REQUEUE,
            replace(state, requeues=state.requeues + 1),
            estimate_at_least=int(result.peak * VICTIM_HEADROOM),
            message=f"{what}: free memory is critical; stopped this compile (youngest of the"
            f" running ones, at {size}) and queued it again at the head",
        )
    if result.out_of_memory:
        if state.reruns == 0:
            return Step(
                RERUN_ALONE,
                replace(state, reruns=1),
                estimate_at_least=int(result.peak * OOM_RERUN_HEADROOM),
                # Not learned: the kill cut its peak short, and its siblings, scaled
                # by it, would be estimated low while it reruns (the rerun's peak is).
                learn=False,
                message=f"{what} ran out of memory (killed at {size}); running it again, alone"
                + thread,
            )
        return Step(
            DONE,
            state,
            learn=True,
            message=f"error: {what} ran out of memory even when it ran alone (it used {size});"
            " give the build more memory or lower its LTO/debuginfo settings",
            code=result.code,
            outcome="oom",
        )
    # A SIGKILL that was not the OOM killer (someone killed the build) says nothing
    # about the job's memory.
    return Step(
        DONE,
        state,
        learn=result.code != -signal.SIGKILL,
        code=result.code,
        outcome="ok" if result.code == 0 else "failed",
    )
