"""cargo never replays an ltoguard line, end to end.

cargo stores every non-JSON stderr line of a compile in the unit's message cache
and prints it again on every build where the unit is fresh. A real
`cargo build --release` of two fat-LTO binaries with one slot (so one waits) runs
twice: the first build shows the waiting lines, the second (nothing changed)
shows no ltoguard line at all. With cargo's stderr a regular file (where
ltoguard cannot write past cargo), only past-tense lines are said, so what cargo
replays stays true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ltoguard import events
from tests.conftest import HAVE_CARGO, cargo_env
from tests.procs import Procs

pytestmark = [pytest.mark.cargo, pytest.mark.timeout(600)]

LTOGUARD = Path(sys.executable).parent / "ltoguard"


def ltoguard_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "ltoguard:" in line]


def cargo_build(root: Path, env: dict[str, str], stderr: int | Path) -> tuple[int, str]:
    cmd = ["cargo", "build", "--release", "-j2"]
    with Procs() as procs:
        if isinstance(stderr, Path):
            with open(stderr, "w") as f:
                proc = procs.start(cmd, env, cwd=root, stdin=subprocess.DEVNULL, stderr=f)
                proc.communicate(timeout=540)
            return proc.returncode, stderr.read_text()
        p = procs.start(cmd, env, text=True, cwd=root, stdin=subprocess.DEVNULL)
        _, err = p.communicate(timeout=540)
        return p.returncode, err


@pytest.fixture
def workspace(tmp_path: Path, gen_workspace: ModuleType) -> tuple[Path, dict[str, str]]:
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    assert LTOGUARD.exists(), f"ltoguard console script not installed at {LTOGUARD}"
    root = tmp_path / "ws"
    gen_workspace.generate(root, bins=2, libs=1, size="small", lto="fat")
    env = {k: v for k, v in cargo_env(tmp_path / "target").items() if not k.startswith("LTOGUARD_")}
    env.update(
        RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD),
        LTOGUARD_SLOTS="1",
        LTOGUARD_DIR=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        CARGO_TERM_COLOR="never",
    )
    return root, env


def test_a_no_op_rebuild_prints_no_ltoguard_line(workspace: tuple[Path, dict[str, str]]) -> None:
    root, env = workspace
    rc, first = cargo_build(root, env, subprocess.PIPE)
    assert rc == 0, first[-3000:]
    said = ltoguard_lines(first)
    assert any(" waits (" in line for line in said), first  # one bin waited for the other
    assert any(" waited " in line and "s before it started" in line for line in said), first

    rc, second = cargo_build(root, env, subprocess.PIPE)
    assert rc == 0, second[-3000:]
    assert "Finished" in second
    assert ltoguard_lines(second) == [], second

    # The report's unit of a build: both jobs name the one cargo run they ran under.
    log = Path(env["LTOGUARD_DIR"]) / f"events-{os.geteuid()}.jsonl"
    jobs = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(j["crate"] for j in jobs) == ["app00", "app01"]
    assert len({j["build"] for j in jobs}) == 1 and jobs[0]["build"], jobs
    assert {events.kind_of(j) for j in jobs} == {"bin"}


def test_where_cargo_would_replay_only_the_past_is_said(
    workspace: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = workspace
    rc, first = cargo_build(root, env, tmp_path / "first.log")
    assert rc == 0, first[-3000:]
    said = ltoguard_lines(first)
    assert said, first
    assert all(" waited " in line for line in said), said  # nothing in the present tense

    rc, second = cargo_build(root, env, tmp_path / "second.log")
    assert rc == 0, second[-3000:]
    assert ltoguard_lines(second) == said  # replayed by cargo, and still true
