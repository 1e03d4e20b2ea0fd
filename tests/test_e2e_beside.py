"""What a pause's floor asks of the process list, end to end: does cargo run any
compile beside this one? (proctree.nothing_compiling_beside; pause.py leaves the
rise the running jobs were expected to make out of the fall only while it runs none.)

A real `cargo build -j2` of three crates, each compile through a wrapper that asks
the question from where ltoguard runs (cargo's child) and then runs rustc:

- `slow`: a library whose build script runs for a few seconds;
- `early`: a binary that needs nothing, compiled at once, beside the compile or
  the run of `slow`'s build script: something compiles beside it;
- `late`: a binary over `slow`, compiled once `slow` and `early` are done: nothing
  compiles beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HAVE_CARGO, cargo_env, needs_children_files
from tests.procs import clean_env

pytestmark = [pytest.mark.cargo, pytest.mark.timeout(300)]

HOLD_S = 4  # `slow`'s build script: `early` starts and ends well within it

# Asks the question until the answer is "something compiles beside" or 2 s have
# passed (cargo may start `early` a moment before `slow`'s build), records the
# last answer, and runs rustc in its place (as ltoguard's pass-through does).
WRAPPER = """\
import json, os, sys, time
from ltoguard import proctree
args = sys.argv[1:]
crate = args[args.index("--crate-name") + 1] if "--crate-name" in args else None
if crate in ("early", "late"):
    deadline = time.monotonic() + 2.0
    quiet = proctree.nothing_compiling_beside()
    while quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        quiet = proctree.nothing_compiling_beside()
    with open(os.environ["BESIDE_LOG"], "a") as f:
        f.write(json.dumps({"crate": crate, "quiet": quiet}) + "\\n")
os.execvp(args[0], args)
"""

SLOW_BUILD = f"""\
fn main() {{
    std::thread::sleep(std::time::Duration::from_secs({HOLD_S}));
    println!("cargo:rerun-if-changed=build.rs");
}}
"""


def write_workspace(root: Path) -> None:
    (root / "Cargo.toml").write_text(
        '[workspace]\nresolver = "2"\nmembers = ["slow", "early", "late"]\n'
    )
    crates = {
        "slow": ("", "src/lib.rs", "pub fn n() -> u32 { 7 }\n"),
        "early": ("", "src/main.rs", 'fn main() { println!("early"); }\n'),
        "late": (
            'slow = { path = "../slow" }\n',
            "src/main.rs",
            'fn main() { println!("{}", slow::n()); }\n',
        ),
    }
    for name, (deps, path, code) in crates.items():
        (root / name / "src").mkdir(parents=True)
        (root / name / "Cargo.toml").write_text(
            f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
            f"[dependencies]\n{deps}"
        )
        (root / name / path).write_text(code)
    (root / "slow" / "build.rs").write_text(SLOW_BUILD)


@needs_children_files
@pytest.mark.skipif(not HAVE_CARGO, reason="cargo/rustc not on PATH")
def test_a_compile_sees_cargos_other_compiles_and_then_none(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    write_workspace(root)
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(f"#!{sys.executable}\n{WRAPPER}")
    wrapper.chmod(0o755)
    log = tmp_path / "beside.jsonl"
    env = cargo_env(tmp_path / "target", clean_env(tmp_path, tmp_path / "state"))
    env.update(RUSTC_WORKSPACE_WRAPPER=str(wrapper), BESIDE_LOG=str(log))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run(
        ["cargo", "build", "-j2", "--offline"], cwd=root, env=env,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    seen = {d["crate"]: d["quiet"] for d in map(json.loads, log.read_text().splitlines())}
    assert seen == {"early": False, "late": True}, r.stderr
