"""Expand rustc's ``@file`` arguments, for ltoguard's eyes only (rustc gets them as they are).

cargo falls back to ``rustc @/tmp/cargo-argfile.XXXXXX`` when a command line is
too long for exec (E2BIG), so the rules must see what is inside. Imported only
when an argument starts with ``@`` (``classify.tokenize``, and jobs.py for a
guarded job's target directory and inputs): a normal pass-through run never
loads it. Imports nothing beyond ``os``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Far above any argfile cargo writes: this only stops `@/dev/zero`-style accidents.
ARGFILE_MAX = 64 * 1024 * 1024


def expand(args: Sequence[str]) -> list[str] | str:
    """``args`` with each ``@file`` replaced by its arguments (not recursively,
    as in rustc); a str result is why a file could not be read."""
    expanded: list[str] = []
    for a in args:
        if a[:1] == "@":
            got = read_argfile(a)
            if isinstance(got, str):
                return got
            expanded.extend(got)
        else:
            expanded.append(a)
    return expanded


def read_argfile(arg: str) -> list[str] | str:
    """Expand one ``@file`` argument as rustc does; a str result is an error reason."""
    shell = arg.startswith("@shell:")
    path = arg[7:] if shell else arg[1:]
    try:
        # O_NONBLOCK so a FIFO without a writer cannot hang us; only regular
        # files are read, because reading a pipe would steal rustc's arguments.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000:
                return f"argfile {path} is not a regular file; not read"
            if st.st_size > ARGFILE_MAX:
                return f"argfile {path} is larger than {ARGFILE_MAX} bytes; not read"
            chunks: list[bytes] = []
            total = 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                total += len(b)
                if total > ARGFILE_MAX:
                    return f"argfile {path} is larger than {ARGFILE_MAX} bytes; not read"
                chunks.append(b)
        finally:
            os.close(fd)
    except OSError as e:
        return f"cannot read argfile {path}: {e.strerror or type(e).__name__}"
    except ValueError as e:  # embedded NUL in the path
        return f"cannot read argfile {path!r}: {e}"
    text = b"".join(chunks).decode("utf-8", "surrogateescape")
    if shell:
        import shlex  # only for -Zshell-argfiles, which cargo never writes

        try:
            return shlex.split(text)
        except ValueError as e:
            return f"cannot parse shell argfile {path}: {e}"
    # cargo writes each argument followed by "\n"; rustc splits on "\n" without
    # trimming, so only the one empty element after the final newline is dropped.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
