"""`ltoguard learned`: what ltoguard has measured and what it will expect.

``ltoguard learned [--json]`` says where the memory history is read and written,
lists it (per job: crate, workspace, profile, recent peaks, current estimate) and
summarises the event log. Estimates are the ones a compile by the toolchain
``rustc`` resolves to here (``$RUSTC``, else ``rustc``; rustup's override for this
directory included) would get: peaks measured with another toolchain count only as a hint. Its JSON:
``{"version": 1, "state_dir", "history_file", "history": {"written", "read",
"cache_dir", "cache_dir_problem"}, "toolchain": {"rustc", "id"},
"jobs": [{"key", "crate", "workspace", "opt_level", "lto", "debuginfo", "target",
"types", "group", "peaks", "toolchain", "this_toolchain", "estimate",
"estimate_basis"}], "events": {"all": SUMMARY, "last_build": SUMMARY | null}}``
where SUMMARY is ``{"jobs", "total_wait", "serialised", "oom_reruns",
"requeues", "outcomes", "first", "last"}``; toolchain ids are null where unknown
(``this_toolchain`` null: the current one is unknown; false also for a peak
recorded before ltoguard kept toolchains). ``history_file`` is the file written
(``history.written``); ``history.read`` lists the files read, that one first.
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
    from ltoguard.history import HistoryStore

SCHEMA_VERSION = 1


def current_toolchain() -> tuple[str, str]:
    """(real rustc path, toolchain id) of the compiler cargo would run here: ``$RUSTC``
    or ``rustc``, through rustup's proxy to ``<sysroot>/bin/rustc`` (the path cargo
    hands the wrapper). ("", "") when it cannot be found or run."""
    import shutil
    import subprocess

    from ltoguard.jobs import toolchain_id

    rustc = shutil.which(os.environ.get("RUSTC") or "rustc")
    if rustc is None:
        return "", ""
    try:
        out = subprocess.run(
            [rustc, "--print", "sysroot"],
            # A toolchain rustup does not have is not installed just to be named.
            capture_output=True, text=True, timeout=30, check=True,
            env=dict(os.environ, RUSTUP_AUTO_INSTALL="0"),
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError, UnicodeError):
        return "", ""
    real = os.path.join(out, "bin", "rustc")
    ident = toolchain_id([real]) if out and os.path.isfile(real) else ""
    return (real, ident) if ident else ("", "")


def learned_doc(
    view: View, dir_fd: int | None, store: HistoryStore, toolchain: tuple[str, str] = ("", "")
) -> dict[str, Any]:
    """The document; ``dir_fd`` None: no state directory yet (the history may exist)."""
    jobs = _jobs(store.load(toolchain[1], quiet=False), toolchain[1])
    records = [] if dir_fd is None else ev.read_events(dir_fd, os.geteuid())
    builds = ev.group_builds(records)
    return {
        "version": SCHEMA_VERSION,
        "state_dir": view.dir,
        "history_file": store.written(),
        "history": store.as_dict(),
        "toolchain": _toolchain_doc(toolchain),
        "jobs": jobs,
        "events": {
            "all": ev.summarize(records),
            "last_build": ev.summarize(builds[-1]) if builds else None,
        },
    }


def _toolchain_doc(toolchain: tuple[str, str]) -> dict[str, str | None]:
    return {"rustc": toolchain[0] or None, "id": toolchain[1] or None}


def _jobs(history: History, toolchain: str = "") -> list[dict[str, Any]]:
    """Each job, with the estimate a compile by ``toolchain`` (an id; "": unknown,
    every peak counts) would get."""
    jobs = []
    for key, group, peaks in reversed(history.items()):  # most recent first
        try:
            parts = json.loads(key)
        except ValueError:
            parts = None
        if not (isinstance(parts, list) and len(parts) == 7):
            parts = [None] * 7
        ws, crate, opt, lto, debug, target, types = parts
        estimate, basis = history.estimate(key, group, toolchain=toolchain)
        measured_with = history.toolchain(key)
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
                "toolchain": measured_with or None,
                "this_toolchain": measured_with == toolchain if toolchain else None,
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
    if not jobs:
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
        f"memory history: {len(jobs)} jobs, most recent first",
        *_toolchain_lines(doc),
        *table(["CRATE", "WORKSPACE", "PROFILE", "RECENT PEAKS", "ESTIMATE"], rows),
    ]


def _toolchain_lines(doc: dict[str, Any]) -> list[str]:
    from ltoguard.estimates import OTHER_TOOLCHAIN_FACTOR

    rustc = doc["toolchain"]["rustc"]
    if rustc is None:
        return ["toolchain: unknown (rustc did not run here); estimates count every peak"]
    other = sum(1 for j in doc["jobs"] if j["this_toolchain"] is False)
    line = f"toolchain: {rustc}"
    if other:
        line += (
            f"; {other} of {len(doc['jobs'])} jobs were measured with another one: their"
            f" peaks are a hint only (x{OTHER_TOOLCHAIN_FACTOR:g}) until this one has built them"
        )
    return [line]


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
    from ltoguard.history import where_line

    lines = [
        f"ltoguard learned (state dir {doc['state_dir']})",
        f"history: {where_line(doc['history'])}",
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
    from ltoguard.history import HistoryStore

    dir_fd = None
    if os.path.isdir(view.dir):
        try:
            _path, dir_fd = open_state_dir(view.dir)
        except StateDirError as exc:
            return error(str(exc))
    # The history outlives the state directory (a reboot): read it all the same.
    store = HistoryStore.for_reading(lambda: (view.dir, dir_fd))
    try:
        if dir_fd is None and not args.json and not len(store.load()):
            sys.stdout.write(no_state_message(view.dir) + "\n")
            return EXIT_OK
        doc = learned_doc(view, dir_fd, store, current_toolchain())
    finally:
        store.close()
        if dir_fd is not None:
            os.close(dir_fd)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else render_learned(doc))
    return EXIT_OK
