#!/usr/bin/env python3
"""Benchmark ltoguard on a host with swap: builds under caps of RAM X plus swap Y.

Each build runs in a fresh memory cgroup (scripts/bench_memory.py's run_build) with
a RAM limit and a swap allowance (cgroup v1 memory.memsw.limit_in_bytes, v2
memory.swap.max): where two LTO jobs do not fit in RAM, plain cargo swaps (from a
little to thrashing, as the cap shrinks) instead of being killed. Rows per cap:

  plain       cargo build --release -j2
  flock       a one-at-a-time flock wrapper as RUSTC_WORKSPACE_WRAPPER, -j2
  auto-cold   ltoguard, LTOGUARD_SLOTS=auto, no history, -j2
  auto-warm   ltoguard, auto, the calibration build's state and history, -j2

Per row: outcome, wall, the group's peak swap use, the highest memory pressure
(PSI some/full avg10: the group's own on cgroup v2, the host's on v1) sampled over
the build, OOM kills, and for ltoguard rows the seconds paused and the pairs run.
Targets per cap: ltoguard's wall <= 1.10 x the better of plain and flock (a failed
build is no baseline), 0 OOM kills, full avg10 below 10% throughout.

--swapfile SIZE (root) makes and enables a swapfile for the run and removes it
after; without it the host must have swap already. Caps are RAM+SWAP, e.g.
``--caps 1000M+1.5G,600M+1.5G``.

Usage: bench_swap.py [--kind gen|real] [--quick] [--bins N] [--caps CAPS]
                     [--rows ROWS] [--repeat N] [--swapfile SIZE] [--json FILE]
                     [--work DIR] [--keep]

Exit status: 0 after printing the table (targets missed are marked); 1 if a build
could not be started; 2 if no cgroup with a swap allowance can be made here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from scripts import bench_memory as bm  # noqa: E402
from scripts.cgroups import MemoryCgroup  # noqa: E402

ROWS = ("plain", "flock", "auto-cold", "auto-warm")
# The two cases: light swapping (two LTO jobs overflow RAM by ~200 MiB for
# plain cargo, 6 real-crate bins) and thrashing (RAM well under one pair's need).
CAPS = "1000M+1.5G,600M+1.5G"
BOUND = 1.10  # ltoguard's wall over the better of plain and flock
PSI_FULL_MAX = 10.0  # full avg10, percent, never reached over a build
SWAPFILE = Path("/swapfile-ltoguard-bench")


def parse_cap(text: str) -> tuple[int, int]:
    ram, plus, swap = text.partition("+")
    if not plus:
        raise argparse.ArgumentTypeError(f"{text!r}: a cap is RAM+SWAP, e.g. 1000M+1.5G")
    return bm.parse_size(ram), bm.parse_size(swap)


@contextmanager
def swapfile(size: int | None) -> Iterator[None]:
    """A swapfile on for the run (root), off and removed after, whatever happens."""
    if size is None:
        yield
        return
    if SWAPFILE.exists():
        raise SystemExit(f"bench: error: {SWAPFILE} exists: a run left it? swapoff and rm it")
    try:
        subprocess.run(["fallocate", "-l", str(size), str(SWAPFILE)], check=True)
        SWAPFILE.chmod(0o600)
        subprocess.run(["mkswap", str(SWAPFILE)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["swapon", str(SWAPFILE)], check=True)
        yield
    finally:
        subprocess.run(["swapoff", str(SWAPFILE)], check=False, stderr=subprocess.DEVNULL)
        SWAPFILE.unlink(missing_ok=True)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    out = bm.summarise(results)
    out["swap_peak"] = max(r.get("swap_peak", 0) for r in results)
    full = [r["psi_full10_max"] for r in results if r.get("psi_full10_max") is not None]
    some = [r["psi_some10_max"] for r in results if r.get("psi_some10_max") is not None]
    out["psi_full10_max"] = max(full) if full else None
    out["psi_some10_max"] = max(some) if some else None
    out["psi_source"] = results[0].get("psi_source", "-")
    return out


def best_baseline(rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The faster of plain and flock among those that finished every run."""
    done = [r for r in (rows.get("plain"), rows.get("flock")) if r and r["ok"] == r["runs"]]
    return min(done, key=lambda r: r["wall"]) if done else None


def targets(rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None]]:
    out: list[tuple[str, bool | None]] = []
    best = best_baseline(rows)
    for name in ("auto-cold", "auto-warm"):
        r = rows.get(name)
        if r is None:
            continue
        x = bm.ratio(r, best)
        base = "-" if best is None else best["row"]
        out.append(
            (
                f"{name} wall / best of plain and flock ({base}) <= {BOUND} ({bm.fmt_ratio(x)})",
                None if x is None else x <= BOUND,
            )
        )
        out.append((f"{name} 0 OOM kills ({r['oom_kills']})", r["oom_kills"] == 0))
        full = r["psi_full10_max"]
        out.append(
            (
                f"{name} memory pressure full avg10 < {PSI_FULL_MAX:.0f}% throughout"
                f" ({'-' if full is None else f'{full:.1f}%'})",
                None if full is None else full < PSI_FULL_MAX,
            )
        )
    return out


