"""A job's memory over its run, learned: how long it ran and when it held how much.

A fat-LTO compile does not hold its peak all its life: it takes most of it in its
first second and reaches the top late. Two such jobs, the second started while the
first is past its middle, rarely peak together, so what they hold side by side is
less than the sum of their peaks. A `Curve` keeps one run's shape (the largest
share of its peak held in each of SLICES equal slices of its run) and its length
in seconds; admission scales it by the job's estimate and lays the curves of the
running jobs and the head side by side (`admission.held_together`).

Pure: no I/O. Learned from the samples a run records (`from_samples`), kept with
the job's peaks in the history, carried in the slot records as JSON (`as_json`,
`parse`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SLICES = 16  # enough to tell the first second's rise from the late peak
MIN_SECONDS = 1.0  # shorter runs say nothing about timing worth keeping
MIN_SAMPLES = 3


@struct(frozen=True)
class Curve:
    """``shape[k]``: the largest share of its peak the job held in slice k of its run."""

    seconds: float
    shape: tuple[float, ...]

    def share(self, t: float) -> float | None:
        """Share of its peak held ``t`` seconds into the run; None once it has ended."""
        if t >= self.seconds:
            return None
        # The epsilon puts a slice's own edge (seconds * k / n, as `edges` gives it)
        # in that slice, not the one before, whatever the rounding.
        k = max(0, int(t * len(self.shape) / self.seconds + 1e-9))
        return self.shape[min(k, len(self.shape) - 1)]

    def edges(self) -> list[float]:
        """Seconds into the run where the shape may change."""
        n = len(self.shape)
        return [self.seconds * k / n for k in range(n)]

    def as_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "shape": [round(v, 3) for v in self.shape]}


def parse(value: object) -> Curve | None:
    """A curve from its JSON; anything malformed is no curve (it is a hint)."""
    if not isinstance(value, dict):
        return None
    seconds, shape = value.get("seconds"), value.get("shape")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    if not isinstance(shape, list) or not shape or len(shape) > 4 * SLICES:
        return None
    out = []
    for v in shape:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            return None
        out.append(float(v))
    return Curve(float(seconds), tuple(out))


def without_pauses(
    samples: Sequence[Sequence[float]], pauses: Sequence[tuple[float, float]]
) -> list[list[float]]:
    """``samples`` (``[time, bytes]``) as if the run had never been paused: each moved
    back by the time it was paused before it (``pauses``: when it was stopped and when
    continued), so one taken during a pause falls on the pause's start. A stopped
    compile neither grows nor ends, so its curve is the rest, joined up. Samples are
    rounded to 0.01 s and pauses are not: none is dropped for falling a few ms inside
    one, least of all the run's last."""
    return [[t - sum(max(0.0, min(t, b) - a) for a, b in pauses), m] for t, m in samples]


def from_samples(samples: Sequence[Sequence[float]], start: float, end: float) -> Curve | None:
    """The curve of a run from ``start`` to ``end`` (seconds, any clock the samples
    share), its ``samples`` being ``[time, bytes]``. Between two samples the memory
    is taken as the larger of the two (it may have peaked in between), so a slice
    without a sample of its own is never taken as emptier than its neighbours."""
    seconds = end - start
    pts = sorted((float(t), float(m)) for t, m in samples if start <= t <= end and m > 0)
    if seconds < MIN_SECONDS or len(pts) < MIN_SAMPLES:
        return None
    top = max(m for _, m in pts)
    shape = [0.0] * SLICES
    width = seconds / SLICES
    for (t0, m0), (t1, m1) in zip([(start, pts[0][1]), *pts], [*pts, (end, pts[-1][1])]):
        held = max(m0, m1) / top
        first = int((t0 - start) / width)
        last = int((t1 - start) / width)
        for k in range(max(0, first), min(SLICES - 1, last) + 1):
            shape[k] = max(shape[k], held)
    return Curve(seconds, tuple(round(v, 3) for v in shape))
