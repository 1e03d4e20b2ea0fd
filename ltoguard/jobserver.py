"""A minimal GNU make / cargo jobserver client: lend our job's token while we wait.

cargo runs a job only while it holds one of its ``-j`` tokens; an ltoguard process
queued for an LTO slot would sit on that token with the CPU idle. While it waits (and
while its compile is paused) it writes one byte back into the jobserver
(``Lease.lend``), letting cargo start another job. It does not wait for a byte to
start its rustc: it reads one back (``Lease.reclaim``) in the background while the
compile runs (pause.Reclaimer), and waits for it after the compile, holding no slot.

Accounting, which every exit path must respect: the token our process stands for is
cargo's, held implicitly for our job, and cargo gives it back itself when we exit. We
never write that one. The only byte we write is the lent one, so after a lend we must
read exactly one byte back before we exit, or the build runs one job more than ``-j``
until it ends (as it does while a compile runs before its byte is back). Which byte
comes back does not matter (make uses several values); we write ``+`` like GNU make
and cargo do.

Finding the jobserver and opening our descriptors for it is ltoguard.makeflags. The
rustc we start keeps cargo's descriptors because ltoguard spawns it with every
inheritable fd kept (process.spawn), unless it must hold least memory: then it runs
on an empty jobserver of its own (makeflags.one_thread_jobserver, attempt.py).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Mapping

from ltoguard.makeflags import jobserver_auth, open_endpoints
from ltoguard.messages import warning
from ltoguard.process import FORWARDED

__all__ = ["Jobserver", "Lease"]

_TOKEN = b"+"

TAKEN, EMPTY, GONE = "taken", "empty", "gone"

_LEAK_WARNING = (
    "could not take back the jobserver token lent while waiting within {:g}s; this"
    " build may run one job more than -j until it ends"
)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Defer the forwarded signals' handlers for the length of the block: one that
    raised between a read or write of a token and its bookkeeping would leave the
    pool one token off.

    Only the calling thread's mask changes, and CPython runs handlers in the main
    thread whichever thread the kernel picked: this holds them off only while no
    other thread takes these signals (the waiting path and the exit); while a
    compile runs, beside the sampler's thread, the handlers installed do not raise.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Jobserver:
    """A connection to the jobserver named in the environment. Never raises on use.

    Build it with :meth:`from_environ`. Methods report a jobserver that misbehaves
    (False, GONE) instead of raising: a jobserver problem must never fail the build.
    """

    def __init__(
        self,
        *,
        read_fd: int,
        write_fd: int,
        private_read_fd: int | None,
        inherited: bool,
        description: str,
    ) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        # None means no private non-blocking description could be opened (no /proc):
        # reads then go to read_fd after a poll, see take().
        self._private_read_fd = private_read_fd
        self._inherited = inherited
        self._owned = {fd for fd in (private_read_fd,) if fd is not None}
        if not inherited:
            self._owned.update((read_fd, write_fd))
        self.description = description
        self.gone = False

    def __repr__(self) -> str:
        return f"Jobserver({self.description})"

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Jobserver | None:
        """The jobserver of CARGO_MAKEFLAGS, else MAKEFLAGS, else MFLAGS, or None.

        None also when the option found is malformed or names descriptors that are not
        a usable pipe (see makeflags.open_endpoints): then there is nothing to lend.
        """
        auth = jobserver_auth(environ)
        ends = None if auth is None else open_endpoints(auth)
        if ends is None:
            return None
        return cls(
            read_fd=ends.read_fd,
            write_fd=ends.write_fd,
            private_read_fd=ends.private_read_fd,
            inherited=ends.inherited,
            description=ends.description,
        )

    # -- descriptors ----------------------------------------------------------------

    @property
    def read_fd(self) -> int:
        """The descriptor tokens are read from: our private one when there is one."""
        return self._read_fd if self._private_read_fd is None else self._private_read_fd

    @property
    def own_read_fd(self) -> int | None:
        """A non-blocking description of the read end that is ours alone (a private
        one, or the fifo we opened), or None: reads then go to cargo's shared one."""
        if self._private_read_fd is not None:
            return self._private_read_fd
        return None if self._inherited or self.gone else self._read_fd

    def close(self) -> None:
        """Close the descriptors this object opened; the inherited ones stay open."""
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()
        self._private_read_fd = None
        self.gone = True

    def __enter__(self) -> Jobserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ---------------------------------------------------------------------

    def release(self, *, timeout: float = 5.0) -> bool:
        """Write one token. False if that cannot be done (closed, EPIPE, full pipe)."""
        if self.gone:
            return False
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.write(self._write_fd, _TOKEN) == 1:
                    return True
            except BlockingIOError:
                # A full pipe (64 KiB of tokens) is not a real jobserver state, but a
                # non-blocking write end reports it and must not spin or hang us.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._poll(self._write_fd, select.POLLOUT, min(remaining, 0.05))
            except OSError:
                # EPIPE (no reader left: SIGPIPE is ignored by Python), EBADF, ...
                return False

    def take(self) -> str:
        """Read one token if one is there right now, without waiting for one (but see
        the shared blocking description below).

        TAKEN, EMPTY, or GONE (EOF or an error: the jobserver is gone for good)."""
        if self.gone:
            return GONE
        fd = self.read_fd
        # A shared description: if it is blocking (no /proc to open a private one),
        # another process may take the byte between poll and read, and the read then
        # waits for the next token to be freed. Cargo frees tokens as jobs end, so
        # that wait ends, but should_stop is not seen meanwhile.
        shared = self._private_read_fd is None and self._inherited
        if shared and not self._poll(fd, select.POLLIN, 0):
            return EMPTY
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return EMPTY
        except OSError:
            self.gone = True
            return GONE
        if not data:
            self.gone = True  # EOF: every write end is closed
            return GONE
        return TAKEN

    def wait_readable(self, timeout: float) -> None:
        """Wait at most `timeout` seconds for a token to be there to take."""
        self._poll(self.read_fd, select.POLLIN, timeout)

    @staticmethod
    def _poll(fd: int, events: int, timeout: float) -> bool:
        poller = select.poll()
        poller.register(fd, events)
        try:
            # POLLHUP/POLLERR count as ready: the read or write that follows reports it.
            return bool(poller.poll(max(0, int(timeout * 1000))))
        except OSError:
            return True


