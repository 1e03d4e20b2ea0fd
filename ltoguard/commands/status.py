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
      "limit": {"slots": int | null,  # null: auto (memory and CPUs decide)
                "memory": str | null, # the memory setting (LTOGUARD_MEMORY), null: auto
                "origins": {"slots": str | null, "memory": str | null}},
                                      # where each came from: "default", "LTOGUARD_SLOTS",
                                      # a config file..., null if unknown
      "memory": null | {              # null only when "exists" is false
        "available": int,             # bytes a new guarded job can count on
        "total": int,                 # size of the bound that decided it
        "source": str,                # e.g. "host (MemAvailable)", "cgroup v1 ... (limit 8 GiB)"
        "constraints": [{"available": int, "total": int, "source": str}, ...]},
      "pressure": [{                  # memory pressure (PSI), host then cgroup v2 groups;
        "source": str,                # empty without PSI. Percent of time stalled on
        "some10": float, "some60": float,  # memory over 10 and 60 s: some task,
        "full10": float, "full60": float}, ...],  # every task
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
    int_or_none,
    load_view,
    str_or_none,
)
from ltoguard.commands.status_render import render
from ltoguard.commands.status_render import width as terminal_width
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
    from ltoguard.pressure import all_pressures
    from ltoguard.semaphore import Semaphore
    from ltoguard.structs import asdict

    sem = Semaphore(view.dir, dir_fd)
    # Only the snapshot under the mutex: admissions wait on it.
    with sem.mutex():
        snap = sem.snapshot()
        queue = sem.queue()
    now = time.time() if now is None else now
    waiting = [_waiting(i, t, now) for i, t in enumerate(queue, start=1)]
    # A job stopped to free memory queues again before it frees its slot (for those
    # milliseconds it has both): it is shown where it is going, among the waiters.
    queued = {w["pid"] for w in waiting} - {None}
    running = [
        _running(h.slot, h.record or {}, now)
        for h in sorted(snap.holders, key=lambda h: h.slot)
        if int_or_none((h.record or {}).get("pid")) not in queued
    ]
    held = sum(r["rss"] or 0 for r in running)
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "exists": True,
        "time": now,
        "limit": _limit(view),
        "memory": _memory(available_memory(view.memory_parsed, guarded_usage=held)),
        "pressure": [asdict(p) for p in all_pressures()],
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
        "pressure": [],
        "running": [],
        "waiting": [],
    }


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
                out = render(doc, terminal_width())
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
