"""ltoguard's own lines on stderr, where they go, and its exit codes.

stdout belongs to rustc (cargo parses it); every ltoguard message is one line
prefixed ``ltoguard:``, with cargo's ``error:``/``warning:`` wording.

Under cargo, a wrapper's stderr is a pipe that cargo reads, and cargo stores every
line of it that is not JSON in the unit's message cache and prints it again on
every later build where the unit is fresh (cargo's ``on_stderr_line``; JSON lines
are either diagnostics, also cached, or artifact/timing notices, never shown). A
"crate x waits ..." line would be replayed, as if it waited now, on every no-op
build. So `note` writes past cargo: straight to cargo's own stderr (the terminal,
or the CI log's pipe), opened through /proc. Where that cannot be done (not under
cargo, cargo's stderr a regular file whose offset we would race, no /proc) it
writes to our stderr, and the caller words what it says so that a replay stays
true (past tense, once the wait is over): see `Channel.replayed`.

Imports only ``os``, ``stat`` and ``sys`` (``select`` when a write must wait).
"""

from __future__ import annotations

import os
import stat
import sys

EXIT_OK = 0
EXIT_FAILED = 1  # a command's check failed (e.g. `ltoguard doctor` found a problem)
# ltoguard's own configuration errors: a bad setting, an unusable state directory,
# a bad command line. A compiler's status is passed through unchanged instead.
EXIT_CONFIG = 2
EXIT_CANNOT_RUN = 127  # the program to run could not be started (like a shell)

WRITE_PATIENCE = 1.0  # seconds a line may wait for a stalled terminal or a full pipe


def _write(fd: int, text: str) -> bool:
    """Write on a non-blocking fd, waiting at most WRITE_PATIENCE in all: a line is
    written while a slot may be held, and a terminal paused with Ctrl-S or a CI log
    pipe nobody drains must not stall the build. False if it could not be written."""
    import select

    data = text.encode("utf-8", "replace")
    waited = 0.0
    try:
        while data:
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                if waited >= WRITE_PATIENCE:
                    return False
                select.select([], [fd], [], 0.1)
                waited += 0.1
                continue
            data = data[n:]
    except OSError:
        return False
    return True


def say(msg: str) -> None:
    """One ``ltoguard: ...`` line on our stderr (an error that fails the unit: cargo
    never replays a failed unit's output). A closed stderr is not worth failing for."""
    try:
        sys.stderr.write(f"ltoguard: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def error(msg: str) -> None:
    say(f"error: {msg}")


def warning(msg: str) -> None:
    """A warning during a compile that goes on: not through cargo's message cache."""
    note(f"warning: {msg}")


def _is_cargo(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == b"cargo"
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False  # that process is gone
        # No /proc (macOS): cargo sets CARGO_PKG_NAME for every rustc it runs.
        return "CARGO_PKG_NAME" in os.environ
    except OSError:
        return False


def cargo_stderr_fd(ppid: int) -> int:
    """An fd on cargo's own stderr (terminal or pipe), when our stderr is cargo's
    capture pipe; -1 otherwise. Opened O_NONBLOCK (a pipe with no reader left must
    not hang us), and kept so: `_write` waits a bounded time."""
    try:
        if not stat.S_ISFIFO(os.fstat(2).st_mode):
            return -1  # not cargo's capture pipe: cargo stores nothing of ours
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(f"/proc/{ppid}/fd/2", flags)
    except OSError:
        return -1
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            # A regular file: cargo writes at its own offset and would overwrite
            # what we append behind it.
            os.close(fd)
            return -1
    except OSError:
        os.close(fd)
        return -1
    return fd


class Channel:
    """Where informational lines go: cargo's own stderr when we can reach it."""

    __slots__ = ("fd", "tty", "under_cargo")

    def __init__(self, fd: int, tty: bool, under_cargo: bool) -> None:
        self.fd = fd  # -1: none, write to our stderr
        self.tty = tty
        self.under_cargo = under_cargo  # cargo is our parent, and caches our stderr

    @classmethod
    def detect(cls, ppid: int | None = None) -> Channel:
        ppid = os.getppid() if ppid is None else ppid
        if not _is_cargo(ppid):
            return cls(-1, False, False)
        fd = cargo_stderr_fd(ppid)
        return cls(fd, fd >= 0 and os.isatty(fd), True)

    @property
    def replayed(self) -> bool:
        """Would cargo store what `note` writes and print it again on later builds?
        Then say only what stays true then (past tense, once the wait is over)."""
        return self.under_cargo and self.fd < 0

    def write(self, msg: str) -> bool:
        if self.fd < 0:
            return False
        # On a terminal, clear cargo's progress bar line first (cargo redraws it).
        prefix = "\r\x1b[2K" if self.tty else ""
        return _write(self.fd, f"{prefix}ltoguard: {msg}\n")


_channel: Channel | None = None


def channel() -> Channel:
    """This process's channel, found on first use."""
    global _channel
    if _channel is None:
        _channel = Channel.detect()
    return _channel


def note(msg: str) -> None:
    """An informational ``ltoguard: ...`` line that cargo should not store and replay.

    Without a way past cargo it goes to our stderr (the caller chose words that stay
    true if replayed); with one that failed (a reader gone, a stalled terminal) it is
    dropped: its words were chosen for a line cargo would not keep."""
    ch = channel()
    if ch.fd < 0:
        say(msg)
    else:
        ch.write(msg)
