"""`ltoguard status`: what the gate is doing now.

``ltoguard status [--json] [--watch [SECONDS]]`` shows the limit, the running
guarded jobs, the waiters in FIFO order and the available memory. The semaphore
mutex is held only for the snapshot (milliseconds), never while printing or
sleeping. A state directory that does not exist is not created: nothing ran yet.

``--json`` prints one object (with ``--watch``: one object per line, per refresh).
Schema, version 1 (keys are always present; ``null`` where unknown)::

    {
      "version": 1,
      "state_dir": str,               # absolute path
      "exists": bool,                 # false: no guarded compile has run yet
      "time": float,                  # wall time of the snapshot (Unix seconds)
      "limit": {"slots": int | null,  # null: auto (memory decides)
                "memory": str | null, # the memory setting (LTOGUARD_MEMORY), null: auto
                "origins": {"slots": str | null, "memory": str | null}},
                                      # where each came from: "default", "LTOGUARD_SLOTS",
                                      # a config file..., null if unknown
      "memory": null | {              # null only when "exists" is false
        "available": int,             # bytes a new guarded job can count on
        "total": int,                 # size of the bound that decided it
        "source": str,                # e.g. "host (MemAvailable)", "cgroup v1 ... (limit 8 GiB)"
        "constraints": [{"available": int, "total": int, "source": str}, ...]},
      "running": [{                   # by slot
        "slot": int, "crate": str | null, "kind": str | null, "pid": int | null,
        "child": int | null,          # the compiler's pid, once spawned
        "workspace": str | null, "started": float | null, "age": float | null,
        "rss": int | null,            # bytes now, the compile's whole tree (as admission counts)
        "paused": bool,               # its compile is paused to leave room for older jobs
        "paused_s": float,            # seconds paused in all, the current pause included
        "estimate": int | null, "estimate_basis": str | null,
        "budget": int | null,         # the memory bound this job decides against (its
        "budget_source": str | null}, ...],  # own settings and cgroup), from its record
      "waiting": [{                   # FIFO order, head first
        "position": int,              # 1 = next to be admitted
        "crate": str | null, "kind": str | null, "pid": int | null,
        "workspace": str | null, "since": float | null, "waiting": float | null,
        "estimate": int | null, "estimate_basis": str | null,
        "budget": int | null, "budget_source": str | null}, ...]
    }
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ltoguard.commands.common import (
    EXIT_OK,
    View,
    error,
    float_or_none,
    fmt_age,
    fmt_bytes,
    fmt_estimate,
    int_or_none,
    load_view,
    no_state_message,
    str_or_none,
    table,
)
from ltoguard.records import printable
from ltoguard.statedir import StateDirError, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from ltoguard.memory import MemorySnapshot

SCHEMA_VERSION = 1
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def collect(view: View, dir_fd: int, now: float | None = None) -> dict[str, Any]:
    """A status document (the --json schema) for an existing, opened state directory."""
    from ltoguard.memory import available_memory
    from ltoguard.semaphore import Semaphore

    sem = Semaphore(view.dir, dir_fd)
    # Only the snapshot under the mutex: admissions wait on it.
    with sem.mutex():
        snap = sem.snapshot()
        queue = sem.queue()
    now = time.time() if now is None else now
    running = [
        _running(h.slot, h.record or {}, now) for h in sorted(snap.holders, key=lambda h: h.slot)
    ]
    waiting = [_waiting(i, t, now) for i, t in enumerate(queue, start=1)]
    held = sum(r["rss"] or 0 for r in running)
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "exists": True,
        "time": now,
        "limit": _limit(view),
        "memory": _memory(available_memory(view.memory_parsed, guarded_usage=held)),
        "running": running,
        "waiting": waiting,
    }


def _running(slot: int, rec: Mapping[str, Any], now: float) -> dict[str, Any]:
    from ltoguard.proctree import job_memory

    pid, child = int_or_none(rec.get("pid")), int_or_none(rec.get("child"))
    started = float_or_none(rec.get("started"))
    target = child or pid
    return {
        "slot": slot,
        "crate": str_or_none(rec.get("crate")),
        "kind": str_or_none(rec.get("kind")),
        "pid": pid,
        "child": child,
        "workspace": str_or_none(rec.get("workspace")),
        "started": started,
        "age": None if started is None else max(0.0, now - started),
        "rss": job_memory(target) if target else None,
        **_paused(rec, now),
        "estimate": int_or_none(rec.get("estimate")),
        "estimate_basis": str_or_none(rec.get("estimate_basis")),
        **_bound(rec),
    }


def _paused(rec: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Whether the job's compile is paused now (pause.py), and for how long in all."""
    paused = rec.get("paused") is True
    total = float_or_none(rec.get("paused_s")) or 0.0
    since = float_or_none(rec.get("paused_since"))
    if paused and since is not None:
        total += max(0.0, now - since)
    return {"paused": paused, "paused_s": round(total, 3)}


