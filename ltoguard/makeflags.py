"""Where the jobserver is: the option in CARGO_MAKEFLAGS / MAKEFLAGS, and our descriptors for it.

With ``--jobserver-auth=R,W`` (cargo, GNU make <= 4.3) R and W are open file
descriptions shared with cargo and with the rustc we start later: we never close
them and never change their flags (O_NONBLOCK lives on the shared description). To
read without ever blocking we open ``/proc/self/fd/R``, which gives a new, private
description of the same pipe that we may make non-blocking. With
``--jobserver-auth=fifo:PATH`` (GNU make >= 4.4) we open our own description of the
fifo; the child finds the path in the environment and opens its own. A rustc that
must hold least memory gets a jobserver of its own instead (`one_thread_jobserver`).
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator, Mapping

from ltoguard.structs import struct

# cargo sets CARGO_MAKEFLAGS; make sets MAKEFLAGS (and MFLAGS for old makefiles).
ENV_VARS = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")
_OPTIONS = ("--jobserver-auth=", "--jobserver-fds=")


@struct(frozen=True)
class Endpoints:
    """The descriptors of one jobserver connection.

    ``private_read_fd`` is our own non-blocking description of the read end, or None
    when there is none: in the fifo form (read_fd is already ours and non-blocking)
    or when /proc could not give one. ``inherited``: read_fd and write_fd are cargo's
    (never closed by us); otherwise they are ours (the fifo form).
    """

    read_fd: int
    write_fd: int
    private_read_fd: int | None
    inherited: bool
    description: str


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


def jobserver_auth(environ: Mapping[str, str]) -> str | None:
    """The jobserver option of CARGO_MAKEFLAGS, else MAKEFLAGS, else MFLAGS, or None.

    The first variable that carries a jobserver option is used (its last such
    option wins), valid or not.
    """
    for name in ENV_VARS:
        value = environ.get(name)
        if not value:
            continue
        auth = parse_makeflags(value)
        if auth is not None:
            return auth
    return None


def open_endpoints(auth: str) -> Endpoints | None:
    """Checked descriptors for one jobserver option's value, or None.

    None when it is malformed, names a Windows semaphore, or its fds are closed or
    are not the two ends of one pipe: a sub-make rule without ``+`` sees MAKEFLAGS
    naming fds that make did not pass, and those numbers may since have been reused
    for unrelated files.
    """
    if auth.startswith("fifo:"):
        return _open_fifo(auth[len("fifo:") :])
    read_text, sep, write_text = auth.partition(",")
    if not sep:
        return None  # a Windows semaphore name, or garbage
    read_fd, write_fd = _parse_fd(read_text), _parse_fd(write_text)
    if read_fd is None or write_fd is None:
        return None
    read_st = _fifo_with_access(read_fd, readable=True)
    write_st = _fifo_with_access(write_fd, readable=False)
    if read_st is None or write_st is None:
        return None
    if (read_st.st_dev, read_st.st_ino) != (write_st.st_dev, write_st.st_ino):
        return None
    return Endpoints(
        read_fd=read_fd,
        write_fd=write_fd,
        private_read_fd=_open_private_reader(read_fd, read_st),
        inherited=True,
        description=f"fds {read_fd},{write_fd}",
    )


def _parse_fd(text: str) -> int | None:
    # int() would accept "+3", " 3" and "3_0".
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _fifo_with_access(fd: int, readable: bool) -> os.stat_result | None:
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode):
        return None
    mode = flags & os.O_ACCMODE
    wanted = os.O_RDONLY if readable else os.O_WRONLY
    if mode not in (wanted, os.O_RDWR):
        return None
    return st


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


def _open_fifo(path: str) -> Endpoints | None:
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
    return Endpoints(
        read_fd=fd, write_fd=fd, private_read_fd=None, inherited=False, description=f"fifo {path}"
    )


def one_thread_jobserver(env: dict[str, str]) -> tuple[int, int]:
    """Point ``env`` at a jobserver of our own that holds no token, for a rustc that
    must hold least memory (a rerun alone after an OOM kill, a job near the bound:
    attempt.py); returns its two descriptors (the child must inherit them; the caller
    closes its copies once the child runs). Raises OSError when no pipe can be made.

    rustc runs one LLVM worker per jobserver token it holds, beyond the one its
    process stands for, and every worker holds a module in memory (docs/benchmarks.md,
    "A rerun alone on one codegen thread"). With no token to take it runs on the
    token cargo gave it, and cargo's spare ones stay cargo's. CARGO_MAKEFLAGS is read first (rustc, the jobserver
    crate) and is set whole; in MAKEFLAGS and MFLAGS, where set (a linker's GCC LTO,
    ``-flto=jobserver``, reads them), only the jobserver options change.
    """
    read_fd, write_fd = os.pipe()
    auth = f"--jobserver-fds={read_fd},{write_fd} --jobserver-auth={read_fd},{write_fd}"
    env[ENV_VARS[0]] = f"-j1 {auth}"
    for name in ENV_VARS[1:]:
        if name in env:
            env[name] = _with_auth(env[name], auth)
    return read_fd, write_fd


def _with_auth(value: str, auth: str) -> str:
    """A MAKEFLAGS-style value with its jobserver options replaced by ``auth``, which
    goes after the options, before any ``--`` and the variable overrides after it
    (GNU make's first word may be bare single-letter flags, ``k``: it stays first)."""
    import re

    words = re.split(r"(?<!\\)([ \t\n]+)", value)  # blanks kept, escaped ones not split
    if "--" in words:
        cut = words.index("--")
        head, tail = words[:cut], words[cut:]
    else:
        head, tail = words, []
    kept = [w for w in head if not w.startswith(_OPTIONS)]
    text = "".join(kept).strip()
    return " ".join(part for part in (text, auth, "".join(tail).strip()) if part)
