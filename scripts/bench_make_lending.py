#!/usr/bin/env python3
"""Does a waiting head lend its jobserver token? A `make -j2` scenario.

Five jobs under `make -j2` (two tokens: one implicit, one in the pipe):

  holder    a guarded compile holding the only slot (LTOGUARD_SLOTS=1) for 4 s
  waiter    a second guarded compile (0.5 s) that must wait for the slot
  o1 o2 o3  three ordinary 1-second jobs

If the waiting head keeps its token, the ordinary jobs queue behind it: about
6 s. If it lends its token while it waits, they run while the holder does and
the build takes about the holder plus the waiter: ~4.5 s. The fake compiler is
scripts/fakerustc.py's; nothing here is compiled.

Usage: bench_make_lending.py [--repeat N] [--checkout DIR] [--vs DIR]
  --checkout DIR   the ltoguard checkout to time (default: this one)
  --vs DIR         a second checkout, timed in alternation (ratios per pair)

Exit status: 0 after printing the figures; 1 if a run failed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from scripts.checkout_venv import use_checkout_venv  # noqa: E402

use_checkout_venv()

from scripts.fakerustc import clean_env, make_fake_rustc  # noqa: E402

HOLDER_S, WAITER_S, ORDINARY_S = 4.0, 0.5, 1.0
LTO = "--crate-type bin --emit=dep-info,link -C opt-level=3 -C lto=fat"


def makefile(python: str, checkout: Path, rustc: Path) -> str:
    guard = f"PYTHONPATH={checkout} {python} -m ltoguard {rustc}"
    return (
        "all: holder waiter o1 o2 o3\n"
        f"holder:\n\t+FAKE_SLEEP={HOLDER_S} {guard} --crate-name holder src/main.rs {LTO}\n"
        # Queued a moment after the holder, so the holder is the one admitted.
        f"waiter:\n\t+sleep 0.3; FAKE_SLEEP={WAITER_S} {guard} --crate-name waiter src/main.rs {LTO}\n"
        f"o1 o2 o3:\n\tsleep {ORDINARY_S}\n"
        ".PHONY: all holder waiter o1 o2 o3\n"
    )


def one_run(work: Path, checkout: Path) -> float:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rustc = make_fake_rustc(work)
    (work / "Makefile").write_text(makefile(sys.executable, checkout, rustc))
    env = clean_env(work, work / "state")
    for k in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"):
        env.pop(k, None)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["make", "-s", "-j2", "-C", str(work)], env=env, capture_output=True, text=True, timeout=120
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: error: make failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--checkout", type=Path, default=CHECKOUT)
    p.add_argument("--vs", type=Path)
    args = p.parse_args(argv)
    if shutil.which("make") is None:
        print("bench: error: GNU make is not installed", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="ltoguard-bench-make-"))
    a: list[float] = []
    b: list[float] = []
    try:
        for i in range(args.repeat):
            a.append(one_run(tmp / "a", args.checkout.resolve()))
            if args.vs is not None:
                b.append(one_run(tmp / "b", args.vs.resolve()))
            print(
                f"bench: [{i + 1}/{args.repeat}] {a[-1]:.2f}s" + (f" vs {b[-1]:.2f}s" if b else "")
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nmake -j2: holder {HOLDER_S:g}s + waiting head {WAITER_S:g}s + 3 x {ORDINARY_S:g}s jobs"
    )
    print(
        f"{args.checkout}: median {statistics.median(a):.2f}s (min {min(a):.2f}, max {max(a):.2f})"
    )
    if b:
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{args.vs}: median {statistics.median(b):.2f}s (min {min(b):.2f}, max {max(b):.2f})")
        print(f"ratio per pair: median {statistics.median(ratios):.2f}")
    print(f"target: <= 4.9 s; one-token-free ideal ~{HOLDER_S + WAITER_S:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
