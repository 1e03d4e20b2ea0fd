"""process.ExitWait: the watch's wait for the compile to exit (a pidfd, else polling)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ltoguard import process
from tests.procs import Procs


def child(procs: Procs, seconds: float, code: int = 0) -> subprocess.Popen[bytes]:
    script = f"import sys, time; time.sleep({seconds}); sys.exit({code})"
    return procs.start([sys.executable, "-c", script], stdout=None, stderr=None)


@pytest.fixture(params=["pidfd", "polling"])
def how(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":

        def no_pidfd(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    return str(request.param)


def test_times_out_while_running_then_returns_the_exit_code(how: str, procs: Procs) -> None:
    p = child(procs, 0.8, code=3)
    waiter = process.ExitWait(p)
    try:
        assert (waiter.fd is not None) == (how == "pidfd")
        t = time.monotonic()
        assert waiter.wait(0.2) is None
        assert time.monotonic() - t >= 0.19
        code = None
        while code is None:
            code = waiter.wait(0.2)
        assert code == 3 and p.returncode == 3  # reaped
    finally:
        waiter.close()
    assert waiter.fd is None


def test_an_exit_ends_the_wait_at_once_not_at_the_timeout(how: str, procs: Procs) -> None:
    p = child(procs, 0.3)
    waiter = process.ExitWait(p)
    try:
        t = time.monotonic()
        assert waiter.wait(20) == 0
        assert time.monotonic() - t < 5
    finally:
        waiter.close()


def test_a_killed_child_reports_its_signal(how: str, procs: Procs) -> None:
    p = child(procs, 30)
    waiter = process.ExitWait(p)
    try:
        os.kill(p.pid, signal.SIGKILL)
        assert waiter.wait(20) == -signal.SIGKILL
    finally:
        waiter.close()


def test_a_stopped_child_is_not_an_exit(how: str, procs: Procs) -> None:
    p = child(procs, 30)
    waiter = process.ExitWait(p)
    try:
        os.kill(p.pid, signal.SIGSTOP)
        assert waiter.wait(0.3) is None
        os.kill(p.pid, signal.SIGCONT)
        os.kill(p.pid, signal.SIGTERM)
        assert waiter.wait(20) == -signal.SIGTERM
    finally:
        waiter.close()
