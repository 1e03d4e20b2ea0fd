"""Helpers for tests that run real ltoguard processes in front of a fake rustc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

# A stand-in for rustc. It measures concurrency itself: under an flock'd counter
# file it counts how many guarded "compiles" run at once and records the maximum.
FAKE_RUSTC = textwrap.dedent(
    """\
    #!{python}
    import fcntl, json, os, signal, sys, time
    env = os.environ
    log = env.get("FAKE_LOG")
    counter = env.get("FAKE_COUNTER")
    name = env.get("FAKE_NAME", "?")
    def alive(pid):
        try:
            os.kill(pid, 0)
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False
    def bump(delta):
        # Killed compiles never decrement: count the live pids instead.
        with open(counter, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            state = json.loads(f.read() or '{{"pids": [], "max": 0}}')
            pids = [p for p in state["pids"] if p != os.getpid() and alive(p)]
            if delta > 0:
                pids.append(os.getpid())
            state["pids"] = pids
            state["max"] = max(state["max"], len(pids))
            f.seek(0); f.truncate(); f.write(json.dumps(state))
    def record(what):
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({{"name": name, "what": what, "t": time.time(), "pid": os.getpid()}}) + "\\n")
    if env.get("FAKE_TRAP"):
        def on_sig(s, f):
            record("signal %d" % s)
            sys.exit(int(env["FAKE_TRAP"]))
        signal.signal(signal.SIGTERM, on_sig)
        signal.signal(signal.SIGINT, on_sig)
        signal.signal(signal.SIGHUP, on_sig)
    if counter: bump(1)
    record("start")
    if env.get("FAKE_STDOUT_HEX"):
        os.write(1, bytes.fromhex(env["FAKE_STDOUT_HEX"]))
    if env.get("FAKE_STDERR_HEX"):
        os.write(2, bytes.fromhex(env["FAKE_STDERR_HEX"]))
    if env.get("FAKE_CHECK_FDS"):
        ok = []
        for fd in env["FAKE_CHECK_FDS"].split(","):
            try:
                os.fstat(int(fd)); ok.append(fd)
            except OSError:
                pass
        record("fds " + ",".join(ok))
    time.sleep(float(env.get("FAKE_SLEEP", "0")))
    while env.get("FAKE_UNTIL") and not os.path.exists(env["FAKE_UNTIL"]):
        time.sleep(0.01)
    record("end")
    if counter: bump(-1)
    if env.get("FAKE_SIGNAL"):
        sig = int(env["FAKE_SIGNAL"])
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(int(env.get("FAKE_EXIT", "0")))
    """
)

LTO_BIN = ["--crate-type", "bin", "--emit=dep-info,link", "-C", "opt-level=3", "-C", "lto=fat"]


def make_fake_rustc(directory: Path, python: str | None = None) -> Path:
    """`python`: the interpreter in the shebang (default: this one). Tests that run the
    fake as another user pass a system one their uid can execute."""
    path = directory / "rustc"
    path.write_text(FAKE_RUSTC.format(python=python or sys.executable))
    path.chmod(0o755)
    return path


def ltoguard_cmd(rustc: Path, crate: str, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ltoguard",
        str(rustc),
        "--crate-name",
        crate,
        "--edition=2021",
        "src/main.rs",
        *(extra if extra is not None else LTO_BIN),
    ]


class Procs:
    """Starts processes in their own process groups and kills whatever is left at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(cmd, env=env, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(pred: Any, timeout: float = 20.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, in nanosecond precision (/proc/PID/schedstat).

    psutil's cpu_times() counts 10 ms clock ticks, and a process that wakes on a
    timer is charged whole ticks: over 2 s one stray tick reads as 0.5% of a core.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def cpu_fraction(pid: int, seconds: float) -> float:
    """The share of one core `pid` uses over the next `seconds`."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# -- helpers for the reliability suite (issue #6) ----------------------------------


def clean_env(tmp: Path, state: Path, **extra: str) -> dict[str, str]:
    """The environment of a guarded test run: no inherited LTOGUARD_/jobserver/fake
    variables, no user config file, state in `state`, fake logs in `tmp`."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("LTOGUARD_", "FAKE_", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")):
            del env[k]
    cfg = tmp / "xdg-config"
    cfg.mkdir(exist_ok=True)
    env.update(
        XDG_CONFIG_HOME=str(cfg),
        LTOGUARD_DIR=str(state),
        LTOGUARD_SLOTS="1",
        FAKE_LOG=str(tmp / "log.jsonl"),
        FAKE_COUNTER=str(tmp / "counter.json"),
    )
    env.update(extra)
    return env


def state_leftovers(state: Path) -> list[str]:
    """Files in the state dir other than lock files, the memory history and the event log."""
    keep = ("mutex.lock", "slot-", "memory-history-", "events-")
    try:
        return sorted(n for n in os.listdir(state) if not n.startswith(keep))
    except FileNotFoundError:
        return []


def live_processes_running(path: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line mentions `path` (a fake rustc)."""
    import psutil

    needle = str(path)
    out = []
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
    import shutil

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
