"""A minimal GNU make / cargo jobserver client: lend our job's token while we wait.

cargo runs a job only while it holds one of its ``-j`` tokens; an ltoguard process
queued for an LTO slot would sit on that token with the CPU idle (issue #4). While it
waits it writes one byte back into the jobserver (``Lease.lend``), letting cargo start
another job, and it reads one byte back (``Lease.reclaim``) before its rustc starts.

Accounting, which every exit path must respect: the token our process stands for is
cargo's, held implicitly for our job, and cargo gives it back itself when we exit. We
never write that one. The only byte we write is the lent one, so after a lend we must
read exactly one byte back before we exit or run rustc, or the build runs one job more
than ``-j`` until it ends. Which byte comes back does not matter (make uses several
values); we write ``+`` like GNU make and cargo do.

Descriptors. With ``--jobserver-auth=R,W`` (cargo, GNU make <= 4.3) R and W are open
file descriptions shared with cargo and with the rustc we start later: we never close
them, never change their flags (O_NONBLOCK lives on the shared description) and the
caller must pass them to the child (``pass_fds``; Python closes them by default). To
read without ever blocking we open ``/proc/self/fd/R``, which gives a new, private
description of the same pipe that we may make non-blocking. With
``--jobserver-auth=fifo:PATH`` (GNU make >= 4.4) we open our own description of the
fifo; the child finds the path in the environment and opens its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Callable

__all__ = ["Jobserver", "Lease", "parse_makeflags"]

# cargo sets CARGO_MAKEFLAGS; make sets MAKEFLAGS (and MFLAGS for old makefiles).
_ENV_VARS = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")
_OPTIONS = ("--jobserver-auth=", "--jobserver-fds=")
_TOKEN = b"+"
# Signals whose handlers could otherwise run between a read/write of a token and the
# bookkeeping of it, which would leave the pool one token off.
_GUARDED_SIGNALS = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))

_TAKEN, _EMPTY, _GONE = "taken", "empty", "gone"


def _split_words(value: str) -> Iterator[str]:
    """Split a MAKEFLAGS value on unescaped blanks; GNU make escapes blanks as ``\\ ``."""
    word: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in " \t\n":
            if word:
                yield "".join(word)
                word = []
        else:
            word.append(ch)
    if word:
        yield "".join(word)


def parse_makeflags(value: str) -> str | None:
    """The value of the last jobserver option in one MAKEFLAGS-style string, or None.

    Words after ``--`` are variable overrides (``w -j3 -- CFLAGS=...``), not options,
    so they are not searched.
    """
    found: str | None = None
    for word in _split_words(value):
        if word == "--":
            break
        for option in _OPTIONS:
            if word.startswith(option):
                found = word[len(option) :]
    return found


def _parse_fd(text: str) -> int | None:
    # int() would accept "+3", " 3" and "3_0".
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _is_fifo_with_access(fd: int, readable: bool) -> os.stat_result | None:
    try:
        st = os.fstat(fd)
        flags = _get_fl(fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode):
        return None
    mode = flags & os.O_ACCMODE
    wanted = os.O_RDONLY if readable else os.O_WRONLY
    if mode not in (wanted, os.O_RDWR):
        return None
    return st


def _get_fl(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP/SIGQUIT handlers for the length of the block.

    Only the calling thread's mask changes: this protects a single-threaded process
    (ltoguard's wrapper path), not one whose other threads accept these signals.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _GUARDED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Jobserver:
    """A connection to the jobserver named in the environment. Never raises on use.

    Build it with :meth:`from_environ`. Methods return False instead of raising when
    the jobserver misbehaves: a jobserver problem must never fail the build.
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
        # reads then go to read_fd after a poll, see _take().
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

        The first variable that carries a jobserver option is used (its last such
        option wins). None when it is absent, malformed, names a Windows semaphore,
        or its fds are closed or are not the two ends of one pipe: a sub-make rule
        without ``+`` sees MAKEFLAGS naming fds that make did not pass, and those
        numbers may since have been reused for unrelated files.
        """
        for name in _ENV_VARS:
            value = environ.get(name)
            if not value:
                continue
            auth = parse_makeflags(value)
            if auth is not None:
                return cls._from_auth(auth)
        return None

    @classmethod
    def _from_auth(cls, auth: str) -> Jobserver | None:
        if auth.startswith("fifo:"):
            return cls._open_fifo(auth[len("fifo:") :])
        read_text, sep, write_text = auth.partition(",")
        if not sep:
            return None  # a Windows semaphore name, or garbage
        read_fd, write_fd = _parse_fd(read_text), _parse_fd(write_text)
        if read_fd is None or write_fd is None:
            return None
        read_st = _is_fifo_with_access(read_fd, readable=True)
        write_st = _is_fifo_with_access(write_fd, readable=False)
        if read_st is None or write_st is None:
            return None
        if (read_st.st_dev, read_st.st_ino) != (write_st.st_dev, write_st.st_ino):
            return None
        return cls(
            read_fd=read_fd,
            write_fd=write_fd,
            private_read_fd=cls._open_private_reader(read_fd, read_st),
            inherited=True,
            description=f"fds {read_fd},{write_fd}",
        )

    @staticmethod
    def _open_private_reader(read_fd: int, read_st: os.stat_result) -> int | None:
        try:
            fd = os.open(f"/proc/self/fd/{read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if (st.st_dev, st.st_ino) != (read_st.st_dev, read_st.st_ino):
            os.close(fd)
            return None
        return fd

    @classmethod
    def _open_fifo(cls, path: str) -> Jobserver | None:
        if not path:
            return None
        try:
            # O_RDWR: opening a fifo never blocks that way, and one description serves
            # both directions. O_NONBLOCK: the description is ours alone.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            is_fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            is_fifo = False
        if not is_fifo:
            os.close(fd)
            return None
        return cls(
            read_fd=fd,
            write_fd=fd,
            private_read_fd=None,
            inherited=False,
            description=f"fifo {path}",
        )

    # -- descriptors ----------------------------------------------------------------

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds a child (rustc) needs to keep the jobserver: give to ``pass_fds``."""
        return (self._read_fd, self._write_fd) if self._inherited else ()

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

    def try_acquire(self) -> bool:
        """Take one token if one is there right now; never blocks."""
        return self._take() == _TAKEN

    def acquire(
        self,
        *,
        should_stop: Callable[[], bool] | None = None,
        poll: float = 0.05,
        timeout: float | None = None,
    ) -> bool:
        """Take one token, waiting for it. False on EOF (the jobserver is gone), on
        ``should_stop()`` returning True (checked every ``poll`` seconds), or after
        ``timeout`` seconds."""
        return self._acquire_with(self._take, should_stop, poll, timeout)

    def _acquire_with(
        self,
        take: Callable[[], str],
        should_stop: Callable[[], bool] | None,
        poll: float,
        timeout: float | None,
    ) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if should_stop is not None and should_stop():
                return False
            result = take()
            if result == _TAKEN:
                return True
            if result == _GONE:
                return False
            wait = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait = min(wait, remaining)
            self._poll(self._reader(), select.POLLIN, wait)

    def _reader(self) -> int:
        return self._read_fd if self._private_read_fd is None else self._private_read_fd

    def _take(self) -> str:
        if self.gone:
            return _GONE
        fd = self._reader()
        # A shared description: if it is blocking (no /proc to open a private one),
        # another process may take the byte between poll and read, and the read then
        # waits for the next token to be freed. Cargo frees tokens as jobs end, so
        # that wait ends, but should_stop is not seen meanwhile.
        shared = self._private_read_fd is None and self._inherited
        if shared and not self._poll(fd, select.POLLIN, 0):
            return _EMPTY
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return _EMPTY
        except OSError:
            self.gone = True
            return _GONE
        if not data:
            self.gone = True  # EOF: every write end is closed
            return _GONE
        return _TAKEN

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

    ``lend()`` when starting to wait, ``reclaim()`` before running rustc. Used as a
    context manager, leaving the block with the token still lent (an exception, a
    signal handler that raised, an early return) reclaims it, waiting at most
    ``exit_timeout`` seconds with SIGINT/SIGTERM/SIGHUP/SIGQUIT deferred so that a
    second Ctrl-C cannot cut the balancing short. It stops early when our parent
    (cargo or make) has gone: nothing is left to balance for. If the token cannot be
    taken back in time (cargo started a long job with it) ``leaked`` is set and one
    warning line goes to stderr: the build then runs one job over ``-j`` until it ends.

    The process must have handlers for SIGTERM (and SIGHUP) that raise or set the
    flag ``should_stop`` reads: with the default action the kernel ends the process
    and nothing can give the token back.

    The jobserver may be None (no jobserver): every method then does nothing.
    """

    def __init__(self, jobserver: Jobserver | None, *, exit_timeout: float = 2.0) -> None:
        self._jobserver = jobserver
        self._lent = False
        self._parent = os.getppid()
        self.exit_timeout = exit_timeout
        self.leaked = False

    @property
    def lent(self) -> bool:
        return self._lent

    def lend(self) -> bool:
        """Give one token back to the jobserver; True if one is now lent."""
        if self._jobserver is None or self._lent:
            return self._lent
        with _signals_blocked():
            # Blocked so that a handler cannot raise between the write and the flag.
            self._lent = self._jobserver.release()
        return self._lent

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

        def take() -> str:
            with _signals_blocked():
                result = jobserver._take()
                if result != _EMPTY:
                    self._lent = False
            return result

        return jobserver._acquire_with(take, should_stop, poll, timeout) and not self._lent

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._lent:
            return
        with _signals_blocked():
            self.reclaim(should_stop=self._parent_gone, timeout=self.exit_timeout)
            if self._lent and not self._parent_gone():
                self.leaked = True
                sys.stderr.write(
                    "ltoguard: warning: could not take back the jobserver token lent while"
                    f" waiting within {self.exit_timeout:g}s; this build may run one job"
                    " more than -j until it ends\n"
                )
                sys.stderr.flush()
            self._lent = False

    def _parent_gone(self) -> bool:
        return os.getppid() != self._parent
