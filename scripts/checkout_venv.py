"""Run a script under this checkout's .venv when the interpreter it was started
with lacks psutil, which ltoguard and tests/procs.py import.

`python3 scripts/stress.py` on a machine whose system Python has no psutil would
stop at an ImportError traceback; instead the script runs again under
.venv/bin/python (made by `bash scripts/test.sh`), or says in one line what to do.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def use_checkout_venv() -> None:
    if importlib.util.find_spec("psutil") is not None:
        return
    python = CHECKOUT / ".venv" / "bin" / "python"
    if python.exists() and Path(sys.executable).absolute() != python:
        os.execv(python, [str(python), *sys.argv])
    name = Path(sys.argv[0]).name
    raise SystemExit(
        f"{name}: error: needs psutil; run `bash scripts/test.sh` once"
        f" (it makes {CHECKOUT / '.venv'}), then run {name} again"
    )
