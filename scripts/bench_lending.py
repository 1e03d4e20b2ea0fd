#!/usr/bin/env python3
"""Benchmark jobserver lending: wall time and CPU use, lending on vs off.

The scenario: several fat-LTO binaries become ready early and queue behind one
slot (LTOGUARD_SLOTS=1), while the workspace still has ordinary work left
(library crates no binary depends on). cargo gives every queued wrapper one of
its -jN tokens; without lending, a queued binary sits on its token and the
libraries wait; with lending it hands the token back and they keep building.

Each build is a clean `cargo build --release -jN` (fresh target and state
directories) through ltoguard as RUSTC_WORKSPACE_WRAPPER. The two variants
alternate, ABAB..., in one run on one machine:

  on    ltoguard as is (lends while queued)
  off   LTOGUARD_LEND=0 (queued invocations keep their token)

Per build: wall time, CPU time of the whole cargo tree (user+sys from wait4),
CPU utilisation = CPU / (wall x cores), and how long the binaries waited in the
queue (events-UID.jsonl). Medians per variant, and on/off ratios.

Usage: bench_lending.py [--workspace DIR] [--bins N] [--libs M] [--size S]
                        [--jobs N] [--repeat N] [--quick] [--json FILE] [--keep]

Exit status: 0 after printing the table; 1 if a build failed or could not run.

Note: the waiters nearest the head lend, the head included (once admitted it takes
a token back in the background): the gain grows with the number of queued bins
and with -j. The machine's other load shows in the CPU figures:
compare rows of one run only, and prefer --repeat 3 or more on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import base_env, load_gen_workspace, ltoguard_path, read_events  # noqa: E402

# bins use lib00 plus three libs each (gen_workspace), so with B bins the libs
# past 1 + 3B are ordinary work no binary waits for: enough of them to keep cargo
# busy about as long as the bins take one after another.
QUICK = {"size": "small", "bins": 3, "libs": 30}
FULL = {"size": "small", "bins": 4, "libs": 48}


def lend_switch_supported() -> bool:
    """Does this ltoguard read LTOGUARD_LEND? Without it `off` would measure `on`."""
    pkg = CHECKOUT / "ltoguard"
    return any("LTOGUARD_LEND" in p.read_text(errors="replace") for p in pkg.rglob("*.py"))


def run(workspace: Path, work: Path, variant: str, n: int, jobs: int) -> dict[str, Any]:
    target = work / "target"
    state, cache = work / f"state-{n}", work / f"cache-{n}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    state.mkdir(mode=0o700)
    env = base_env()
    env.update(
        CARGO_TARGET_DIR=str(target),
        RUSTC_WORKSPACE_WRAPPER=ltoguard_path(),
        LTOGUARD_SLOTS="1",
        LTOGUARD_DIR=str(state),
        XDG_CACHE_HOME=str(cache),  # no history: every run starts alike
    )
    if variant == "off":
        env["LTOGUARD_LEND"] = "0"
    log = work / f"build-{n}-{variant}.log"
    with open(log, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["cargo", "build", "--release", f"-j{jobs}"],
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
    cpu = ru.ru_utime + ru.ru_stime
    events = read_events(state)
    shutil.rmtree(state, ignore_errors=True)
    return {
        "variant": variant,
        "rc": proc.returncode,
        "wall": wall,
        "cpu": cpu,
        "util": cpu / (wall * (os.cpu_count() or 1)),
        "waited": sum(float(e.get("waited") or 0) for e in events),
        "guarded": len(events),
        "log": str(log),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workspace", type=Path, help="an existing workspace (not generated)")
    p.add_argument("--size")
    p.add_argument("--bins", type=int)
    p.add_argument("--libs", type=int)
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 2, help="cargo -j (default: cores)"
    )
    p.add_argument("--repeat", type=int, default=3, help="pairs of builds (default 3)")
    p.add_argument("--quick", action="store_true", help="fewer crates and one pair")
    p.add_argument("--json", type=Path, help="also write every figure here ('-': stdout)")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    if shutil.which("cargo") is None:
        print("bench: error: cargo is not on PATH", file=sys.stderr)
        return 1
    preset = QUICK if args.quick else FULL
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    spec = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    work = args.work or Path(tempfile.mkdtemp(prefix="ltoguard-bench-lending-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.workspace is None:
        workspace = work / "workspace"
        load_gen_workspace().generate(workspace, lto="fat", **spec)
        what = f"generated: size={spec['size']} bins={spec['bins']} libs={spec['libs']}"
    else:
        workspace = args.workspace.resolve()
        what = f"given: {workspace}"
    if not lend_switch_supported():
        print("bench: error: this ltoguard has no LTOGUARD_LEND switch", file=sys.stderr)
        return 1
    how_off = "LTOGUARD_LEND=0"
    print(f"bench: workspace {what}; off = {how_off}; scratch {work}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    try:
        n = 0
        for rep in range(repeat):
            for variant in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                n += 1
                r = run(workspace, work, variant, n, args.jobs)
                results.append(r)
                print(
                    f"bench: [{rep + 1}/{repeat}] lending {variant}: rc={r['rc']}"
                    f" wall={r['wall']:.1f}s cpu={r['cpu']:.1f}s util={r['util']:.0%}",
                    file=sys.stderr,
                )
                if r["rc"] != 0:
                    print(f"bench: error: build failed; see {r['log']}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    def med(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results if r["variant"] == variant))

    lines = [
        f"## bench_lending: {what}, cargo -j{args.jobs}, LTOGUARD_SLOTS=1,"
        f" {repeat} pair(s) ABAB, medians; off = {how_off}\n\n",
        "| lending | wall s | cpu s | CPU utilisation | bins' queue wait s | builds |\n",
        "|---|---:|---:|---:|---:|---:|\n",
    ]
    for v in ("on", "off"):
        lines.append(
            f"| {v} | {med(v, 'wall'):.1f} | {med(v, 'cpu'):.1f} | {med(v, 'util'):.0%}"
            f" | {med(v, 'waited'):.1f} | {sum(1 for r in results if r['variant'] == v)} |\n"
        )
    ratio = med("on", "wall") / med("off", "wall")
    mark = "✓" if ratio <= 1.0 else ("~" if ratio <= 1.03 else "✗")
    lines.append(f"\nwall on/off = {ratio:.2f} {mark} (target: lending never slower, <= 1.00)\n")
    print("".join(lines))
    if args.json is not None:
        data = json.dumps({"workspace": what, "off": how_off, "results": results}, indent=2)
        if str(args.json) == "-":
            print(data)
        else:
            args.json.write_text(data + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