def _bound(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The memory bound that job decides against, from its own record: another
    build's LTOGUARD_MEMORY or cgroup may differ from this shell's."""
    return {
        "budget": int_or_none(rec.get("limit_total")),
        "budget_source": str_or_none(rec.get("limit_source")),
    }


def _waiting(position: int, ticket: Mapping[str, Any], now: float) -> dict[str, Any]:
    since = float_or_none(ticket.get("since"))
    return {
        "position": position,
        "crate": str_or_none(ticket.get("crate")),
        "kind": str_or_none(ticket.get("kind")),
        "pid": int_or_none(ticket.get("pid")),
        "workspace": str_or_none(ticket.get("workspace")),
        "since": since,
        "waiting": None if since is None else max(0.0, now - since),
        "estimate": int_or_none(ticket.get("estimate")),
        "estimate_basis": str_or_none(ticket.get("estimate_basis")),
        **_bound(ticket),
    }


def _memory(mem: MemorySnapshot) -> dict[str, Any]:
    return {
        "available": mem.available,
        "total": mem.total,
        "source": mem.source,
        "constraints": [
            {"available": c.available, "total": c.total, "source": c.source}
            for c in mem.constraints
        ],
    }


def _limit(view: View) -> dict[str, Any]:
    o = view.origins or {}
    return {
        "slots": view.slots,
        "memory": view.memory,
        "origins": {"slots": o.get("slots"), "memory": o.get("memory")},
    }


def empty_doc(view: View) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "exists": False,
        "time": time.time(),
        "limit": _limit(view),
        "memory": None,
        "running": [],
        "waiting": [],
    }


def limit_line(limit: dict[str, Any]) -> str:
    slots, memory = limit.get("slots"), limit.get("memory")
    origins = limit.get("origins") or {}

    def origin(key: str) -> str:
        where = origins.get(key)
        return f" [{where}]" if where else ""

    s = "auto (memory decides)" if slots is None else f"{slots} slot{'s' if slots != 1 else ''}"
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


def _width() -> int | None:
    """The terminal's width; a pipe or log takes whole lines."""
    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns


class _Source:
    """Opens the state directory when it appears (--watch may start before a build)."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.fd: int | None = None

    def doc(self) -> dict[str, Any]:
        if self.fd is None:
            if not os.path.isdir(self.view.dir):
                return empty_doc(self.view)
            # open_state_dir would create a missing directory; it exists here.
            _path, self.fd = open_state_dir(self.view.dir)
        return collect(self.view, self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not v > 0 or v > 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return v


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltoguard status",
        description="Running and waiting guarded jobs, the limit and the available memory.",
    )
    parser.add_argument("--json", action="store_true", help="print the documented JSON schema")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=_positive,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 1) until Ctrl-C",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        view = load_view()
    except ValueError as exc:
        return error(str(exc))
    source = _Source(view)
    try:
        while True:
            try:
                doc = source.doc()
            except (StateDirError, ValueError) as exc:
                return error(str(exc))
            if args.json:
                out = json.dumps(doc, indent=None if args.watch else 2) + "\n"
            else:
                out = render(doc, _width())
            if args.watch and not args.json:
                # Redraw in place only on a terminal: a pipe or log gets one snapshot
                # after another, without control codes.
                if sys.stdout.isatty():
                    out = CLEAR + out + f"\n(every {args.watch:g}s; Ctrl-C to stop)\n"
                else:
                    out = f"--- {time.strftime('%H:%M:%S')}\n" + out
            sys.stdout.write(out)
            sys.stdout.flush()
            if not args.watch:
                return EXIT_OK
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        source.close()
