"""Helpers for tests that run real processes, imported from here. What scripts/ uses
too lives there (scripts/ never imports tests/) and is re-exported: the fake rustc,
`clean_env`, `starts` and `counter_max` (scripts/fakerustc.py); `Procs` (the one
reaper), `Holder` and the waits (scripts/processes.py). The probes below, and `prime`,
are the tests' own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

from scripts.fakerustc import (
    FAKE_RUSTC,
    LTO_BIN,
    clean_env,
    counter_max,
    ltoguard_cmd,
    make_fake_rustc,
    read_log,
    starts,
)
from scripts.processes import (
    Arg,
    Holder,
    Procs,
    cpu_fraction,
    cpu_seconds,
    descendants,
    pid_alive,
    wait_for,
)

__all__ = [
    "FAKE_RUSTC",
    "LTO_BIN",
    "NOBODY",
    "Arg",
    "Holder",
    "Procs",
    "as_nobody",
    "clean_env",
    "counter_max",
    "cpu_fraction",
    "cpu_seconds",
    "descendants",
    "live_processes_running",
    "ltoguard_cmd",
    "make_fake_rustc",
    "nobody_can_run_ltoguard",
    "pid_alive",
    "prime",
    "read_log",
    "starts",
    "state_leftovers",
    "system_python",
    "tickets",
    "wait_for",
]


def tickets(state: Path) -> list[str]:
    """The queue tickets (q-*) in the state directory, sorted by name; none if it is gone."""
    return sorted(n for n in os.listdir(state) if n.startswith("q-")) if state.exists() else []


def prime(tmp: Path, env: Mapping[str, str]) -> Path:
    """A fake rustc in `tmp`, after one guarded compile of it ("prime") ran with `env`:
    the state directory and its slot lock exist, unlocked."""
    rustc = make_fake_rustc(tmp)
    r = subprocess.run(
        ltoguard_cmd(rustc, "prime"),
        env=dict(env, FAKE_NAME="prime"),
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return rustc


def state_leftovers(state: Path) -> list[str]:
    """Files in the state dir other than lock files, the memory history and the event log."""
    keep = ("mutex.lock", "slot-", "memory-history-", "events-")
    try:
        return sorted(n for n in os.listdir(state) if not n.startswith(keep))
    except FileNotFoundError:
        return []


def live_processes_running(path: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line mentions `path` (a fake rustc)."""
    needle = str(path)
    out: list[int] = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(needle in part for part in p.info["cmdline"] or ()):
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


NOBODY = 65534


def as_nobody(cmd: list[str]) -> list[str]:
    """`cmd` run as uid/gid 65534 with no supplementary groups."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]


def system_python() -> str | None:
    """An interpreter uid 65534 can exec from a script's shebang. (On this machine
    the venv's python resolves into /root, 0700: a shell's exec gets through, a
    Python child's exec of a script naming it gets EACCES.)"""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    return None


def nobody_can_run_ltoguard(cwd: Path) -> str:
    """Why uid 65534 cannot run ltoguard and a fake rustc here, or "" if it can."""
    if os.geteuid() != 0:
        return "needs root to run processes as another user"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    if system_python() is None:
        return "no system python3 for the fake rustc of another user"
    probe = subprocess.run(
        as_nobody([sys.executable, "-c", "import ltoguard, psutil"]), cwd=cwd, capture_output=True
    )
    if probe.returncode != 0:
        return f"uid {NOBODY} cannot import ltoguard with {sys.executable}"
    return ""
