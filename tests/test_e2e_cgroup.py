"""End to end under a real memory cgroup (v1 or v2, whichever the host has).

A generated workspace whose binaries' fat-LTO compiles dominate the build's memory
(small size with debug info: each binary's rustc is charged ~400 MiB here, a library
~100 MiB) is built three times, each clean and in a fresh child memory cgroup:

1. calibration, no limit, `-p app00`: the peak P of one LTO job plus the rest;
2. plain `cargo build --release -j2` with a limit of 1.5 P: two LTO jobs at once do
   not fit, the kernel OOM-kills a rustc and the build fails;
3. the same build through ltoguard (LTOGUARD_SLOTS=auto, empty state directory):
   it succeeds, and no OOM kill reached cargo (any kernel kill was a rerun).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scripts.cgroups import MemoryCgroup
from tests.conftest import HAVE_CARGO, cargo_env
from tests.procs import Procs, clean_env

pytestmark = [pytest.mark.cargo, pytest.mark.cgroup, pytest.mark.timeout(900)]

MiB = 1 << 20
BINS = 3
LIBS = 4
# 1 P fits one LTO job and the rest of the build; two jobs need ~2 P minus what they
# share (measured: 393 MiB alone, 789 MiB for two). 1.5 P sits in the middle.
CAP_FACTOR = 1.5
LTOGUARD = Path(sys.executable).parent / "ltoguard"

unavailable = MemoryCgroup.unavailable()


def charged(cg: MemoryCgroup) -> int:
    """rss + mapped_file (v2: anon + file_mapped): what page-cache reclaim cannot free."""
    return cg.charged()


@dataclass
class CgroupBuild:
    rc: int
    stderr: str
    oom_kills: int  # kernel OOM kills in the group
    peak: int  # most charged() seen, bytes


def build_in_cgroup(
    root: Path, env: dict[str, str], limit: int, log: Path, extra: list[str] | None = None
) -> CgroupBuild:
    """`cargo build --release -j2` in a fresh group with `limit`; rc, kills, peak."""
    cmd = ["cargo", "build", "--release", "-j2", *(extra or [])]
    with MemoryCgroup(limit) as cg, open(log, "wb") as err, Procs() as procs:
        proc = procs.start(
            cg.enter_command() + cmd,
            env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        peak = 0
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, charged(cg))
            time.sleep(0.05)
        if proc.poll() is None:
            pytest.fail(f"{' '.join(cmd)} did not finish within 600 s")
        return CgroupBuild(
            rc=proc.returncode,
            stderr=log.read_text(errors="replace"),
            oom_kills=cg.oom_kills(),
            peak=peak,
        )


def events(state: Path) -> list[dict[str, Any]]:
    path = state / f"events-{os.geteuid()}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(bool(unavailable), reason=f"memory cgroup: {unavailable}")
def test_plain_cargo_is_oom_killed_ltoguard_succeeds(
    tmp_path: Path, gen_workspace: ModuleType
) -> None:
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    assert LTOGUARD.exists(), f"ltoguard console script not installed at {LTOGUARD}"
    root = tmp_path / "ws"
    gen_workspace.generate(root, bins=BINS, libs=LIBS, size="small", lto="fat", debug=True)

    calib = build_in_cgroup(
        root, cargo_env(tmp_path / "t-calib"), 1 << 50, tmp_path / "calib.log", ["-p", "app00"]
    )
    assert calib.rc == 0, calib.stderr[-3000:]
    cap = int(calib.peak * CAP_FACTOR)
    why = f"calibration peak {calib.peak // MiB} MiB, limit {cap // MiB} MiB"

    plain = build_in_cgroup(root, cargo_env(tmp_path / "t-plain"), cap, tmp_path / "plain.log")
    assert plain.rc != 0, f"plain cargo fit in the limit ({why}): the test proves nothing"
    assert plain.oom_kills > 0, (
        f"plain cargo failed without an OOM kill ({why}): {plain.stderr[-3000:]}"
    )

    state = tmp_path / "state"
    # Memory decides (auto), from an empty state directory.
    env = cargo_env(tmp_path / "t-guard", clean_env(tmp_path, state, LTOGUARD_SLOTS="auto"))
    env.update(RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD))
    guarded = build_in_cgroup(root, env, cap, tmp_path / "guarded.log")
    evs = events(state)
    assert guarded.rc == 0, f"ltoguard build failed ({why}): {guarded.stderr[-3000:]}"
    assert sorted(e["crate"] for e in evs) == [f"app{i:02d}" for i in range(BINS)], evs
    assert all(e["outcome"] == "ok" for e in evs), evs
    # A kernel kill that ltoguard absorbed shows as a rerun; any other would have
    # reached cargo (and failed the build above).
    reruns = sum(int(e.get("reruns") or 0) for e in evs)
    assert guarded.oom_kills <= reruns, (guarded.oom_kills, reruns, why)
    for i in range(BINS):
        exe = tmp_path / "t-guard" / "release" / f"app{i:02d}"
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        assert run.stdout.startswith(f"app{i:02d} checksum "), run
