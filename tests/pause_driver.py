"""ltoguard's CLI (as ``python -m ltoguard`` runs it) with the pause decisions' inputs
read from a control file, so a test drives pause, resume and kill deterministically.

Run as ``python tests/pause_driver.py RUSTC ARGS...`` with PAUSE_CTL naming a JSON
file the test rewrites (atomically) while the job runs::

    {"older": bool,           # an older guarded job holds a slot beside this one
     "older_estimate": int,   # its estimate (it holds nothing yet: all of it to come)
     "me_estimate": int,      # this job's estimate (it holds nothing as far as we say)
     "available": int, "total": int,   # what available_memory would say
     "swap": int}             # what available_swap would say (default 0)

PAUSE_PSI, when set, names the PSI file the memory pressure brake reads; unset, the
brake reads none (no PSI), so the host's pressure cannot change a test's outcome.
PAUSE_CHECKS, when set, names a file that gets one line per look at the slot holders
(each check of the running compile makes one): how often the job is checked.

Everything else (the semaphore, the jobserver, signals, the compiler) is real.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ltoguard import attempt
from ltoguard.admission import Running
from ltoguard.memory import MemorySnapshot
from ltoguard.pressure import Brake

STARTED = time.time()


def _ctl() -> dict[str, Any]:
    with open(os.environ["PAUSE_CTL"]) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def running_now() -> list[Running]:
    c = _ctl()
    checks = os.environ.get("PAUSE_CHECKS")
    if checks:
        with open(checks, "a") as f:
            f.write(f"{time.time()}\n")
    me = Running(pid=os.getpid(), estimate=c["me_estimate"], current=0, started=STARTED)
    if not c["older"]:
        return [me]
    return [Running(pid=1, estimate=c["older_estimate"], current=0, started=0.0), me]


def read_memory(setting: str | None, *, guarded_usage: int = 0) -> MemorySnapshot:
    c = _ctl()
    return MemorySnapshot(c["available"], c["total"], "the test's control file")


def read_swap(setting: str | None) -> int:
    return int(_ctl().get("swap", 0))


def main() -> int:
    real_init = attempt.Attempt.__init__

    def init(self: attempt.Attempt, *args: Any, **kw: Any) -> None:
        brake = Brake(os.environ.get("PAUSE_PSI"))
        real_init(
            self,
            *args,
            running_now=running_now,
            read_memory=read_memory,
            brake=brake,
            read_swap=read_swap,
            **kw,
        )

    setattr(attempt.Attempt, "__init__", init)  # noqa: B010 (mypy refuses assigning a method)
    from ltoguard.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
