"""How `ltoguard status` draws its screen: the header lines and tables that fit the
terminal's width without cutting a value (status.py collects what it shows)."""

from __future__ import annotations

import sys

from ltoguard.commands.common import fmt_age, fmt_bytes, fmt_estimate, no_state_message, table
from ltoguard.records import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def limit_line(limit: dict[str, Any]) -> str:
    slots, memory = limit.get("slots"), limit.get("memory")
    origins = limit.get("origins") or {}

    def origin(key: str) -> str:
        where = origins.get(key)
        return f" [{where}]" if where else ""

    s = (
        "auto (memory and CPUs decide)"
        if slots is None
        else f"{slots} slot{'s' if slots != 1 else ''}"
    )
    if memory is None or str(memory).strip().lower() in ("", "auto"):
        m = "auto (available memory)"
    elif str(memory).strip().startswith("-"):
        m = f"all but {str(memory).strip()[1:]}"
    else:
        m = f"{memory} for guarded jobs"
    return f"limit: {s}{origin('slots')}; memory budget: {m}{origin('memory')}"


def budget_line(doc: dict[str, Any]) -> str:
    """The memory budget the jobs in the gate decide against, from their own records
    (their build's LTOGUARD_MEMORY and cgroup); this shell's only when none says."""
    jobs = [*doc["running"], *doc["waiting"]]
    counts: dict[str, int] = {}
    for job in jobs:
        if job.get("budget") is not None:
            text = _fmt_bound(job)
            counts[text] = counts.get(text, 0) + 1
    if not counts:
        why = "no job runs" if not jobs else "the jobs' records do not say theirs"
        return limit_line(doc["limit"]) + f" (this shell's settings: {why})"
    silent = len(jobs) - sum(counts.values())
    if len(counts) == 1 and not silent:
        [text] = counts
        whose = "the job decides" if len(jobs) == 1 else "every job decides"
        return f"memory budget: {text}, what {whose} against (its record)"
    parts = [f"{t} [{_jobs(n)}]" for t, n in counts.items()]
    if silent:
        parts.append(f"{_jobs(silent)} without a record of it")
    return "memory budgets the jobs decide against (their records): " + "; ".join(parts)


def _jobs(n: int) -> str:
    return f"{n} job{'s' if n != 1 else ''}"


def render(doc: dict[str, Any], width: int | None = None) -> str:
    """The text screen; tables fit ``width`` columns (None: no limit)."""
    if not doc["exists"]:
        return no_state_message(doc["state_dir"]) + "\n"
    lines = [f"ltoguard status (state dir {doc['state_dir']})", budget_line(doc)]
    mem = doc["memory"]
    lines.append(
        f"available memory: {fmt_bytes(mem['available'])} of {fmt_bytes(mem['total'])};"
        f" bound: {mem['source']}"
    )
    for c in mem["constraints"]:
        if c["source"] != mem["source"]:
            lines.append(
                f"  also: {c['source']}: {fmt_bytes(c['available'])} of {fmt_bytes(c['total'])}"
            )
    lines += pressure_lines(doc.get("pressure") or [])
    lines.append("")
    lines += _running_lines(doc["running"], width)
    lines += _waiting_lines(doc["waiting"], width)
    return "\n".join(lines) + "\n"


# What gives way when a table is wider than the terminal, in order: a value's detail
# in parentheses first, then whole columns; a value is never cut.
_NARROWING = (
    ("short", "BUDGET"),
    ("short", "ESTIMATE"),
    ("drop", "CHILD"),
    ("drop", "BUDGET"),
    ("drop", "AGE"),
    ("drop", "PID"),
    ("drop", "ESTIMATE"),
)


def fit_table(header: list[str], rows: list[list[Any]], width: int | None) -> list[str]:
    """``table`` narrowed to ``width`` by shortening values and dropping columns."""
    short: set[str] = set()
    dropped: set[str] = set()

    def build() -> list[str]:
        keep = [i for i, name in enumerate(header) if name not in dropped]
        body = [
            [
                c if isinstance(c, str) else c[1 if header[i] in short else 0]
                for i, c in enumerate(r)
                if i in keep
            ]
            for r in rows
        ]
        return table([header[i] for i in keep], body)

    lines = build()
    for action, name in _NARROWING:
        if width is None or max(len(x) for x in lines) <= width:
            break
        if name in header:
            (short if action == "short" else dropped).add(name)
            lines = build()
    return lines


def _estimate(job: dict[str, Any]) -> tuple[str, str]:
    return fmt_estimate(job["estimate"], job["estimate_basis"]), fmt_estimate(job["estimate"], None)


def _running_lines(run: list[dict[str, Any]], width: int | None = None) -> list[str]:
    if not run:
        return ["running: none"]
    rows: list[list[Any]] = [
        [
            str(r["slot"]),
            r["crate"] or "?",
            str(r["pid"] or "?"),
            str(r["child"] or "-"),
            fmt_age(r["age"]),
            f"paused {fmt_age(r['paused_s'])}" if r["paused"] else "running",
            fmt_bytes(r["rss"]),
            _estimate(r),
            (_fmt_bound(r), fmt_bytes(r["budget"])),
        ]
        for r in run
    ]
    header = ["SLOT", "CRATE", "PID", "CHILD", "AGE", "STATE", "MEMORY", "ESTIMATE", "BUDGET"]
    return [f"running ({len(run)}):", *fit_table(header, rows, width)]


def _waiting_lines(wait: list[dict[str, Any]], width: int | None = None) -> list[str]:
    if not wait:
        return ["waiting: none"]
    rows: list[list[Any]] = [
        [
            str(w["position"]),
            w["crate"] or "?",
            str(w["pid"] or "?"),
            fmt_age(w["waiting"]),
            _estimate(w),
            (_fmt_bound(w), fmt_bytes(w["budget"])),
        ]
        for w in wait
    ]
    header = ["#", "CRATE", "PID", "WAITING", "ESTIMATE", "BUDGET"]
    return [f"waiting ({len(wait)}, next first):", *fit_table(header, rows, width)]


def _fmt_bound(job: dict[str, Any]) -> str:
    if job.get("budget") is None:
        return "?"
    # Whole: a table too narrow for it shows the figure alone (fit_table).
    source = printable(job.get("budget_source") or "", 160)
    return f"{fmt_bytes(job['budget'])} ({source})" if source else fmt_bytes(job["budget"])


def width() -> int | None:
    """The terminal's width; a pipe or log takes whole lines."""
    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns


def pressure_lines(pressures: list[dict[str, Any]]) -> list[str]:
    """One line per PSI source: the share of time tasks stalled on memory."""
    return [
        f"memory pressure ({p['source']}): some {p['some10']:.1f}% / {p['some60']:.1f}%,"
        f" full {p['full10']:.1f}% / {p['full60']:.1f}% (10 s / 60 s)"
        for p in pressures
    ]
