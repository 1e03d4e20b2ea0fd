"""`ltoguard learned`: what ltoguard has measured and what it will expect.

``ltoguard learned [--json]`` lists the memory history (per job: crate,
workspace, profile, recent peaks, current estimate) and a summary of the event
log. Its JSON: ``{"version": 1, "state_dir", "history_file", "jobs": [{"key",
"crate", "workspace", "opt_level", "lto", "debuginfo", "target", "types",
"group", "peaks", "estimate", "estimate_basis"}], "events": {"all": SUMMARY,
"last_build": SUMMARY | null}}`` where SUMMARY is ``{"jobs", "total_wait",
"serialised", "oom_reruns", "requeues", "outcomes", "first", "last"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ltoguard import events as ev
from ltoguard.commands.common import (
    EXIT_OK,
    View,
    error,
    fmt_age,
    fmt_bytes,
    fmt_estimate,
    fmt_when,
    load_view,
    no_state_message,
    str_or_none,
    table,
)
from ltoguard.statedir import StateDirError, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from ltoguard.estimates import History

SCHEMA_VERSION = 1


def _history_file(dir_fd: int) -> str | None:
    """This user's history file, if there is one."""
    from ltoguard.estimates import history_file

    name = history_file(os.geteuid())
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return name


def learned_doc(view: View, dir_fd: int) -> dict[str, Any]:
    from ltoguard.estimates import History

    name = _history_file(dir_fd)
    jobs = [] if name is None else _jobs(History.load(name, dir_fd=dir_fd))
    records = ev.read_events(dir_fd, os.geteuid())
    builds = ev.group_builds(records)
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "history_file": None if name is None else os.path.join(view.dir, name),
        "jobs": jobs,
        "events": {
            "all": ev.summarize(records),
            "last_build": ev.summarize(builds[-1]) if builds else None,
        },
    }


def empty_doc(view: View) -> dict[str, Any]:
    """The document when no state directory exists yet."""
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "history_file": None,
        "jobs": [],
        "events": {"all": ev.summarize([]), "last_build": None},
    }


def _jobs(history: History) -> list[dict[str, Any]]:
    jobs = []
    for key, group, peaks in reversed(history.items()):  # most recent first
        try:
            parts = json.loads(key)
        except ValueError:
            parts = None
        if not (isinstance(parts, list) and len(parts) == 7):
            parts = [None] * 7
        ws, crate, opt, lto, debug, target, types = parts
        estimate, basis = history.estimate(key, group)
        jobs.append(
            {
                "key": key,
                "crate": str_or_none(crate),
                "workspace": str_or_none(ws),
                "opt_level": str_or_none(opt),
                "lto": str_or_none(lto),
                "debuginfo": str_or_none(debug),
                "target": str_or_none(target),
                "types": types if isinstance(types, list) else [],
                "group": group,
                "peaks": peaks,
                "estimate": estimate,
                "estimate_basis": basis,
            }
        )
    return jobs


def _summary_line(s: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(s["outcomes"].items()))
    return (
        f"{s['jobs']} jobs ({outcomes}), total wait {fmt_age(s['total_wait'])},"
        f" {s['serialised']} serialised, {s['oom_reruns']} OOM reruns, {s['requeues']} requeues"
    )


def _profile(j: dict[str, Any]) -> str:
    parts = (
        f"opt={j['opt_level']}" if j["opt_level"] else "",
        f"lto={j['lto']}" if j["lto"] else "",
        f"debug={j['debuginfo']}" if j["debuginfo"] else "",
        j["target"] or "",
        ",".join(str(t) for t in j["types"]),
    )
    return " ".join(x for x in parts if x)


def _history_lines(doc: dict[str, Any]) -> list[str]:
    jobs = doc["jobs"]
    if doc["history_file"] is None or not jobs:
        return ["memory history: empty (no guarded job has finished yet)"]
    rows = [
        [
            j["crate"] or "?",
            j["workspace"] or "?",
            _profile(j) or "?",
            " ".join(fmt_bytes(p) for p in j["peaks"]),
            fmt_estimate(j["estimate"], j["estimate_basis"]),
        ]
        for j in jobs
    ]
    return [
        f"memory history: {len(jobs)} jobs in {doc['history_file']}, most recent first",
        *table(["CRATE", "WORKSPACE", "PROFILE", "RECENT PEAKS", "ESTIMATE"], rows),
    ]


def _event_lines(every: dict[str, Any], last: dict[str, Any] | None) -> list[str]:
    if not every["jobs"]:
        return ["event log: empty"]
    lines = [
        f"event log: {_summary_line(every)}; {fmt_when(every['first'])} to {fmt_when(every['last'])}"
    ]
    if last is not None:
        lines.append(f"last build: {_summary_line(last)}; started {fmt_when(last['first'])}")
    return lines


def render_learned(doc: dict[str, Any]) -> str:
    lines = [
        f"ltoguard learned (state dir {doc['state_dir']})",
        *_history_lines(doc),
        "",
        *_event_lines(doc["events"]["all"], doc["events"]["last_build"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ltoguard learned",
        description="The per-job peak memory ltoguard has measured, and a summary of recent jobs.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (see the module docs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        view = load_view()
    except ValueError as exc:
        return error(str(exc))
    if not os.path.isdir(view.dir):
        if not args.json:
            sys.stdout.write(no_state_message(view.dir) + "\n")
            return EXIT_OK
        doc = empty_doc(view)
    else:
        try:
            _path, dir_fd = open_state_dir(view.dir)
        except StateDirError as exc:
            return error(str(exc))
        try:
            doc = learned_doc(view, dir_fd)
        finally:
            os.close(dir_fd)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else render_learned(doc))
    return EXIT_OK
