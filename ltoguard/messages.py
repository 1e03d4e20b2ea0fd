"""ltoguard's own lines on stderr, and its exit codes.

stdout belongs to rustc (cargo parses it); every ltoguard message is one stderr
line prefixed ``ltoguard:``, with cargo's ``error:``/``warning:`` wording.
Imports only ``sys``.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILED = 1  # a command's check failed (e.g. a state directory that cannot be read)
# ltoguard's own configuration errors: a bad setting, an unusable state directory,
# a bad command line. A compiler's status is passed through unchanged instead.
EXIT_CONFIG = 2
EXIT_CANNOT_RUN = 127  # the program to run could not be started (like a shell)


def say(msg: str) -> None:
    """One ``ltoguard: ...`` line; a closed stderr is not worth failing the build for."""
    try:
        sys.stderr.write(f"ltoguard: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def error(msg: str) -> None:
    say(f"error: {msg}")


def warning(msg: str) -> None:
    say(f"warning: {msg}")