def table(ram: int, swap: int, rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"### RAM {bm.mib(ram)} MiB + swap {bm.mib(swap)} MiB\n\n",
        "| row | outcome | wall s | swap peak MiB | PSI some/full avg10 max % | OOM kills"
        " | paused s | pairs | /plain | /flock |\n",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    ]
    for name in ROWS:
        r = rows.get(name)
        if r is None:
            continue
        outcome = "ok" if r["ok"] == r["runs"] else f"FAIL {r['runs'] - r['ok']}/{r['runs']}"
        some, full = r["psi_some10_max"], r["psi_full10_max"]
        psi = "-" if some is None else f"{some:.1f} / {full:.1f} ({r['psi_source']})"
        paused = f"{r['paused']:.1f}" if "paused" in r else "-"
        lines.append(
            f"| {name} | {outcome} | {r['wall']:.1f} | {bm.mib(r['swap_peak'])} | {psi}"
            f" | {r['oom_kills']} | {paused} | {r.get('pairs', '-')}"
            f" | {bm.fmt_ratio(bm.ratio(r, rows.get('plain')))}"
            f" | {bm.fmt_ratio(bm.ratio(r, rows.get('flock')))} |\n"
        )
    found = targets(rows)
    if found:
        lines.append("\nTargets:\n")
    for text, ok in found:
        lines.append(f"- {bm.check(ok)} {text}\n")
    return "".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kind", choices=("gen", "real"), default="gen")
    p.add_argument("--bins", type=int, help=f"bins (--kind real: default {bm.REAL_BINS})")
    p.add_argument("--quick", action="store_true", help="small generated workspace (smoke run)")
    p.add_argument("--caps", default=CAPS, help=f"RAM+SWAP,... (default {CAPS})")
    p.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--swapfile", type=bm.parse_size, help="make and enable a swapfile (root)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per build")
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if any(r not in ROWS for r in rows):
        p.error(f"rows are a subset of {','.join(ROWS)}")
    caps = [parse_cap(c) for c in args.caps.split(",") if c]
    if shutil.which("cargo") is None:
        print("bench: error: cargo is not on PATH", file=sys.stderr)
        return 1
    with swapfile(args.swapfile):
        why = MemoryCgroup.unavailable() or MemoryCgroup.swap_unavailable()
        if why:
            print(f"bench: error: cannot make a memory cgroup with swap: {why}", file=sys.stderr)
            return 2
        return run(args, rows, caps)


def run(args: argparse.Namespace, rows: list[str], caps: list[tuple[int, int]]) -> int:
    work = args.work or Path(tempfile.mkdtemp(prefix="ltoguard-bench-swap-"))
    work.mkdir(parents=True, exist_ok=True)
    args.workspace = work / "workspace"
    args.cleanup_state = not args.keep
    if args.kind == "real":
        bins = args.bins or bm.REAL_BINS
        bm.load_script("gen_realcrates").generate(
            args.workspace, bins=bins, small=False, debug=False, large_every=bm.MANY_LARGE_EVERY
        )
        what = f"Debian crates (real): bins={bins}"
    else:
        spec = dict(bm.QUICK if args.quick else bm.FULL)
        if args.bins:
            spec["bins"] = args.bins
        bm.load_gen_workspace().generate(args.workspace, lto="fat", **spec)
        what = f"generated: {spec}"
    print(f"bench: workspace {what}; scratch {work}", file=sys.stderr)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        bench = bm.Bench(args, work)
        args.swap = None
        calib = bench.calibrate() if "auto-warm" in rows else None
        print(f"bench: {bm.calibration_line(calib)}", file=sys.stderr)
        for rep in range(args.repeat):
            order = rows if rep % 2 == 0 else list(reversed(rows))
            for ram, swap in caps:
                key = f"{ram}+{swap}"
                raw.setdefault(key, {r: [] for r in rows})
                args.swap = swap
                for row in order:
                    res = bench.build(row, ram)
                    raw[key][row].append(res)
                    print(
                        f"bench: [{rep + 1}/{args.repeat}] {bm.mib(ram)}+{bm.mib(swap)} MiB"
                        f" {row}: rc={res['rc']} wall={res['wall']:.1f}s"
                        f" swap={bm.mib(res.get('swap_peak'))}MiB"
                        f" full10={res.get('psi_full10_max')} oom_kills={res['oom_kills']}",
                        file=sys.stderr,
                    )
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    out = [f"## bench_swap: {what}, repeat {args.repeat} (medians)\n"]
    summary: dict[str, dict[str, Any]] = {}
    for ram, swap in caps:
        key = f"{ram}+{swap}"
        summary[key] = {}
        for r in rows:
            if raw[key][r]:
                summary[key][r] = dict(summarise(raw[key][r]), row=r)
        out.append("\n" + table(ram, swap, summary[key]))
    print("".join(out))
    if args.json is not None:
        args.json.write_text(json.dumps({"workspace": what, "raw": raw, "summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
