#!/usr/bin/env python3
"""Is ltoguard within a few percent of plain cargo under a cap? Repeated, paired
rebuilds of a workspace's bins, so that the answer is not one run's noise.

    bench_ab.py WORKSPACE CAP [--rows plain,cold,warm] [--rounds N]
                [--touch GLOB] [--json FILE]

One sweep cell (bench_sweep.py) is one build per row, and builds of the same
row moved by up to 18% from one sweep to the next: "<= 1.05 x plain" cannot be
told from one run. Here each round rebuilds the bins (touches the files GLOB
names, default bins/*/src/main.rs: only those crates rebuild, so what is timed
is the LTO phase ltoguard guards) once per row, each build in a fresh memory
cgroup limited to CAP (root; scripts/cgroups.py), `cargo build --release -j2`:

  plain  cargo as is
  cold   this checkout's ltoguard, nothing learned (a fresh history each build)
  warm   this checkout's ltoguard, with the history of the builds before it (one
         guarded build first, not counted, learns it)

The rows take turns (round k starts at row k), after one plain build that is
not counted (it reads the workspace into the page cache: a first build after
others ran can take twice as long). Each row's wall time is compared with the
plain build of the same round. Prints per row the median, least and most wall
time and ratio to plain, OOM kills and failed builds; --json writes them and
every build.
"""

from __future__ import annotations

import argparse
import json
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
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from scripts.census import LTOGUARD, build_env, touch  # noqa: E402
from scripts.cgroups import MemoryCgroup  # noqa: E402

MiB = 1 << 20
ROWS = ("plain", "cold", "warm")


def order(rows: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, row) in the order built: the rows take turns starting the round."""
    out = []
    for k in range(rounds):
        start = k % len(rows)
        out += [(k, rows[(start + i) % len(rows)]) for i in range(len(rows))]
    return out


def summary(builds: Sequence[dict[str, Any]], rows: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per row: wall times and ratios to the same round's plain build (rounds where
    either failed are left out of the ratios), as median, least and most."""
    plain = {b["round"]: b for b in builds if b["row"] == "plain" and b["ok"]}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        mine = [b for b in builds if b["row"] == row]
        walls = [b["wall"] for b in mine if b["ok"]]
        ratios = [
            b["wall"] / plain[b["round"]]["wall"] for b in mine if b["ok"] and b["round"] in plain
        ]
        out[row] = {
            "builds": len(mine),
            "failed": sum(1 for b in mine if not b["ok"]),
            "oom_kills": sum(b["kills"] for b in mine),
            "wall": _spread(walls),
            "vs_plain": _spread(ratios),
        }
    return out


def _spread(values: Sequence[float]) -> list[float] | None:
    """[median, least, most], or None without values."""
    if not values:
        return None
    return [statistics.median(values), min(values), max(values)]


def table(stats: dict[str, dict[str, Any]], cap: int) -> str:
    lines = [
        f"| row @ {cap // MiB} MiB | builds | wall s: median (least-most) | / plain: median (least-most) | OOM kills | failed |",
        "|---|---:|---|---|---:|---:|",
    ]
    for row, s in stats.items():
        wall = "-" if s["wall"] is None else "{:.1f} ({:.1f}-{:.1f})".format(*s["wall"])
        ratio = "-" if s["vs_plain"] is None else "{:.3f} ({:.3f}-{:.3f})".format(*s["vs_plain"])
        lines.append(
            f"| {row} | {s['builds']} | {wall} | {ratio} | {s['oom_kills']} | {s['failed']} |"
        )
    return "\n".join(lines)


def build(workspace: Path, cap: int, pattern: str, env: dict[str, str]) -> dict[str, Any]:
    """One rebuild of the bins in a fresh cgroup: wall seconds, exit status, OOM kills."""
    touch(workspace, pattern)
    with MemoryCgroup(cap) as group:
        t0 = time.monotonic()
        done = subprocess.run(
            [*group.enter_command(), "cargo", "build", "--release", "-j2", "-q"],
            cwd=workspace,
            env=env,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        wall = time.monotonic() - t0
        kills = group.oom_kills()
    return {
        "wall": round(wall, 3),
        "code": done.returncode,
        "kills": kills,
        "ok": done.returncode == 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_ab.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("cap", help="MiB, e.g. 517M")
    ap.add_argument(
        "--rows", default=",".join(ROWS), help="of plain, cold, warm (plain is always built)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--touch", default="bins/*/src/main.rs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or args.rounds < 1:
        ap.error(
            f"--rows takes {', '.join(ROWS)}; --rounds at least 1"
            + (f" (not {bad[0]})" if bad else "")
        )
    if "plain" not in rows:
        rows.insert(0, "plain")
    try:
        cap = int(args.cap.rstrip("Mm")) * MiB
    except ValueError:
        ap.error(f"CAP is MiB, like 517M (not {args.cap!r})")
    if rows != ["plain"] and not LTOGUARD.exists():
        print(f"bench_ab.py: error: no {LTOGUARD}: make it with scripts/test.sh", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ltoguard-bench-ab-"))
    try:
        learned = work / "warm-cache"
        build(args.workspace, cap, args.touch, build_env(False, work))  # the page cache
        if "warm" in rows:
            build(args.workspace, cap, args.touch, build_env(True, work / "learn", learned))
        builds = []
        for k, row in order(rows, args.rounds):
            state = work / f"{k}-{row}"
            env = build_env(row != "plain", state, learned if row == "warm" else None)
            got = build(args.workspace, cap, args.touch, env)
            builds.append({"round": k, "row": row, **got})
            print(
                f"round {k} {row}: {got['wall']:.1f} s, exit {got['code']}, {got['kills']} OOM kills",
                flush=True,
            )
            shutil.rmtree(state, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = summary(builds, rows)
    print(table(stats, cap))
    if args.json:
        doc = {
            "workspace": str(args.workspace),
            "cap": cap,
            "rounds": args.rounds,
            "stats": stats,
            "builds": builds,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
