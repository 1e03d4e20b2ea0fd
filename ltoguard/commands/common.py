"""What the subcommands share: exit codes (messages.py's, re-exported), error
output, the state view, tables and the formatting of values read from records.

Importing this costs only os, time, dataclasses and messages.py (everything else is
imported where it is used). The pass-through path (cli.py's exec) must not import it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# One set of exit codes and one way of writing errors for the whole package
# (messages.py, which the guarded path uses too); re-exported for the commands.
from ltoguard import messages
from ltoguard.messages import EXIT_CONFIG as EXIT_CONFIG
from ltoguard.messages import EXIT_FAILED as EXIT_FAILED
from ltoguard.messages import EXIT_OK as EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ltoguard.configvalues import MemorySetting


def error(msg: str, code: int = EXIT_CONFIG) -> int:
    """Write ``ltoguard: error: MSG`` (one line, stderr) and return ``code`` to exit with."""
    messages.error(msg)
    return code


def warning(msg: str) -> None:
    messages.say(f"warning: {msg}")


# ---------------------------------------------------------------------------
# the state view: what status, learned and report read


@dataclass(frozen=True)
class View:
    """The settings the state-reading commands need."""

    slots: int | None
    memory: str | None  # as written, for display
    dir: str  # absolute
    origins: dict[str, str] | None = None  # setting -> where its value came from
    memory_parsed: MemorySetting | None = None  # Settings.memory_parsed: None is auto


def load_view(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> View:
    """Settings from ltoguard.config (env > Cargo.toml metadata > user file > defaults).

    Raises ValueError with a one-line message naming the setting.
    """
    from ltoguard.config import load
    from ltoguard.statedir import StateDirError

    env = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    try:
        s = load(env, cwd)
    except Exception as exc:  # its errors name the file and key; show them as they are
        raise ValueError(str(exc)) from None
    try:
        path = check_state(s.dir)
    except StateDirError as exc:
        raise ValueError(str(exc)) from None
    return View(s.slots, s.memory, path, dict(s.origins), s.memory_parsed)


def check_state(setting: str | None) -> str:
    """The one check of the state directory for every command that reads it: what a
    build would refuse, with the build's message (StateDirError), without leaving a
    directory behind; returns the absolute path.

    A directory not made yet is tried the way a build makes it: an empty sibling is
    made and removed at once (making the directory itself could race a build that
    makes it at the same moment and starts using it)."""
    from ltoguard.statedir import StateDirError, check_state_dir, default_path

    path = os.path.abspath(setting or default_path())
    if os.path.lexists(path):
        return check_state_dir(setting)
    probe = os.path.join(os.path.dirname(path), f".ltoguard-probe-{os.getpid()}")
    try:
        os.mkdir(probe, 0o700)
    except FileNotFoundError:
        # statedir.open_state_dir's words: the build's message, not a second one.
        what = "LTOGUARD_DIR" if setting else "the default state directory"
        raise StateDirError(
            f"cannot create {what} {path}: its parent directory does not exist"
        ) from None
    except FileExistsError:
        pass  # a probe left by a process of ours that died: creating works
    except OSError as exc:
        raise StateDirError(
            f"cannot create state directory {path}: {exc.strerror}; set LTOGUARD_DIR to a writable directory"
        ) from None
    try:
        os.rmdir(probe)
    except OSError:
        pass
    return path


def no_state_message(path: str) -> str:
    return f"no guarded compile has run yet (state dir {path})"


# ---------------------------------------------------------------------------
# values read from records: any user sharing the state dir may have written them


def int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def float_or_none(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


# ---------------------------------------------------------------------------
# formatting


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_bytes(n: int | None) -> str:
    from ltoguard.sizes import format_size

    return "?" if n is None else format_size(n)


def fmt_estimate(n: int | None, basis: str | None) -> str:
    if n is None:
        return "?"
    return f"~{fmt_bytes(n)}" + (f" ({basis})" if basis else "")


def fmt_when(t: float | None) -> str:
    """A wall time as local ``YYYY-MM-DD HH:MM:SS``."""
    return "?" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, each line indented by two."""
    from ltoguard.semaphore import printable

    # Cells come from records and history that other users may have written
    # (shared state dir): one safe line each, like the waiting line.
    rows = [[printable(c, limit=200) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    out = []
    for r in [list(header), *rows]:
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out