class Lease:
    """At most one token lent to the jobserver, and the duty to take it back.

    ``lend()`` when starting to wait or pausing, ``reclaim()`` while the compile runs
    and before exiting. Used as a context manager, leaving the block with the token
    still lent (an exception, a signal handler that raised, an early return) reclaims
    it, waiting at most ``exit_timeout`` seconds with the forwarded signals deferred so
    that a second Ctrl-C cannot cut the balancing short. It stops early when our parent
    (cargo or make) has gone: nothing is left to balance for. If the token cannot be
    taken back in time (cargo started a long job with it) ``leaked`` is set and one
    warning line goes to stderr: the build then runs one job over ``-j`` until it ends.

    The process must have handlers for SIGTERM (and SIGHUP) that raise or set the
    flag ``should_stop`` reads: with the default action the kernel ends the process
    and nothing can give the token back.

    The jobserver may be None (no jobserver): every method then does nothing.
    """

    def __init__(
        self,
        jobserver: Jobserver | None,
        *,
        exit_timeout: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._jobserver = jobserver
        self._lent = False
        self._on_change = on_change  # told True once lent, False once no longer
        self._parent = os.getppid()
        self.exit_timeout = exit_timeout
        self.leaked = False

    @property
    def lent(self) -> bool:
        return self._lent

    @property
    def active(self) -> bool:
        """Is there a jobserver to lend to?"""
        return self._jobserver is not None

    def lend(self) -> bool:
        """Give one token back to the jobserver; True if one is now lent."""
        if self._jobserver is None or self._lent:
            return self._lent
        with _signals_blocked():
            # Blocked so that a handler cannot raise between the write and the flag.
            self._lent = self._jobserver.release()
            if self._lent:
                self._changed(True)
        return self._lent

    def _changed(self, lent: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(lent)
            except OSError:
                pass  # the count of lent tokens is advice; the token itself is what counts

    def reclaim(
        self,
        *,
        should_stop: Callable[[], bool] | None = None,
        poll: float = 0.05,
        timeout: float | None = None,
    ) -> bool:
        """Take the lent token back, waiting for it; True when nothing is lent anymore.

        False when stopped, timed out, or the jobserver is gone; in the last case the
        lease is dropped (no pool is left to unbalance) and ``lent`` becomes False.
        """
        jobserver = self._jobserver
        if jobserver is None or not self._lent:
            return True

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if should_stop is not None and should_stop():
                return False
            with _signals_blocked():
                # Blocked so that a handler cannot raise between the read and the flag.
                result = jobserver.take()
                if result != EMPTY:
                    self._lent = False
                    self._changed(False)
            if result == TAKEN:
                return True
            if result == GONE:
                return False
            wait = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait = min(wait, remaining)
            jobserver.wait_readable(wait)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._lent:
            return
        with _signals_blocked():
            self.reclaim(should_stop=self.parent_gone, timeout=self.exit_timeout)
            if self._lent and not self.parent_gone():
                self.leaked = True
                # The build goes on: a warning, not through cargo's message cache.
                warning(_LEAK_WARNING.format(self.exit_timeout))
            if self._lent:
                self._lent = False
                self._changed(False)

    def reclaim_in_small_process(
        self, code: int, timeout: float, lent_file: str, stopped: Callable[[], bool]
    ) -> None:
        """Wait for the lent token in a bare interpreter exec()ed in our place, which
        then exits with ``code`` (>= 0) and removes ``lent_file`` (reclaimer.py).
        Returns where that is not done: nothing lent, no read end of our own (an
        inherited pipe without /proc), a compile killed by a signal, or as
        reclaimer.exec_reclaimer says; the caller then waits here as before."""
        jobserver = self._jobserver
        fd = None if jobserver is None or not self._lent else jobserver.own_read_fd
        if fd is not None and code >= 0:
            from ltoguard.reclaimer import exec_reclaimer

            exec_reclaimer(fd, code, timeout, self._parent, lent_file, stopped)

    def parent_gone(self) -> bool:
        """Has the process that owns the jobserver (cargo, make) gone? Then there is
        no pool left to balance."""
        return os.getppid() != self._parent
