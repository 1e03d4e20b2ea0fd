"""The guarded path: wait for admission, run the compiler holding a slot, release."""

from __future__ import annotations

import os
import sys
import time

from ltoguard import process
from ltoguard.classify import Decision, describe
from ltoguard.semaphore import Semaphore, Snapshot, slot_limit_policy
from ltoguard.settings import SettingsError, slots, state_dir
from ltoguard.statedir import StateDirError, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

EXIT_CONFIG = 2  # ltoguard's own configuration / state-directory errors


def say(msg: str) -> None:
    sys.stderr.write(f"ltoguard: {msg}\n")
    sys.stderr.flush()


def job_info(d: Decision) -> dict[str, Any]:
    return {
        "crate": d.crate_name or "?",
        "types": list(d.crate_types) or (["test"] if d.is_test else ["bin"]),
        "lto": d.lto,
        "cwd": os.getcwd(),
        "workspace": os.environ.get("CARGO_WORKSPACE_DIR")
        or os.environ.get("CARGO_MANIFEST_DIR")
        or os.getcwd(),
        "since": time.time(),
        "pid": os.getpid(),
    }


def waiting_line(what: str, snap: Snapshot, reason: str) -> str:
    now = time.time()
    running = ", ".join(h.describe(now) for h in snap.holders) or "none"
    return f"{what} waits for an LTO slot ({reason}); running: {running}"


def run_guarded(argv: Sequence[str], decision: Decision) -> int:
    try:
        limit = slots()
        path, dir_fd = open_state_dir(state_dir())
    except (SettingsError, StateDirError) as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG
    sem = Semaphore(path, dir_fd)
    what = describe(decision)
    info = job_info(decision)
    admit = slot_limit_policy(limit if limit is not None else 1)

    def on_wait(snap: Snapshot, reason: str) -> None:
        say(waiting_line(what, snap, reason))

    process.raise_on_signals()
    try:
        slot = sem.acquire(info, admit, on_wait)
    except process.Interrupted as exc:
        return process.die_by(exc.signum)
    except StateDirError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG
    try:
        try:
            proc = process.spawn(argv, keep_fds=[slot.fd])
        except OSError as exc:
            say(f"error: cannot run {argv[0]}: {exc.strerror}")
            return 127
        process.forward_signals_to(proc)
        code = process.wait(proc)
    finally:
        sem.release(slot)
    return process.exit_like(code)
