#!/usr/bin/env python3
"""What holds the memory of a capped build: one cargo build in a fresh memory cgroup,
sampled every 0.2 s.

    census.py WORKSPACE CAP {plain,ltoguard} [--touch GLOB] [--cache DIR] [-- CARGO_ARGS]

Touches the files GLOB names (default bins/*/src/main.rs: the bins of the
workspaces gen_realcrates.py makes) so that only those crates rebuild, then runs
`cargo build --release -j2` (and what follows --) in a cgroup limited to CAP (root;
scripts/cgroups.py), as is (plain) or with this checkout's ltoguard as
RUSTC_WORKSPACE_WRAPPER (fresh state and history: a cold build; with --cache DIR,
what it learns is kept in DIR, so the runs after the first are warm builds). Prints the wall time and OOM kills, then the
cgroup's figures (usage, anonymous, mapped file, page cache, inactive file) and each
kind of process's count, anonymous and file pages, at the three samples of most
anonymous memory and at the middle one of those where one compile ran.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from scripts.cgroups import MemoryCgroup  # noqa: E402

MiB = 1 << 20
EVERY = 0.2  # seconds between samples
WRAPPERS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER")


LTOGUARD = CHECKOUT / ".venv" / "bin" / "ltoguard"


def build_env(guarded: bool, state: Path, cache: Path | None = None) -> dict[str, str]:
    """This environment without ltoguard's settings and wrappers; ``guarded``: with
    this checkout's ltoguard as RUSTC_WORKSPACE_WRAPPER, its state in ``state`` and
    what it learns in ``cache`` (None: in ``state`` too, a cold build)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LTOGUARD_") and k not in WRAPPERS
    }
    if guarded:
        env.update(
            RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD),
            LTOGUARD_SLOTS="auto",
            LTOGUARD_DIR=str(state / "state"),
            XDG_CACHE_HOME=str(cache.resolve() if cache else state / "cache"),
        )
    return env


def touch(workspace: Path, pattern: str) -> None:
    """Touch the files ``pattern`` names under ``workspace``: those crates rebuild."""
    for path in glob.glob(str(workspace / pattern)):
        os.utime(path)


def process_memory(pid: str) -> tuple[str, int, int] | None:
    """(kind, anonymous bytes, file bytes) of one process; ltoguard and any Python
    count as "ltoguard" (in these builds the only Pythons are its processes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    name = fields.get("Name", "?").strip()
    if name.startswith(("ltoguard", "python")):
        name = "ltoguard"

    def kib(key: str) -> int:
        return int(fields.get(key, "0 kB").split()[0]) * 1024

    return name, kib("RssAnon"), kib("RssFile")


def census(pids: list[str]) -> dict[str, list[int]]:
    """Per kind of process: [count, anonymous bytes, file bytes]."""
    out: dict[str, list[int]] = {}
    for pid in pids:
        got = process_memory(pid)
        if got is None:
            continue
        kind, anon, file = got
        row = out.setdefault(kind, [0, 0, 0])
        row[0] += 1
        row[1] += anon
        row[2] += file
    return out


def describe(sample: dict[str, Any]) -> str:
    kinds = ", ".join(
        f"{k} x{n}: {a // MiB} anon {f // MiB} file"
        for k, (n, a, f) in sorted(sample["procs"].items())
    )
    return (
        f"t={sample['t']:.1f}s usage {sample['usage'] // MiB} anon {sample['anon'] // MiB}"
        f" mapped {sample['mapped'] // MiB} cache {sample['cache'] // MiB}"
        f" inactive_file {sample['inactive_file'] // MiB} MiB | {kinds}"
    )


def notable(samples: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The three samples of most anonymous memory, then the middle one of those
    where exactly one rustc ran."""
    out = [("most anon", s) for s in sorted(samples, key=lambda s: -s["anon"])[:3]]
    one = [s for s in samples if s["procs"].get("rustc", [0])[0] == 1]
    if one:
        out.append(("one rustc", one[len(one) // 2]))
    return out


def cap_size(text: str) -> int:
    """The cap in bytes: ``265`` (MiB, as the sweep's tables give caps), ``265M``, ``1.5G``."""
    from ltoguard.sizes import parse_size

    try:
        return int(text) * MiB if text.strip().isdigit() else parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_cargo_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """census.py's own arguments, and those after ``--``, for cargo build (--examples ...)."""
    if "--" not in argv:
        return argv, []
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="census.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("cap", type=cap_size, help="a size (265M, 1.5G); a bare number is MiB")
    ap.add_argument("mode", choices=("plain", "ltoguard"))
    ap.add_argument("--touch", default="bins/*/src/main.rs")
    ap.add_argument("--cache", type=Path, help="keep ltoguard's history here (warm builds)")
    ours, cargo_args = split_cargo_args(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(ours)
    cap = args.cap
    if args.cache and args.mode != "ltoguard":
        ap.error("--cache is ltoguard's history: only with the ltoguard mode")
    if args.mode == "ltoguard" and not LTOGUARD.exists():
        print(f"census.py: error: no {LTOGUARD}: make it with scripts/test.sh", file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="ltoguard-census-"))
    env = build_env(args.mode == "ltoguard", state, args.cache)
    touch(args.workspace, args.touch)
    samples: list[dict[str, Any]] = []
    with MemoryCgroup(cap) as group:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*group.enter_command(), "cargo", "build", "--release", "-j2", "-q", *cargo_args],
            cwd=args.workspace,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None:
            stat = group.stat()
            try:
                pids = (group.path / "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            samples.append(
                {
                    "t": time.monotonic() - t0,
                    "usage": group.usage(),
                    "anon": stat.get("total_rss", 0),
                    "mapped": stat.get("total_mapped_file", 0),
                    "cache": stat.get("total_cache", 0),
                    "inactive_file": stat.get("total_inactive_file", 0),
                    "procs": census(pids),
                }
            )
            time.sleep(EVERY)
        wall = time.monotonic() - t0
        kills = group.oom_kills()
    shutil.rmtree(state, ignore_errors=True)
    print(
        f"{args.mode} under {cap // MiB} MiB: exit {proc.returncode}, {wall:.1f} s, {kills} OOM kills"
    )
    for label, sample in notable(samples):
        print(f"  {label}: {describe(sample)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
