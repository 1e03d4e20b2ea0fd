#!/usr/bin/env python3
"""Measure ltoguard's pass-through overhead per rustc call.

cargo runs the wrapper for every rustc call, probes included, so the cost of
the pass-through path (interpreter start, console script, argv check, exec)
is paid hundreds of times per build. This creates a clean venv (pip upgraded
first, as install.sh does), pip-installs this checkout, and times, alternating
call by call:

  python -c pass                      the interpreter's floor
  RUSTC -vV            / ltoguard RUSTC -vV
  RUSTC <cargo probe>  / ltoguard RUSTC <cargo probe>   (stdin /dev/null)

with the installed `ltoguard` console script invoked as cargo does, and the same
two calls through the launcher install.sh registers (`ltoguard-fast`, when it is
there). It prints median and p90 per command and the median overhead of each way
in (wrapped - direct).

Usage: bench_passthrough.py [--runs 200] [--warmup 20] [--python PYTHON]
                            [--rustc PATH] [--venv DIR] [--ltoguard PATH]

Exit status: 0 after printing the table; 1 if something could not run or
ltoguard's output differed from rustc's (cargo parses that output).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
# cargo 1.95's target-info probe, verbatim.
PROBE_ARGS = [
    "-",
    "--crate-name",
    "___",
    "--print=file-names",
    "--crate-type",
    "bin",
    "--crate-type",
    "rlib",
    "--crate-type",
    "dylib",
    "--crate-type",
    "cdylib",
    "--crate-type",
    "staticlib",
    "--crate-type",
    "proc-macro",
    "--print=sysroot",
    "--print=split-debuginfo",
    "--print=crate-name",
    "--print=cfg",
    "-Wwarnings",
]
# Variables that would change what the wrapper does under the benchmark.
SCRUB = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS")


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"bench_passthrough: {msg}", file=sys.stderr, flush=True)


def run_checked(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: {' | '.join(tail)}")
    return proc  # type: ignore[no-any-return]


def find_rustc() -> Path:
    """The toolchain's rustc binary (what cargo passes), not rustup's proxy."""
    rustc = shutil.which("rustc")
    if rustc is None:
        raise BenchError("rustc not on PATH; pass --rustc /path/to/rustc")
    sysroot = run_checked([rustc, "--print", "sysroot"]).stdout.strip()
    real = Path(sysroot) / "bin" / "rustc"
    return real if real.is_file() else Path(rustc)


def make_venv(python: str, venv: Path) -> Path:
    """A venv with pip upgraded and this checkout installed; returns ltoguard."""
    if not (venv / "bin" / "python").exists():
        log(f"creating venv {venv} with {python}")
        run_checked([python, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    # pip >= 24's console-script template does not import re, a cost on every call.
    run_checked([*pip, "install", "--upgrade", "pip>=24"])
    with tempfile.TemporaryDirectory(prefix="ltoguard-bench-src-") as stage:
        # Staged copy: an in-tree build would leave build/ and *.egg-info in
        # the checkout, and stale build/lib files end up in later installs.
        src = Path(stage)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (CHECKOUT / name).is_file():
                shutil.copy2(CHECKOUT / name, src / name)
        shutil.copytree(
            CHECKOUT / "ltoguard", src / "ltoguard", ignore=shutil.ignore_patterns("__pycache__")
        )
        log("installing the checkout")
        run_checked([*pip, "install", str(src)])
    script = venv / "bin" / "ltoguard"
    if not script.exists():
        raise BenchError(f"pip did not create {script}")
    # The launcher install.sh registers (python -IS; ltoguard/launcher.py).
    run_checked(
        [
            str(venv / "bin" / "python"),
            "-m",
            "ltoguard.launcher",
            str(venv / "bin" / "ltoguard-fast"),
        ]
    )
    return script


def time_once(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall time of one call in ms (fork/exec of the harness included; it is
    the same for every command, so it cancels out in the overhead)."""
    start = time.perf_counter_ns()
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode} during timing")
    return elapsed


