#!/usr/bin/env python3
"""Is ltoguard within a few percent of plain cargo under a cap? Repeated, paired
rebuilds of a workspace's bins, so that the answer is not one run's noise.

    bench_ab.py WORKSPACE CAP [--rows plain,cold,warm] [--rounds N]
                [--touch GLOB] [--json FILE]

One sweep cell (bench_sweep.py) is one build per row, and the same row moves
from one sweep to the next by more than the few percent asked about
(docs/benchmarks.md). Here each round rebuilds the bins (touches the files GLOB
names, default bins/*/src/main.rs: only those crates rebuild, so what is timed
is the LTO phase ltoguard guards) once per row, each build in a fresh memory
cgroup limited to CAP (root; scripts/cgroups.py), `cargo build --release -j2`:

  plain  cargo as is
  cold   this checkout's ltoguard, nothing learned (a fresh history each build)
  warm   this checkout's ltoguard, with the history of the builds before it (one
         guarded build first, not counted, learns it)

The rows take turns (round k starts at row k), after one plain build that is
not counted (it reads the workspace into the page cache: a first build after
other work is much slower). Each row's wall time is compared with the
plain build of the same round. Prints per row the median, least and most wall
time and ratio to plain, OOM kills and failed builds; --json writes them and
every build.
"""

from __future__ import annotations

import argparse
import glob
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
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.monotonic() - t0
        kills = group.oom_kills()
    ok = done.returncode == 0
    out = {"wall": round(wall, 3), "code": done.returncode, "kills": kills, "ok": ok}
    if not ok:  # what cargo said last, for the record
        out["stderr"] = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
    return out


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str], int]:
    """The arguments, the rows (plain first, each once) and the cap in bytes."""
    ap = argparse.ArgumentParser(prog="bench_ab.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("cap", help="MiB, e.g. 517M")
    ap.add_argument("--rows", default=",".join(ROWS), help="of plain, cold, warm (plain always)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--touch", default="bins/*/src/main.rs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = ["plain"]
    for r in (r.strip() for r in args.rows.split(",")):
        if r and r not in ROWS:
            ap.error(f"--rows takes {', '.join(ROWS)} (not {r})")
        if r and r not in rows:
            rows.append(r)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1 (not {args.rounds})")
    try:
        cap = int(args.cap.rstrip("Mm")) * MiB
    except ValueError:
        cap = 0
    if cap <= 0:
        ap.error(f"CAP is MiB above 0, like 517M (not {args.cap!r})")
    return args, rows, cap


def unusable(args: argparse.Namespace, rows: Sequence[str]) -> str:
    """Why these builds cannot run here (empty if they can)."""
    if not (args.workspace / "Cargo.toml").is_file():
        return f"no Cargo.toml in {args.workspace}"
    if not glob.glob(str(args.workspace / args.touch)):
        return f"--touch {args.touch} names no file in {args.workspace}: nothing would rebuild"
    if shutil.which("cargo") is None:
        return "cargo is not on PATH"
    if rows != ["plain"] and not LTOGUARD.exists():
        return f"no {LTOGUARD}: make it with scripts/test.sh"
    why = MemoryCgroup.unavailable()
    return f"cannot create a memory cgroup: {why}" if why else ""


def main(argv: Sequence[str] | None = None) -> int:
    args, rows, cap = parse(argv)
    why = unusable(args, rows)
    if why:
        print(f"bench_ab.py: error: {why}", file=sys.stderr)
        return 2
    builds: list[dict[str, Any]] = []
    interrupted = False
    work = Path(tempfile.mkdtemp(prefix="ltoguard-bench-ab-"))
    try:
        learned = work / "warm-cache"
        first = [("page cache", build_env(False, work))]  # reads the workspace in
        if "warm" in rows:
            (work / "learn").mkdir()
            first.append(("learning", build_env(True, work / "learn", learned)))
        for what, env in first:
            got = build(args.workspace, cap, args.touch, env)
            if not got["ok"]:
                print(f"bench_ab.py: error: the {what} build failed: {got}", file=sys.stderr)
                return 1
        for k, row in order(rows, args.rounds):
            state = work / f"{k}-{row}"
            state.mkdir()
            env = build_env(row != "plain", state, learned if row == "warm" else None)
            got = build(args.workspace, cap, args.touch, env)
            builds.append({"round": k, "row": row, **got})
            print(
                f"round {k} {row}: {got['wall']:.1f} s, exit {got['code']}, {got['kills']} OOM kills",
                flush=True,
            )
            shutil.rmtree(state, ignore_errors=True)
    except KeyboardInterrupt:
        print(f"bench_ab.py: interrupted after {len(builds)} builds", file=sys.stderr)
        interrupted = True
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
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
