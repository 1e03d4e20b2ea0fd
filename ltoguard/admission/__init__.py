"""Every admission rule of ltoguard: pure functions over numbers, no I/O, no clock.

Who may try to start (only the head of the FIFO queue), which waiter lends cargo
its jobserver token, the slot cap (LTOGUARD_SLOTS) or else the CPUs, the rerun
alone after an OOM kill, the first job that starts unless the build's ordinary
compiles hold the memory it lacks, whether the head fits in free memory, and
what a running job does with its compile (keep, pause, resume, stop). Each rule
returns its decision as data (`Admission`, `Lend`, `Step`) carrying the figures it
decided on; `Admission.text` renders the human line from them.

The rules are split by subject (`core`: limits, running jobs and their curves, the
head's rules; `lend`; `backfill`; `steps`: a running job's keep, pause, resume or
stop; `brake`: memory pressure and swap) and all are importable from here.

The I/O layers gather the facts and carry the decisions out: semaphore.py (queue
position, under its mutex), policy.py (memory, run records), lending.py (tokens
out), pause.py (signals). The tunable numbers live in `Limits`; every rule that
uses one takes a `Limits` (default `DEFAULT`), so a replay can try others.
"""

from ltoguard.admission.backfill import (
    BACKFILL_DEPTH,
    BACKFILL_PASSES,
    BACKFILL_RUNNING,
    Head,
    backfill,
    leaves_room,
    outgrown_estimate,
)
from ltoguard.admission.brake import (
    DEFAULT_PRESSURE,
    Level,
    PressureLimits,
    braking,
    fit_with_swap,
    pressure_figure,
    pressure_held,
    pressure_hold,
    pressure_level,
    pressure_step,
    swap_counted,
    with_swap,
)
from ltoguard.admission.core import (
    DEFAULT,
    Admission,
    Limits,
    Running,
    Why,
    admit,
    before_memory,
    behind,
    beside_compiles,
    critical,
    expected,
    fit,
    floor_now,
    held_together,
    is_head,
    off_curve,
    outstanding,
    render,
    slot_cap,
)
from ltoguard.admission.lend import Lend, lending, lending_paused
from ltoguard.admission.steps import (
    KEEP,
    KILL,
    PAUSE,
    RESUME,
    Outlook,
    Step,
    choose_victim,
    fall_per_watch,
    near_the_floor,
    older_running,
    oldest,
    outlook,
    pause_step,
    should_pause,
    should_resume,
    still_to_grow,
    unforeseen_fall,
)

__all__ = [
    "Admission",
    "BACKFILL_DEPTH",
    "BACKFILL_PASSES",
    "BACKFILL_RUNNING",
    "DEFAULT",
    "DEFAULT_PRESSURE",
    "Head",
    "KEEP",
    "KILL",
    "Lend",
    "Level",
    "Limits",
    "Outlook",
    "PAUSE",
    "PressureLimits",
    "RESUME",
    "Running",
    "Step",
    "Why",
    "admit",
    "backfill",
    "before_memory",
    "behind",
    "beside_compiles",
    "braking",
    "choose_victim",
    "critical",
    "expected",
    "fall_per_watch",
    "fit",
    "fit_with_swap",
    "floor_now",
    "held_together",
    "is_head",
    "leaves_room",
    "lending",
    "lending_paused",
    "near_the_floor",
    "off_curve",
    "older_running",
    "oldest",
    "outgrown_estimate",
    "outlook",
    "outstanding",
    "pause_step",
    "pressure_figure",
    "pressure_held",
    "pressure_hold",
    "pressure_level",
    "pressure_step",
    "render",
    "should_pause",
    "should_resume",
    "slot_cap",
    "still_to_grow",
    "swap_counted",
    "unforeseen_fall",
    "with_swap",
]
