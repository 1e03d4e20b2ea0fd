"""A build script's compile that waits for a slot does not lend its token, end to end.

A job that lent its token takes one back before it exits, and cargo hands a token
out again only once it has nothing left to start. A build script's compile that
lent therefore ended, but its process did not: the build script, and every unit
over it, waited for cargo to run out of other work (docs/benchmarks.md, "A build
script's compile that lent"). A real `cargo build -j2` in link mode
(LTOGUARD_MODE=link guards build scripts' links too), one slot, each compile
through an inner wrapper (LTOGUARD_WRAP) that slows some down:

- `first`: a library whose build script's compile holds the only slot for a while;
- `seed`: a library, the build dependency of `second`, so that `second`'s build
  script reaches ltoguard while `first`'s still holds the slot, and waits;
- `f1`..`f6`: libraries that compile slowly: cargo has one of them to start until
  the last has started;
- `app`: the binary over all of them.

`second`'s build script must run before the last filler starts. Before, it ran
only after: a token comes back to the jobserver only once cargo has no unit left
to start on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HAVE_CARGO, cargo_env
from tests.procs import clean_env

pytestmark = [pytest.mark.cargo, pytest.mark.timeout(300)]

LTOGUARD = Path(sys.executable).parent / "ltoguard"
FILLERS = ("f1", "f2", "f3", "f4", "f5", "f6")
HOLD_S = {"build_script_first": 5.0, "seed": 1.5, **dict.fromkeys(FILLERS, 2.5)}

# Logs when each compile started and whether cargo gave it a jobserver (without one
# nothing is lent and the test would pass for nothing), holds it, runs rustc.
WRAPPER = f"""\
import os, sys, time
args = sys.argv[1:]
crate = args[args.index("--crate-name") + 1] if "--crate-name" in args else ""
with open(os.environ["STARTS_LOG"], "a") as f:
    jobserver = "--jobserver" in os.environ.get("CARGO_MAKEFLAGS", "")
    f.write(f"{{crate}} {{time.time()}} {{int(jobserver)}}\\n")
time.sleep({HOLD_S!r}.get(crate, 0))
os.execvp(args[0], args)
"""


def _package(root: Path, name: str, body: str = "", build: str = "", **deps: str) -> None:
    d = root / name
    (d / "src").mkdir(parents=True)
    manifest = f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n'
    if build:
        manifest += f'build = "{build}"\n'
        (d / build).write_text('fn main() { println!("cargo:rerun-if-changed=build.rs"); }\n')
    for table, names in deps.items():
        manifest += f"[{table}]\n" + "".join(
            f'{n} = {{ path = "../{n}" }}\n' for n in names.split()
        )
    (d / "Cargo.toml").write_text(manifest)
    (d / "src" / ("main.rs" if name == "app" else "lib.rs")).write_text(body or "pub fn f() {}\n")


def write_workspace(root: Path) -> None:
    members = ["first", "seed", "second", *FILLERS, "app"]
    (root / "Cargo.toml").write_text(
        f'[workspace]\nmembers = {json.dumps(members)}\nresolver = "2"\n'
    )
    _package(root, "first", build="first.rs")
    _package(root, "seed")
    _package(root, "second", build="build.rs", **{"build-dependencies": "seed"})
    for name in FILLERS:
        _package(root, name)
    _package(root, "app", "fn main() {}\n", dependencies=" ".join(["first", "second", *FILLERS]))


@pytest.mark.skipif(not HAVE_CARGO, reason="cargo/rustc not on PATH")
def test_a_build_scripts_compile_that_waited_lets_its_script_run_at_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    write_workspace(root)
    wrapper = tmp_path / "slow.py"
    wrapper.write_text(f"#!{sys.executable}\n{WRAPPER}")
    wrapper.chmod(0o755)
    state, target = tmp_path / "state", tmp_path / "target"
    env = cargo_env(target, clean_env(tmp_path, state))
    env.update(
        RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD), LTOGUARD_WRAP=str(wrapper),
        LTOGUARD_MODE="link", LTOGUARD_SLOTS="1", STARTS_LOG=str(tmp_path / "starts"),
    )  # fmt: skip
    r = subprocess.run(
        ["cargo", "build", "-j2", "--offline"], cwd=root, env=env,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for f in state.glob("events-*.jsonl") for line in f.open()]
    waited = {e["crate"]: e["waited"] for e in events}
    # `second`'s build script's compile reached ltoguard while `first`'s held the slot.
    assert waited["build_script_build"] > 0.5, (waited, r.stderr)
    (ran,) = target.glob("debug/build/second-*/output")
    lines = [line.rsplit(" ", 2) for line in (tmp_path / "starts").read_text().splitlines()]
    starts = {crate: float(t) for crate, t, _ in lines}
    assert [j for crate, _, j in lines if crate == "build_script_build"] == ["1"]
    last_filler = max(starts[n] for n in FILLERS)
    assert os.stat(ran).st_mtime < last_filler, (os.stat(ran).st_mtime, starts, r.stderr)
