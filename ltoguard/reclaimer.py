"""A job done that still owes cargo a lent token waits for it in a bare interpreter.

A job that lent its token while waiting and ran without one often finds none coming
back until cargo runs out of units: cargo keeps each token a job frees for its next
unit. Waiting in ltoguard itself kept a whole ltoguard process to the end of the
build; `exec_reclaimer` exec()s ``python -I -S -c _RECLAIMER`` in its place, a
fraction of that: the same pid, so cargo still waits for it and gets the compile's status
from it (docs/design.md, "The jobserver and lending").
"""

from __future__ import annotations

import os
import signal
import sys

from ltoguard.jobserver import _LEAK_WARNING
from ltoguard.messages import channel
from ltoguard.process import FORWARDED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Lease.reclaim_in_small_process: argv FD CODE TIMEOUT PARENT LENT_FILE WARNING WARN_FD.
# Waits for one byte (EOF: the jobserver is gone) while the parent lives, at most
# TIMEOUT s, or until a forwarded signal (held off until its handlers are in); says
# WARNING where messages.note would have if none came; exits CODE whatever happens.
_RECLAIMER = """\
import os, select, sys, time
code = int(sys.argv[2])
try:
    try:
        import _signal as signal  # CPython's own: `signal` would load enum
    except ImportError:
        import signal

    class Stop(Exception):
        pass

    forwarded = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")]

    def stop(*_):
        for s in forwarded:
            signal.signal(s, signal.SIG_IGN)  # once: a second one must not cut the exit short
        raise Stop

    for s in forwarded:
        signal.signal(s, stop)
    fd, wait, parent = int(sys.argv[1]), float(sys.argv[3]), int(sys.argv[4])
    end, poller, done = time.monotonic() + wait, select.poll(), False
    poller.register(fd, select.POLLIN)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        while not done and time.monotonic() < end and os.getppid() == parent:
            if poller.poll(250):
                try:
                    os.read(fd, 1)
                    done = True
                except BlockingIOError:
                    pass
                except OSError:
                    done = True
    except Stop:
        done = True  # a signal ends the wait, as it did in ltoguard itself
    try:
        os.unlink(sys.argv[5])
    except OSError:
        pass
    if not done and os.getppid() == parent:
        os.write(int(sys.argv[7]), sys.argv[6].encode())
finally:
    os._exit(code)
"""


def exec_reclaimer(
    fd: int, code: int, timeout: float, parent: int, lent_file: str, stopped: Callable[[], bool]
) -> None:
    """Become the reclaimer: wait for one byte on ``fd`` (our own non-blocking
    description of the jobserver's read end) while ``parent`` lives, at most
    ``timeout`` s, remove ``lent_file``, exit with ``code``. Returns where it does
    not: no interpreter to run, a thread still at work, a forwarded signal received
    (``stopped``, asked with them held off: one that comes later reaches the new
    process), or exec failed. Call it with everything said and flushed but stdio."""
    threads = sys.modules.get("threading")
    if not sys.executable or getattr(sys, "frozen", False):
        return
    if threads is not None and threads.active_count() > 1:
        return  # none should run now: exec would cut it short
    ch = channel()
    warn_fd = ch.fd if ch.fd >= 0 else 2
    prefix = "\r\x1b[2K" if ch.tty else ""  # as Channel.write: clear cargo's progress bar
    line = f"{prefix}ltoguard: warning: {_LEAK_WARNING.format(timeout)}\n"
    args = [str(fd), str(code), repr(timeout), str(parent), lent_file, line, str(warn_fd)]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # kept across exec
    try:
        if not stopped():
            sys.stdout.flush()
            sys.stderr.flush()
            os.set_inheritable(fd, True)
            os.set_inheritable(warn_fd, True)
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _RECLAIMER, *args])
    except (OSError, ValueError):
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
