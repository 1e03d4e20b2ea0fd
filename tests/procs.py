"""Helpers for tests that run real processes: the fake rustc, `Procs` (the reaper),
`clean_env` (the environment of every child a test starts), and small waits and probes.

The fake rustc (`make_fake_rustc`) logs and behaves as these variables say:
  FAKE_LOG         append one JSON line per event: {"name", "what", "t" (time.time()),
                   "pid"}; "what" is "start", "end", "signal N" (FAKE_TRAP) or
                   "fds A,B" (FAKE_CHECK_FDS)
  FAKE_COUNTER     a JSON file, under flock, of the live compiles' pids and the most
                   seen at once ("max"): concurrency counted by the compiles themselves
                   (a killed compile never decrements, so it counts live pids)
  FAKE_NAME        the name logged (default "?")
  FAKE_SLEEP       seconds to run (float, default 0)
  FAKE_UNTIL       then wait until this path exists
  FAKE_STDOUT_HEX  bytes (hex) written to stdout at start
  FAKE_STDERR_HEX  bytes (hex) written to stderr at start
  FAKE_CHECK_FDS   comma-separated fd numbers: log which of them are open
  FAKE_TRAP        exit with this status on SIGTERM, SIGINT or SIGHUP (logged)
  FAKE_SIGNAL      kill itself with this signal number at the end
  FAKE_EXIT        exit status (default 0)
`clean_env` points FAKE_LOG and FAKE_COUNTER at log.jsonl and counter.json in its `tmp`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Union, overload

import psutil

# What subprocess accepts as one argument (tests pass non-UTF-8 bytes too).
Arg = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

# The fake rustc itself; its variables are in the module docstring.
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
    """The fake rustc as directory/rustc. `python`: the interpreter in its shebang
    (default: this one); tests that run it as another user pass one their uid can exec."""
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
    """The processes a test starts, and their reaper.

    Each process starts in its own session, so its whole tree can be signalled as one
    group. `cleanup` (the `procs` fixture's teardown; also `with Procs() as procs:`)
    SIGKILLs every group and any live descendant that left it, waits for every
    process and closes our ends of its pipes: no test leaves a process or an fd behind.
    stdout and stderr are pipes unless the caller says otherwise.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    @overload
    def start(
        self, cmd: Sequence[Arg], env: Mapping[str, str], *, text: Literal[True], **kw: Any
    ) -> subprocess.Popen[str]: ...

    @overload
    def start(
        self,
        cmd: Sequence[Arg],
        env: Mapping[str, str],
        *,
        text: Literal[False] = False,
        **kw: Any,
    ) -> subprocess.Popen[bytes]: ...

    def start(
        self, cmd: Sequence[Arg], env: Mapping[str, str], *, text: bool = False, **kw: Any
    ) -> subprocess.Popen[Any]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p: subprocess.Popen[Any] = subprocess.Popen(
            cmd, env=env, text=text, start_new_session=True, **kw
        )
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        # Collect descendants before their parents die and they get reparented.
        live = [p.pid for p in self.procs if p.poll() is None]
        for pid in descendants(live) if live else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            # Unclosed pipes leak an fd per test (ResourceWarning).
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream:
                    try:
                        stream.close()
                    except OSError:  # a flush into a pipe whose reader is gone
                        pass
        self.procs.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def descendants(pids: Sequence[int]) -> list[int]:
    """Live descendants of `pids` (one scan of the process table)."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    found: list[int] = []
    todo = list(pids)
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def read_log(path: Path) -> list[dict[str, Any]]:
    """The fake rustc's FAKE_LOG lines."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(pred: Callable[..., object], timeout: float = 20.0, interval: float = 0.01) -> bool:
    """Poll `pred()` until true or `timeout`; its last value. (`...`: callers bind loop
    variables as lambda defaults, `lambda n=i: ...`, which Callable[[], ...] refuses.)"""
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
    """The environment of every child a test starts that may run ltoguard: no inherited
    LTOGUARD_/jobserver/fake variables, no user config file (XDG_CONFIG_HOME is an
    empty tmp/xdg-config), no history but its own (XDG_CACHE_HOME is tmp/xdg-cache,
    made when a job first records), state in `state`, LTOGUARD_SLOTS=1, the fake rustc's log and
    counter in `tmp`; `extra` on top."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("LTOGUARD_", "FAKE_", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")):
            del env[k]
    cfg = tmp / "xdg-config"
    cfg.mkdir(exist_ok=True)
    env.update(
        XDG_CONFIG_HOME=str(cfg),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
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
