"""Handing an invocation to the real program: exec, and the "already guarded" check.

Imported by cli.py only when its own exec fails (to say why), and by the guarded
path, ltoguard-link and `ltoguard run`, which pass many calls through: it imports only
``os`` and ``sys`` (even ``signal`` costs noticeable start-up time: it imports enum).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Set for the child of an admitted job, so a gate nested inside it (the linker of a
# guarded rustc, `ltoguard run` inside `ltoguard run`) passes through: waiting for a
# second slot there would deadlock with LTOGUARD_SLOTS=1.
HELD_ENV = "LTOGUARD_HELD"


def nested() -> bool:
    """Are we inside a job ltoguard already admitted?"""
    return bool(os.environ.get(HELD_ENV))


def exec_program(args: Sequence[str]) -> int:
    """Become the compiler (or the inner wrapper): no ltoguard process stays behind."""
    try:
        os.execvp(args[0], list(args))
    except OSError as exc:
        sys.stderr.write(f"ltoguard: error: cannot run {args[0]}: {exc.strerror}\n")
        return 127
