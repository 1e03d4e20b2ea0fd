"""The first guarded job waits for the build's ordinary compiles, end to end.

Under a memory cap at the edge, an ordinary compile (here a build script that holds
300 MiB, standing in for a large library such as `clap`) can hold the memory the
build's first LTO job needs. Started beside it, one of the two is OOM-killed, and
a killed library compile fails the build (in a sweep build under 375 MiB the
kernel killed `clap`). A real `cargo build --release -j2` of three crates in a
fresh memory cgroup:

- `hog`: its build script takes 300 MiB, writes a marker, holds for a few seconds;
- `gate`: its build script waits for the marker, so the binary's compile reaches
  ltoguard while the hog holds its memory;
- `app`: the fat-LTO binary (over `gate`), its estimate set to 350 MiB.

Free memory is short of the binary's estimate while the hog runs and enough once
it ends: the binary waits for it (saying why), then runs; nothing is killed. (A
rerun alone after running out of memory waits the same way: tests/test_policy.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts.cgroups import MemoryCgroup
from tests.conftest import HAVE_CARGO, cargo_env
from tests.procs import Procs, clean_env

pytestmark = [pytest.mark.cargo, pytest.mark.cgroup, pytest.mark.timeout(600)]

MiB = 1 << 20
LIMIT = 600 * MiB
HOG_MB = 300
HOLD_S = 10  # the gate crate and the binary reach ltoguard well within it
LTOGUARD = Path(sys.executable).parent / "ltoguard"

unavailable = MemoryCgroup.unavailable()

HOG_BUILD = """\
use std::{env, fs, thread, time::Duration};
fn main() {
    let mb: usize = env::var("HOG_MB").unwrap().parse().unwrap();
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        let mut chunk = vec![0u8; 1 << 20];
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        held.push(chunk);
    }
    fs::write(env::var("HOG_MARKER").unwrap(), b"ready").unwrap();
    let hold: u64 = env::var("HOG_HOLD_S").unwrap().parse().unwrap();
    thread::sleep(Duration::from_secs(hold));
    eprintln!("held {} MiB", std::hint::black_box(held).len());
    println!("cargo:rerun-if-changed=build.rs");
}
"""

GATE_BUILD = """\
use std::{env, path::Path, thread, time::Duration};
fn main() {
    let marker = env::var("HOG_MARKER").unwrap();
    for _ in 0..1200 {
        if Path::new(&marker).exists() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    println!("cargo:rerun-if-changed=build.rs");
}
"""


def write_workspace(root: Path) -> None:
    files = {
        "Cargo.toml": """\
            [workspace]
            members = ["hog", "gate", "app"]
            resolver = "2"

            [profile.release]
            lto = "fat"
            codegen-units = 1

            [workspace.metadata.ltoguard.crates.app]
            memory = "350M"
            """,
        "hog/Cargo.toml": '[package]\nname = "hog"\nversion = "0.1.0"\nedition = "2021"\n',
        "hog/build.rs": HOG_BUILD,
        "hog/src/lib.rs": "pub fn hog() -> u32 { 1 }\n",
        "gate/Cargo.toml": '[package]\nname = "gate"\nversion = "0.1.0"\nedition = "2021"\n',
        "gate/build.rs": GATE_BUILD,
        "gate/src/lib.rs": "pub fn gate() -> u32 { 2 }\n",
        "app/Cargo.toml": textwrap.dedent(
            """\
            [package]
            name = "app"
            version = "0.1.0"
            edition = "2021"

            [dependencies]
            gate = { path = "../gate" }
            """
        ),
        "app/src/main.rs": 'fn main() { println!("app {}", gate::gate()); }\n',
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if name == "Cargo.toml" else text)


@pytest.mark.skipif(bool(unavailable), reason=f"memory cgroup: {unavailable}")
def test_the_first_lto_job_waits_for_the_ordinary_compile_holding_its_memory(
    tmp_path: Path,
) -> None:
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    assert LTOGUARD.exists(), f"ltoguard console script not installed at {LTOGUARD}"
    root = tmp_path / "ws"
    write_workspace(root)
    state = tmp_path / "state"
    env = cargo_env(tmp_path / "target", clean_env(tmp_path, state, LTOGUARD_SLOTS="auto"))
    env.update(
        RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD),
        HOG_MB=str(HOG_MB),
        HOG_HOLD_S=str(HOLD_S),
        HOG_MARKER=str(tmp_path / "hog-ready"),
        CARGO_TERM_COLOR="never",
    )
    with MemoryCgroup(LIMIT) as cg, Procs() as procs:
        p = procs.start(
            cg.enter_command() + ["cargo", "build", "--release", "-j2"],
            env,
            text=True,
            cwd=root,
            stdin=subprocess.DEVNULL,
        )
        _, err = p.communicate(timeout=540)
        kills = cg.oom_kills()
    assert p.returncode == 0, err[-3000:]
    assert kills == 0, err[-3000:]
    said = [line for line in err.splitlines() if "ltoguard:" in line]
    waited = [line for line in said if "crate app" in line and " waited " in line]
    assert waited, said
    assert "the build's other compiles hold" in waited[0], waited
    evs = [
        json.loads(line)
        for line in (state / f"events-{os.geteuid()}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    (app,) = [e for e in evs if e["crate"] == "app"]
    assert app["outcome"] == "ok" and app["waited"] >= 1.0 and app["reruns"] == 0, app
    # It started once the hog had let go: what was free then covers its estimate.
    assert app["available_at_admit"] >= 350 * MiB, app
