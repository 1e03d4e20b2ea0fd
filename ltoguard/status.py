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
        "source": str,                # e.g. "host (psutil)", "cgroup v1 ... (limit 8 GiB)"
        "constraints": [{"available": int, "total": int, "source": str}, ...]},
      "running": [{                   # by slot
        "slot": int, "crate": str | null, "kind": str | null, "pid": int | null,
        "child": int | null,          # the compiler's pid, once spawned
        "workspace": str | null, "started": float | null, "age": float | null,
        "rss": int | null,            # bytes, current, whole process tree
        "estimate": int | null, "estimate_basis": str | null}, ...],
      "waiting": [{                   # FIFO order, head first
        "position": int,              # 1 = next to be admitted
        "crate": str | null, "kind": str | null, "pid": int | null,
        "workspace": str | null, "since": float | null, "waiting": float | null,
        "estimate": int | null, "estimate_basis": str | null}, ...]
    }
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from ltoguard.statedir import StateDirError, default_path, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

SCHEMA_VERSION = 1
EXIT_ERROR = 2  # bad settings or an unusable state directory
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def err(msg: str) -> None:
    sys.stderr.write(f"ltoguard: error: {msg}\n")


@dataclass
class View:
    """The settings these commands need."""

    slots: int | None
    memory: str | None
    dir: str  # absolute
    origins: dict[str, str] | None = None  # setting -> where its value came from


def load_view(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> View:
    """Settings from ltoguard.config (env > Cargo.toml metadata > user file > defaults).

    Raises ValueError with a one-line message naming the setting.
    """
    from ltoguard.config import load

    env = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    try:
        s = load(env, cwd)
    except Exception as exc:  # its errors name the file and key; show them as they are
        raise ValueError(str(exc)) from None
    path = s.dir or default_path()
    return View(s.slots, s.memory, os.path.abspath(path), dict(s.origins))


def no_state_message(path: str) -> str:
    return f"no guarded compile has run yet (state dir {path})"


# ---------------------------------------------------------------------------
# status


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _float(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def collect(view: View, dir_fd: int, now: float | None = None) -> dict[str, Any]:
    """A status document (the --json schema) for an existing, opened state directory."""
    from ltoguard.memory import available_memory, tree_rss
    from ltoguard.semaphore import Semaphore

    sem = Semaphore(view.dir, dir_fd)
    # Only the snapshot under the mutex: admissions wait on it.
    with sem.mutex():
        snap = sem.snapshot()
        queue = sem.queue()
    now = time.time() if now is None else now

    running: list[dict[str, Any]] = []
    for h in sorted(snap.holders, key=lambda h: h.slot):
        rec = h.record or {}
        pid, child = _int(rec.get("pid")), _int(rec.get("child"))
        started = _float(rec.get("started"))
        target = child or pid
        running.append(
            {
                "slot": h.slot,
                "crate": str_or_none(rec.get("crate")),
                "kind": str_or_none(rec.get("kind")),
                "pid": pid,
                "child": child,
                "workspace": str_or_none(rec.get("workspace")),
                "started": started,
                "age": None if started is None else max(0.0, now - started),
                "rss": tree_rss(target) if target else None,
                "estimate": _int(rec.get("estimate")),
                "estimate_basis": str_or_none(rec.get("estimate_basis")),
            }
        )
    waiting = []
    for i, t in enumerate(queue, start=1):
        since = _float(t.get("since"))
        waiting.append(
            {
                "position": i,
                "crate": str_or_none(t.get("crate")),
                "kind": str_or_none(t.get("kind")),
                "pid": _int(t.get("pid")),
                "workspace": str_or_none(t.get("workspace")),
                "since": since,
                "waiting": None if since is None else max(0.0, now - since),
                "estimate": _int(t.get("estimate")),
                "estimate_basis": str_or_none(t.get("estimate_basis")),
            }
        )
    held = sum(r["rss"] or 0 for r in running)
    mem = available_memory(view.memory, guarded_usage=held)
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "exists": True,
        "time": now,
        "limit": _limit(view),
        "memory": {
            "available": mem.available,
            "total": mem.total,
            "source": mem.source,
            "constraints": [
                {"available": c.available, "total": c.total, "source": c.source}
                for c in mem.constraints
            ],
        },
        "running": running,
        "waiting": waiting,
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


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_bytes(n: int | None) -> str:
    from ltoguard.memory import format_size

    return "?" if n is None else format_size(n)


def fmt_estimate(n: int | None, basis: str | None) -> str:
    if n is None:
        return "?"
    return f"~{fmt_bytes(n)}" + (f" ({basis})" if basis else "")


def table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    from ltoguard.semaphore import printable

    # Cells come from records and history that other users may have written
    # (shared state dir): one safe line each, like the waiting line.
    rows = [[printable(c, limit=200) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    out = []
    for r in [list(header), *rows]:
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


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


def render(doc: dict[str, Any]) -> str:
    if not doc["exists"]:
        return no_state_message(doc["state_dir"]) + "\n"
    lines = [f"ltoguard status (state dir {doc['state_dir']})", limit_line(doc["limit"])]
    mem = doc["memory"]
    lines.append(
        f"available memory: {fmt_bytes(mem['available'])} of {fmt_bytes(mem['total'])}"
        f" (from {mem['source']})"
    )
    for c in mem["constraints"]:
        if c["source"] != mem["source"]:
            lines.append(
                f"  also: {c['source']}: {fmt_bytes(c['available'])} of {fmt_bytes(c['total'])}"
            )
    run = doc["running"]
    lines.append("")
    if run:
        lines.append(f"running ({len(run)}):")
        rows = [
            [
                str(r["slot"]),
                r["crate"] or "?",
                str(r["pid"] or "?"),
                str(r["child"] or "-"),
                fmt_age(r["age"]),
                fmt_bytes(r["rss"]),
                fmt_estimate(r["estimate"], r["estimate_basis"]),
            ]
            for r in run
        ]
        lines += table(["SLOT", "CRATE", "PID", "CHILD", "AGE", "MEMORY", "ESTIMATE"], rows)
    else:
        lines.append("running: none")
    wait = doc["waiting"]
    if wait:
        lines.append(f"waiting ({len(wait)}, next first):")
        rows = [
            [
                str(w["position"]),
                w["crate"] or "?",
                str(w["pid"] or "?"),
                fmt_age(w["waiting"]),
                fmt_estimate(w["estimate"], w["estimate_basis"]),
            ]
            for w in wait
        ]
        lines += table(["#", "CRATE", "PID", "WAITING", "ESTIMATE"], rows)
    else:
        lines.append("waiting: none")
    return "\n".join(lines) + "\n"


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


def main(argv: Sequence[str] | None = None) -> int:
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
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        view = load_view()
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    source = _Source(view)
    try:
        while True:
            try:
                doc = source.doc()
            except (StateDirError, ValueError) as exc:
                err(str(exc))
                return EXIT_ERROR
            if args.json:
                out = json.dumps(doc, indent=None if args.watch else 2) + "\n"
            else:
                out = render(doc)
            if args.watch and not args.json:
                out = CLEAR + out + f"\n(every {args.watch:g}s; Ctrl-C to stop)\n"
            sys.stdout.write(out)
            sys.stdout.flush()
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        source.close()