def check_same_output(direct: Sequence[str], wrapped: Sequence[str], env: dict[str, str]) -> None:
    """ltoguard must hand rustc's stdout through untouched: cargo parses it."""
    a = subprocess.run(direct, stdin=subprocess.DEVNULL, capture_output=True, env=env)
    b = subprocess.run(wrapped, stdin=subprocess.DEVNULL, capture_output=True, env=env)
    if (a.returncode, a.stdout) != (b.returncode, b.stdout):
        raise BenchError(
            f"{' '.join(wrapped)}: exit {b.returncode}, {len(b.stdout)} stdout bytes; rustc "
            f"gave exit {a.returncode}, {len(a.stdout)} bytes; stderr: "
            f"{b.stderr.decode(errors='replace').strip()[-300:]}"
        )


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def bench(
    cases: dict[str, list[str]], runs: int, warmup: int, env: dict[str, str]
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(warmup + runs):
        # Alternate the order each round (ABAB.., then BABA..) so drift in
        # machine load and cache state hits every command alike.
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            t = time_once(cases[name], env)
            if i >= warmup:
                times[name].append(t)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per command first")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the venv (default: this one)"
    )
    parser.add_argument("--rustc", type=Path, help="rustc to call (default: the toolchain's)")
    parser.add_argument("--venv", type=Path, help="create/reuse the venv here and keep it")
    parser.add_argument("--ltoguard", type=Path, help="time this wrapper instead of installing one")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs must be >= 2 and --warmup >= 0")

    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    tmp = None
    try:
        rustc = (args.rustc or find_rustc()).resolve()
        if args.ltoguard is not None:
            ltoguard = args.ltoguard.absolute()
            python = args.python
        else:
            if args.venv is not None:
                venv = args.venv.absolute()
            else:
                tmp = tempfile.TemporaryDirectory(prefix="ltoguard-bench-")
                venv = Path(tmp.name) / "venv"
            ltoguard = make_venv(args.python, venv)
            python = str(venv / "bin" / "python")

        fast = ltoguard.parent / "ltoguard-fast"
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "rustc -vV": [str(rustc), "-vV"],
            "ltoguard rustc -vV": [str(ltoguard), str(rustc), "-vV"],
            "rustc probe": [str(rustc), *PROBE_ARGS],
            "ltoguard rustc probe": [str(ltoguard), str(rustc), *PROBE_ARGS],
        }
        if fast.exists():
            cases["launcher rustc -vV"] = [str(fast), str(rustc), "-vV"]
            cases["launcher rustc probe"] = [str(fast), str(rustc), *PROBE_ARGS]
        for name in list(cases):
            if name.startswith(("ltoguard ", "launcher ")):
                direct = name.split(" ", 1)[1]
                check_same_output(cases[direct], cases[name], env)
        log(f"timing {len(cases)} commands x {args.runs} runs (+{args.warmup} warm-up)")
        times = bench(cases, args.runs, args.warmup, env)
        version = run_checked([python, "-c", "import sys; print(sys.version.split()[0])"])
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"python   {version.stdout.strip()} ({python})")
    print(f"rustc    {rustc}")
    print(f"ltoguard {ltoguard}")
    print(f"{args.runs} runs each after {args.warmup} warm-up, alternating; times in ms\n")
    width = max(len(n) for n in times)
    print(f"{'command':<{width}}  {'median':>8}  {'p90':>8}")
    for name, values in times.items():
        print(f"{name:<{width}}  {statistics.median(values):8.2f}  {p90(values):8.2f}")
    print()
    for who, what in (("ltoguard", "console script"), ("launcher", "install.sh launcher")):
        for label in ("-vV", "probe"):
            wrapped, direct = f"{who} rustc {label}", f"rustc {label}"
            if wrapped not in times:
                continue
            overhead = statistics.median(times[wrapped]) - statistics.median(times[direct])
            print(
                f"overhead {label:<5} via {what:<19} (median - median direct): {overhead:7.2f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
