"""`ltoguard report`'s numbers: which events make the build, and the figures drawn from them.

Events are the event log's records (``events.py``), written by any user sharing
the state directory: every field is read tolerantly (``events.num``/``events.text``).
"""

from __future__ import annotations

import bisect
import os

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
    """The sum of the jobs' sampled RSS, as (time, bytes) steps.

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
    # The samples (every 0.25 s, thinned) miss spikes between them, which each job's
    # own peak (its kernel high-water mark, read while it runs) keeps: the card
    # shows the larger, so it is never below the jobs table's largest peak.
    largest = max((ev.num(e, "peak") or 0 for e in events), default=0)
    s["peak_total"] = max(max((v for _, v in mem), default=0.0), float(largest))
    s["budget_min"] = min((b for _, b in budgets), default=None)
    s["held_back"] = held_back(events, s["budget_min"])
    return s
