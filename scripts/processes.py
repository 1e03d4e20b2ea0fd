"""The processes a test or a load script starts: `Procs` (the one reaper), `Holder`
(a guarded compile that keeps its slot until released), and small waits and probes.

Nothing under scripts/ imports tests/ (the tests import this module).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Union, overload

import psutil

from scripts.fakerustc import ltoguard_cmd, read_log

# What subprocess accepts as one argument (tests pass non-UTF-8 bytes too).
Arg = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]


class Procs:
    """The processes a test or a script starts, and their reaper.

    Each process starts in its own session, so its whole tree can be signalled as one
    group. `cleanup` (the `procs` fixture's teardown; also `with Procs() as procs:`)
    SIGKILLs every group and any live descendant that left it, waits for every
    process and closes our ends of its pipes: no test leaves a process or an fd behind.
    stdout and stderr are pipes, and env is ours, unless the caller says otherwise.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    @overload
    def start(
        self,
        cmd: Sequence[Arg],
        env: Mapping[str, str] | None = None,
        *,
        text: Literal[True],
        **kw: Any,
    ) -> subprocess.Popen[str]: ...

    @overload
    def start(
        self,
        cmd: Sequence[Arg],
        env: Mapping[str, str] | None = None,
        *,
        text: Literal[False] = False,
        **kw: Any,
    ) -> subprocess.Popen[bytes]: ...

    def start(
        self,
        cmd: Sequence[Arg],
        env: Mapping[str, str] | None = None,
        *,
        text: bool = False,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p: subprocess.Popen[Any] = subprocess.Popen(
            cmd, env=env, text=text, start_new_session=True, **kw
        )
        self.procs.append(p)
        return p

    def holder(
        self,
        rustc: Path,
        env: Mapping[str, str],
        name: str = "holder",
        *,
        cmd: Sequence[Arg] | None = None,
        timeout: float = 20.0,
        **kw: Any,
    ) -> Holder:
        """A guarded compile named `name` (`cmd`, default `ltoguard_cmd(rustc, name)`)
        whose fake rustc keeps its slot until `release()`; returned once it runs
        (AssertionError if not within `timeout`). Its gate file is NAME.gate beside
        env's FAKE_LOG; `kw` goes to `start`."""
        log = Path(env["FAKE_LOG"])
        gate = log.parent / f"{name}.gate"
        proc = self.start(
            ltoguard_cmd(rustc, name) if cmd is None else cmd,
            dict(env, FAKE_NAME=name, FAKE_UNTIL=str(gate)),
            text=False,
            **kw,
        )
        return Holder(proc, name, log, gate).wait_running(timeout)

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


class Holder:
    """A guarded compile that holds its slot until `release()`: its fake rustc waits
    (FAKE_UNTIL) for the gate file that `release` creates. Made by `Procs.holder`."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path, gate: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log
        self.gate = gate

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        """Whether its compile has started (the fake rustc logged it)."""
        return any(e["what"] == "start" and e["name"] == self.name for e in read_log(self.log))

    def wait_running(self, timeout: float = 20.0) -> Holder:
        if not wait_for(self.running, timeout):
            raise AssertionError(f"{self.name}'s compile never started (status {self.proc.poll()})")
        return self

    def release(self) -> None:
        self.gate.touch()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)


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
