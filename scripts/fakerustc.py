"""The fake rustc that the tests, scripts/stress.py and the waiter benchmarks put
behind ltoguard, the command that runs it guarded, and the environment they run in.

The fake rustc (`make_fake_rustc`) logs and behaves as these variables say:
  FAKE_LOG         append one JSON line per event: {"name", "what", "t" (time.time()),
                   "pid"}; "what" is "start", "end", "signal N" (FAKE_TRAP) or
                   "fds A,B" (FAKE_CHECK_FDS)
  FAKE_COUNTER     a JSON file, under flock, of the live compiles' pids and the most
                   seen at once ("max"): concurrency counted by the compiles themselves
                   (a killed compile never decrements, so it counts live pids)
  FAKE_NAME        the name logged (default "?")
  FAKE_SLEEP       seconds to run (float, default 0)
  FAKE_UNTIL       then wait until this path exists (a gate: see processes.Holder)
  FAKE_STDOUT_HEX  bytes (hex) written to stdout at start
  FAKE_STDERR_HEX  bytes (hex) written to stderr at start
  FAKE_CHECK_FDS   comma-separated fd numbers: log which of them are open
  FAKE_TRAP        exit with this status on SIGTERM, SIGINT or SIGHUP (logged)
  FAKE_SIGNAL      kill itself with this signal number at the end
  FAKE_EXIT        exit status (default 0)
  FAKE_JOBSERVER   log "jobserver AUTH tokens N": the jobserver it sees (CARGO_MAKEFLAGS,
                   else MAKEFLAGS) and how many tokens it held (taken without
                   blocking and put back)
  FAKE_LLVM_OOM_ONCE  a path: the first run (the path absent) makes it, logs "llvm oom"
                   and aborts as LLVM does when out of memory (status 1); later runs
                   go on as above
`clean_env` points FAKE_LOG and FAKE_COUNTER at log.jsonl and counter.json in its `tmp`.

Nothing under scripts/ imports tests/ (the tests import this module).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

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
    def first(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False
    if env.get("FAKE_LLVM_OOM_ONCE") and first(env["FAKE_LLVM_OOM_ONCE"]):
        record("llvm oom")
        if counter: bump(-1)
        os.write(2, b"LLVM ERROR: out of memory\\n")
        sys.exit(1)
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
    if env.get("FAKE_JOBSERVER"):
        flags = env.get("CARGO_MAKEFLAGS") or env.get("MAKEFLAGS", "")
        auth = flags.rpartition("--jobserver-auth=")[2].split(" ")[0]
        if auth.startswith("fifo:"):
            r = w = os.open(auth[5:], os.O_RDWR | os.O_NONBLOCK)
        else:
            r = os.open("/proc/self/fd/" + auth.split(",")[0], os.O_RDONLY | os.O_NONBLOCK)
            w = int(auth.split(",")[1])
        try:
            got = os.read(r, 64)
        except BlockingIOError:
            got = b""
        if got:
            os.write(w, got)
        record("jobserver %s tokens %d" % (auth, len(got)))
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


def read_log(path: Path) -> list[dict[str, Any]]:
    """The fake rustc's FAKE_LOG lines."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def starts(log_dir: Path) -> list[str]:
    """The names of the compiles started so far, in order (log_dir/log.jsonl)."""
    return [e["name"] for e in read_log(log_dir / "log.jsonl") if e["what"] == "start"]


def counter_max(log_dir: Path) -> int:
    """The most compiles that ran at once, as they counted themselves (log_dir/counter.json)."""
    return int(json.loads((log_dir / "counter.json").read_text())["max"])


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
