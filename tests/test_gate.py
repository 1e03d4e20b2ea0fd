"""`ltoguard run -- CMD` and the `ltoguard-link` linker wrapper, with real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.procs import Procs, clean_env, counter_max, ltoguard_cmd, make_fake_rustc

pytestmark = pytest.mark.timeout(180)

LINK = [sys.executable, "-c", "from ltoguard.commands.link import main; raise SystemExit(main())"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path, tmp_path / "state", LTOGUARD_SLOTS="auto")


def _events(state: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for f in sorted(state.glob("events-*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


@pytest.mark.slow
def test_run_gates_any_command(tmp_path: Path, procs: Procs, env: dict[str, str]) -> None:
    fake = make_fake_rustc(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "ltoguard",
        "run",
        "--slots",
        "1",
        "--name",
        "shard",
        "--",
        str(fake),
    ]
    ps = [procs.start(cmd, dict(env, FAKE_SLEEP="0.3", FAKE_NAME=f"s{i}")) for i in range(4)]
    assert [p.wait(timeout=60) for p in ps] == [0, 0, 0, 0]
    assert counter_max(tmp_path) == 1
    events = _events(tmp_path / "state")
    assert [e["kind"] for e in events] == ["run"] * 4 and {e["crate"] for e in events} == {"shard"}


def test_run_passes_exit_status(tmp_path: Path, env: dict[str, str]) -> None:
    fake = make_fake_rustc(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "ltoguard", "run", "--", str(fake)], env=dict(env, FAKE_EXIT="3")
    )
    assert r.returncode == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--"], "needs a command"), (["--estimate", "lots", "--", "true"], "accepted")],
)
def test_run_usage_errors(env: dict[str, str], args: list[str], needle: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ltoguard", "run", *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.startswith("ltoguard: error: ") and needle in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_link_wrapper_runs_the_real_linker(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\nint main(void){puts("linked");return 0;}\n'
    )
    subprocess.run(["cc", "-c", "main.c", "-o", "main.o"], cwd=tmp_path, check=True)
    r = subprocess.run(
        [*LINK, "main.o", "-o", "hello-0123abcd"], cwd=tmp_path, env=dict(env, LTOGUARD_LINKER="cc")
    )
    assert r.returncode == 0
    out = subprocess.run([str(tmp_path / "hello-0123abcd")], capture_output=True, text=True)
    assert out.stdout == "linked\n"
    events = _events(tmp_path / "state")
    assert [(e["kind"], e["crate"], e["exit"]) for e in events] == [("link", "hello", 0)]


def test_link_inside_a_guarded_compile_passes_through(
    tmp_path: Path, procs: Procs, env: dict[str, str]
) -> None:
    """rustc (guarded, holding the only slot) runs the linker: waiting there would deadlock."""
    linker = tmp_path / "fake-cc"
    linker.write_text(f"#!{sys.executable}\nimport sys; open(sys.argv[-1], 'w').write('ok')\n")
    linker.chmod(0o755)
    rustc = tmp_path / "rustc"
    rustc.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import subprocess, sys
            sys.exit(subprocess.call({LINK!r} + ["x.o", "-o", "out"]))
            """
        )
    )
    rustc.chmod(0o755)
    e = dict(env, LTOGUARD_SLOTS="1", LTOGUARD_LINKER=str(linker))
    p = procs.start(ltoguard_cmd(rustc, "app"), e, cwd=tmp_path)
    assert p.wait(timeout=30) == 0
    assert (tmp_path / "out").read_text() == "ok"
    assert [ev["kind"] for ev in _events(tmp_path / "state")] == ["rustc"]


@pytest.mark.cargo
@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_cargo_build_with_ltoguard_link_as_linker(tmp_path: Path, env: dict[str, str]) -> None:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text(
        '[package]\nname = "linked-app"\nversion = "0.1.0"\nedition = "2021"\n'
    )
    (ws / "src" / "main.rs").write_text('fn main() { println!("hello through ltoguard-link"); }\n')
    link = shutil.which("ltoguard-link", path=os.path.dirname(sys.executable))
    if link is None:
        pytest.skip("ltoguard-link is not installed next to this Python")
    e = dict(env, CARGO_TARGET_DIR=str(tmp_path / "target"), RUSTFLAGS=f"-C linker={link}")
    r = subprocess.run(["cargo", "build", "-q"], cwd=ws, env=e, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(
        [str(tmp_path / "target" / "debug" / "linked-app")], capture_output=True, text=True
    )
    assert out.stdout == "hello through ltoguard-link\n"
    kinds = [(ev["kind"], ev["crate"]) for ev in _events(tmp_path / "state")]
    assert ("link", "linked_app") in kinds, kinds
