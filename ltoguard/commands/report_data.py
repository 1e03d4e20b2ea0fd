"""`ltoguard report`'s numbers: which events make the build, and the figures drawn from them.

Events are the event log's records (``events.py``), written by any user sharing
the state directory: every field is read tolerantly (``events.num``/``events.text``).
"""

from __future__ import annotations

import bisect
import os
from typing import NamedTuple

from ltoguard import events as ev

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# ---------------------------------------------------------------------------
# choosing the events


def select(
    events: list[dict[str, Any]],
    *,
    workspace: str | None,
    cwd: str,
    since: float | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The events to report and the workspace they belong to.

    ``workspace`` given: only its events. Else the workspace around ``cwd`` if it
    has any, else the workspace of the latest event. ``since``: every event of that
    workspace queued at or after it; else the latest build only.
    """
    if not events:
        return [], workspace
    if workspace is not None:
        chosen = os.path.abspath(workspace)
        mine = [e for e in events if ev.in_workspace(e, chosen)]
    else:
        mine = [e for e in events if ev.in_workspace(e, cwd)]
        chosen = cwd
        if not mine:
            latest = max(events, key=ev.end_time)
            chosen = ev.text(latest, "workspace") or ev.text(latest, "cwd")
            mine = [e for e in events if ev.in_workspace(e, chosen)] if chosen else [latest]
    if since is not None:
        return [e for e in mine if ev.start_time(e) >= since], chosen
    builds = ev.group_builds(mine)
    return (builds[-1] if builds else []), chosen


# ---------------------------------------------------------------------------
# attempts: a job stopped to free memory (or killed by the OOM killer) queues again


class Attempt(NamedTuple):
    """One admission of a job: it waited from ``queued`` to ``admitted`` (None: it
    never was, e.g. interrupted while waiting), then ran until ``ended``."""

    queued: float
    admitted: float | None
    ended: float
    paused: float  # seconds of its run the compile was paused
    then: str  # what came next: "requeue", "rerun alone", "done" ("" unknown)


def _field(raw: list[Any], i: int) -> float | None:
    v = raw[i] if i < len(raw) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def _logged(e: dict[str, Any]) -> list[list[Any]]:
    raw = e.get("attempts")
    if not isinstance(raw, list):
        return []
    return [r for r in raw if isinstance(r, list) and _field(r, 0) is not None]


def attempts(e: dict[str, Any]) -> list[Attempt]:
    """The job's attempts, in order, each within the job's own span.

    From the log's ``attempts``; a log without them (older ltoguard) gives one
    attempt from the first admission to the end, its requeues' waits inside."""
    q0, end = ev.start_time(e), ev.end_time(e)
    rows = _logged(e)
    if not rows:
        # No admission recorded (a sparse record): drawn as run from its start, as before.
        a = min(max(ev.num(e, "admitted") or q0, q0), end)
        return [Attempt(q0, a, end, ev.num(e, "paused_s") or 0.0, "done")]
    out = []
    for i, r in enumerate(rows):
        q = min(max(_field(r, 0) or q0, q0), end)
        # An attempt cut short (a signal while it waited) lasts until the next, or the end.
        nxt = _field(rows[i + 1], 0) if i + 1 < len(rows) else None
        stop = max(min(_field(r, 2) or nxt or end, end), q)
        adm = _field(r, 1)
        adm = None if adm is None else min(max(adm, q), stop)
        then = r[4] if len(r) > 4 and isinstance(r[4], str) else ""
        out.append(Attempt(q, adm, stop, max(0.0, _field(r, 3) or 0.0), then))
    return out


def times(e: dict[str, Any]) -> tuple[float, float, float]:
    """(waited, ran, paused) in seconds, as the timeline draws them: waited + ran is
    the job's bar, from first queued to finished; paused is part of ran."""
    total = max(0.0, ev.end_time(e) - ev.start_time(e))
    tries = attempts(e)
    if _logged(e):
        waited = sum((t.admitted if t.admitted is not None else t.ended) - t.queued for t in tries)
    else:
        waited = ev.waited(e)  # older logs: the total the job recorded
    waited = min(max(0.0, waited), total)
    return waited, total - waited, sum(t.paused for t in tries)


# ---------------------------------------------------------------------------
# figures


def samples(e: dict[str, Any]) -> list[tuple[float, float]]:
    """One job's memory samples as (wall time, bytes), sorted; malformed ones dropped."""
    out = []
    raw = e.get("samples")
    if not isinstance(raw, list):
        return []
    base = ev.num(e, "admitted") or ev.start_time(e)
    for p in raw:
        if not (isinstance(p, (list, tuple)) and len(p) == 2):
            continue
        t, v = p
        if isinstance(t, bool) or isinstance(v, bool):
            continue
        if not isinstance(t, (int, float)) or not isinstance(v, (int, float)):
            continue
        # Wall times; tolerate offsets from admission too.
        tt = float(t) if t > 1e8 else base + float(t)
        out.append((tt, max(0.0, float(v))))
    out.sort()
    return out


def memory_series(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The sum of the jobs' sampled memory, as (time, bytes) steps.

    Each job holds its last sample's value until its next sample and nothing
    outside its first..last sample.
    """
    per_job = [s for s in (samples(e) for e in events) if s]
    times = sorted({t for s in per_job for t, _ in s})
    series = []
    for t in times:
        total = 0.0
        for s in per_job:
            if t < s[0][0] or t > s[-1][0]:
                continue
            i = bisect.bisect_right(s, (t, float("inf"))) - 1
            total += s[i][1]
        series.append((t, total))
    return series


def peak_marks(events: list[dict[str, Any]]) -> list[tuple[float, float, float, str]]:
    """Each job's own peak (the largest of its runs) as (from, to, bytes, crate), drawn
    over its last run (a job stopped and queued again has several; one interrupted
    while it waited again, over the last that ran): the logged samples (one a second
    at most) miss the short rise at a fat-LTO compile's end, which its peak (the
    kernel's high-water mark, read while it runs) keeps."""
    out = []
    for e in events:
        peak = ev.num(e, "peak")
        ran = [(a.admitted, a.ended) for a in attempts(e) if a.admitted is not None]
        ran = [(start, end) for start, end in ran if end > start]
        if peak and peak > 0 and ran:
            start, end = ran[-1]
            out.append((start, end, float(peak), ev.text(e, "crate", "?")))
    return out


def budget_series(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The budget each admission saw (free memory plus what guarded jobs held), as steps."""
    pts = []
    for e in events:
        b, a = ev.num(e, "budget"), ev.num(e, "admitted")
        if b is not None and a is not None and b > 0:
            pts.append((a, b))
    return sorted(pts)


def _running_at(
    events: list[dict[str, Any]], t: float, skip: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for o in events:
        if o is skip:
            continue
        a = ev.num(o, "admitted")
        if a is not None and a <= t < ev.end_time(o):
            out.append(o)
    return out


def held_back(events: list[dict[str, Any]], fallback_budget: float | None) -> int | None:
    """Jobs that waited whose peak would not have fit beside the jobs then running,
    in the memory the machine (host and cgroups) really had at admission.

    An estimate after the fact (the peaks were measured later): the OOM kills the
    gate probably avoided. None when no budget was recorded.
    """
    if fallback_budget is None:
        return None
    n = 0
    for e in events:
        if ev.waited(e) <= ev.SERIALISED_WAIT:
            continue
        q = ev.start_time(e)
        # What the machine really had (an LTOGUARD_MEMORY budget below it would
        # count jobs that fit in memory as "avoided" kills).
        budget = ev.num(e, "physical") or ev.num(e, "budget") or fallback_budget
        others = sum(ev.num(o, "peak") or 0 for o in _running_at(events, q, e))
        if others and others + (ev.num(e, "peak") or 0) > budget:
            n += 1
    return n


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    s = ev.summarize(events)
    mem = memory_series(events)
    budgets = budget_series(events)
    # The logged samples (one a second at most, fewer in a long job) miss spikes,
    # which each job's own peak (its kernel high-water mark, read while it runs)
    # keeps: the card shows the larger, so it is never below the jobs table's.
    largest = max((ev.num(e, "peak") or 0 for e in events), default=0)
    s["peak_total"] = max(max((v for _, v in mem), default=0.0), float(largest))
    s["budget_min"] = min((b for _, b in budgets), default=None)
    s["held_back"] = held_back(events, s["budget_min"])
    return s
