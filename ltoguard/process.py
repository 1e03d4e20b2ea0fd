"""Running the real compiler as a child: fds, signals, exit status."""

from __future__ import annotations

import os
import select
import signal
import sys

from ltoguard import proctree

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence

# The signals ltoguard handles and passes on to the compiler; blocked wherever a handler
# must not run between two steps that belong together (semaphore.py, jobserver.py).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


class Interrupted(BaseException):
    """A terminating signal arrived while waiting; nothing is held any more once it propagates."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_on_signals() -> None:
    """While waiting: a terminating signal interrupts the wait (ticket dropped, exit at once)."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    for s in FORWARDED:
        signal.signal(s, handler)


def _pdeathsig_preexec(parent: int, oom_score_adj: int | None) -> Callable[[], None]:
    """In the child: die with SIGKILL when ltoguard dies, so no orphan compile runs beside a newly admitted job."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    adj = f"{oom_score_adj}\n".encode() if oom_score_adj is not None else b""

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if adj:
            # Raising our own score needs no privilege: if the kernel must kill, it
            # picks a guarded compile (which ltoguard reruns), the youngest first.
            try:
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
                try:
                    os.write(fd, adj)
                finally:
                    os.close(fd)
            except OSError:
                pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(255)
        # Signals ignored/handled by us must reach the compiler with their defaults.
        for s in FORWARDED:
            signal.signal(s, signal.SIG_DFL)

    return preexec


def spawn(
    argv: Sequence[str],
    keep_fds: Sequence[int] = (),
    stderr: int | None = None,
    env: dict[str, str] | None = None,
    oom_score_adj: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the child with stdin/stdout/stderr and every inherited fd (jobserver) kept.

    close_fds=False: cargo's jobserver fds are inheritable and rustc must see them.
    Our own fds are O_CLOEXEC, except `keep_fds`, which the child inherits on purpose:
    the slot lock, so the slot stays held for as long as any process of the compile
    (rustc, its linker) is alive, and a jobserver of the compile's own, if it has one.
    """
    import subprocess  # here: a job that only waits never loads it (test_waiter_imports)

    for fd in keep_fds:
        os.set_inheritable(fd, True)
    linux = sys.platform.startswith("linux")
    preexec = _pdeathsig_preexec(os.getpid(), oom_score_adj) if linux else None
    try:
        return subprocess.Popen(
            list(argv), close_fds=False, preexec_fn=preexec, stderr=stderr, env=env
        )
    finally:
        for fd in keep_fds:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


class ExitWait:
    """Waits up to a timeout for a child to exit in one blocking call on a pidfd
    (Linux 5.3+), where Popen.wait(timeout) wakes every 50 ms to poll: the watch
    waits this way for as long as a compile runs. Elsewhere, Popen.wait."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(proc.pid)  # close-on-exec, like all our fds
        except (AttributeError, OSError):
            pass

    def wait(self, timeout: float) -> int | None:
        """The returncode once the child has exited (reaped), else None after `timeout`."""
        if self.fd is None:
            import subprocess

            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return self.proc.wait() if ready else None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Forwarder:
    """Passes each FORWARDED signal on to the compiler.

    Installed while the slot is taken and before the compiler exists: a signal that
    comes before it starts (or after it ended) is kept in `pending`, never lost and
    never raised in the middle of starting it (which would leave its record behind).
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []
        self.received: list[int] = []  # every signal, forwarded or not
        # Run after each forward, from the handler: a paused compile (pause.py) is
        # continued, or it would not act on the signal. It must not raise, block or
        # take a lock: it may run between any two bytecodes of the main thread.
        self.after_forward: Callable[[], None] | None = None

    def install(self) -> None:
        for s in FORWARDED:
            signal.signal(s, self._handler)

    def forward_to(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        while self.pending:
            self._send(self.pending.pop(0))

    def _handler(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if self.proc is None or self.proc.returncode is not None:
            self.pending.append(signum)
        else:
            self._send(signum)
            if self.after_forward is not None:
                self.after_forward()

    def _send(self, signum: int) -> None:
        assert self.proc is not None
        try:
            self.proc.send_signal(signum)
        except OSError:
            pass


def hold_signals() -> set[int | signal.Signals]:
    """Block the forwarded signals (they stay pending); return the mask to restore."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)


def restore_signals(mask: set[int | signal.Signals]) -> None:
    """A signal held back meanwhile is handled now, by whatever handler is installed."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def kill_tree(pid: int) -> None:
    """SIGKILL the compile and its children (the linker), the compiler last."""
    for proc in proctree.tree(pid):
        proctree.send(proc, signal.SIGKILL)


def exit_like(returncode: int) -> int:
    """Return the child's exit status; for a child killed by signal S, die by S too."""
    if returncode >= 0:
        return returncode
    sig = -returncode
    try:
        import resource

        # The child already dumped core if it was going to.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    except (OSError, ValueError):
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    return 128 + sig  # a signal whose default action is not to terminate
