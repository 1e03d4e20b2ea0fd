#!/usr/bin/env python3
"""CPU used by the head of the queue while it waits (the target: at most 1% of a core).

One guarded job holds the only slot's worth of memory (LTOGUARD_MEMORY=200M, a fake
rustc that sleeps until released); a second queues behind it and, being the head,
polls. Its CPU time is read from /proc/PID/schedstat (nanoseconds) over --seconds,
--repeat times, and printed as a share of one core.

    .venv/bin/python scripts/bench_waiter.py --repeat 5

To compare with another checkout, put it first on PYTHONPATH:
    PYTHONPATH=/path/to/other .venv/bin/python scripts/bench_waiter.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.checkout_venv import use_checkout_venv  # noqa: E402

use_checkout_venv()

from scripts.fakerustc import clean_env, ltoguard_cmd, make_fake_rustc  # noqa: E402
from scripts.processes import Procs, cpu_fraction  # noqa: E402


def one(seconds: float) -> float:
    with tempfile.TemporaryDirectory(prefix="ltoguard-waiter-") as d:
        tmp = Path(d)
        rustc = make_fake_rustc(tmp)
        env = clean_env(tmp, tmp / "state", LTOGUARD_MEMORY="200M")
        env.pop("LTOGUARD_SLOTS", None)  # auto: memory decides
        with Procs() as procs:
            try:
                holder = procs.holder(rustc, env, timeout=30)
            except AssertionError as e:
                raise SystemExit(f"the holder never started: {e}") from None
            waiter = procs.start(ltoguard_cmd(rustc, "waiter"), env)
            assert waiter.stderr is not None
            line = waiter.stderr.readline().decode()
            if "waits" not in line:
                raise SystemExit(f"the waiter did not wait: {line!r}")
            used = cpu_fraction(waiter.pid, seconds)
            holder.release()
            if waiter.wait(timeout=60) != 0:
                raise SystemExit("the waiter failed")
            return used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured per run (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args(argv)
    shares = [one(args.seconds) for _ in range(args.repeat)]
    print(
        "head waiter CPU: median {:.2f}% of a core (runs: {})".format(
            100 * statistics.median(shares), ", ".join(f"{100 * x:.2f}%" for x in shares)
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
