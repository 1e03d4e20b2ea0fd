"""`ltoguard report`: one self-contained HTML timeline of a build.

The events to show and the figures are ``report_data``; the page is ``report_html``,
its charts ``report_svg``.
A build is the events of one workspace whose times are close together
(``events.group_builds``). Default: the latest build of the workspace around the
current directory, else the latest build of any workspace.

Exit codes (``common``): EXIT_OK written, EXIT_FAILED no events to report,
EXIT_CONFIG bad arguments or settings, or the file cannot be written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time

from ltoguard import events as ev
from ltoguard.commands.common import EXIT_FAILED, EXIT_OK, View, error, load_view
from ltoguard.commands.report_data import select
from ltoguard.commands.report_html import render_html
from ltoguard.statedir import StateDirError, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

REPORT_NAME = "ltoguard-report.html"

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
_REL_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``1700000000`` (Unix time), ``2024-05-01T12:00``, ``12:30`` (today), or ``30m``/``2h``/``1d`` ago."""
    now = time.time() if now is None else now
    s = text.strip()
    m = _REL.match(s)
    if m:
        return now - float(m.group(1)) * _REL_UNITS[m.group(2).lower()]
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if v > 1e8:
            return v
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", s):
        today = dt.date.fromtimestamp(now).isoformat()
        s = f"{today}T{s}"
    try:
        return dt.datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: accepted: a date/time (2024-05-01T12:00, 12:30 for today),"
            " a duration ago (90s, 30m, 2h, 1d) or Unix seconds"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltoguard report",
        description="Write an HTML timeline of a build's guarded jobs (default: the latest build).",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help=f"output file (default: {REPORT_NAME} in the workspace's target directory,"
        " $CARGO_TARGET_DIR if set, which git already ignores)",
    )
    parser.add_argument(
        "--workspace", metavar="PATH", help="report this workspace (default: the current one)"
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--since",
        metavar="TIME",
        help="every job queued since TIME (2024-05-01T12:00, 12:30, 30m, 2h, 1d or Unix seconds)",
    )
    when.add_argument("--last", action="store_true", help="the latest build (the default)")
    return parser


def default_out(events: list[dict[str, Any]], environ: Mapping[str, str]) -> str:
    """REPORT_NAME in the build's target directory: $CARGO_TARGET_DIR (relative to the
    workspace, as cargo reads it), else <workspace>/target; the current directory when
    neither exists (a build elsewhere, or one whose target was cleaned)."""
    workspace = next((ev.text(e, "workspace") for e in events if ev.text(e, "workspace")), "")
    target = environ.get("CARGO_TARGET_DIR") or "target"
    if workspace:
        target = os.path.join(workspace, target)
    return os.path.join(target if os.path.isdir(target) else os.getcwd(), REPORT_NAME)


def _read_events(view: View) -> list[dict[str, Any]]:
    """This user's event log (StateDirError if the state directory is unusable)."""
    _path, dir_fd = open_state_dir(view.dir)
    try:
        return ev.read_events(dir_fd, os.geteuid())
    finally:
        os.close(dir_fd)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        view = load_view()
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        return error(str(exc))
    if not os.path.isdir(view.dir):
        return error(
            f"no guarded jobs recorded yet (state dir {view.dir}); build with ltoguard first",
            EXIT_FAILED,
        )
    try:
        records = _read_events(view)
    except StateDirError as exc:
        return error(str(exc))
    chosen, workspace = select(records, workspace=args.workspace, cwd=os.getcwd(), since=since)
    if not chosen:
        where = f" for {workspace}" if workspace else ""
        when_ = f" since {args.since}" if args.since else ""
        return error(
            f"no guarded jobs recorded{where}{when_} (state dir {view.dir});"
            " ltoguard logs a job when an LTO compile it guarded finishes",
            EXIT_FAILED,
        )
    page = render_html(chosen, workspace)
    out = os.path.abspath(args.out or default_out(chosen, os.environ))
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        return error(f"cannot write {out}: {exc.strerror or exc}")
    sys.stdout.write(f"{out}\n")
    return EXIT_OK
