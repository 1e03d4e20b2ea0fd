"""Settings checked once per cargo build by the first call that sees them (buildcheck):
a bad setting or an unknown key is said once, on cargo's own stderr, before any LTO
job, and the calls themselves go on unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltoguard import configfiles
from tests.procs import LTO_BIN, clean_env

RUSTC = '#!/bin/sh\necho "compiled $*"\n'
# A stand-in for cargo: `comm` of a #! script is the script's name. Each call's stderr
# is a pipe (cargo's capture), its output appended to calls.log.
CARGO = """#!/bin/sh
for crate in dep_a dep_b dep_c; do
    "$PY" -m ltoguard "$RUSTC" --crate-name $crate --crate-type lib src/lib.rs 2>&1 | cat >>"$LOG"
done
if [ -n "$LTO" ]; then
    "$PY" -m ltoguard "$RUSTC" --crate-name app --edition=2021 src/main.rs $LTO 2>&1 | cat >>"$LOG"
fi
"""
PROBE = """#!/bin/sh
"$PY" -m ltoguard "$RUSTC" -vV 2>&1 | cat >>"$LOG"
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "app").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[workspace]\nmembers = ["app"]\n')
    (root / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\n')
    return root


def cargo(
    tmp_path: Path, ws: Path, script: str = CARGO, lto: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("cargo", script), ("rustc", RUSTC)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    full = clean_env(tmp_path, tmp_path / "state", **env)
    full.pop("LTOGUARD_SLOTS")  # clean_env's, so that a test's own value is the one seen
    full.update(
        PY=sys.executable, RUSTC=str(bin_dir / "rustc"), LOG=str(tmp_path / "calls.log"),
        CARGO_MANIFEST_DIR=str(ws / "app"), LTO=" ".join(LTO_BIN) if lto else "",
    )  # fmt: skip
    full.update(env)
    return subprocess.run(
        [str(bin_dir / "cargo")], env=full, cwd=str(ws), capture_output=True, text=True, timeout=120
    )


def test_a_bad_setting_is_said_once_by_the_first_call(tmp_path: Path, ws: Path) -> None:
    r = cargo(tmp_path, ws, LTOGUARD_SLOTS="0")
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert lines == [
        "ltoguard: error: LTOGUARD_SLOTS='0' is not valid; accepted: auto or a whole number"
        " from 1 to 1024; this build's guarded (LTO) jobs will fail on it"
    ]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["dep_a", "dep_b", "dep_c"]  # each compiled
    # The next build (another cargo process) says it again, once.
    again = cargo(tmp_path, ws, LTOGUARD_SLOTS="0")
    assert again.stderr.splitlines() == lines
    marks = [n for n in os.listdir(tmp_path / "state") if n.startswith(configfiles.MARK)]
    assert len(marks) == 1  # the first build's mark went with its cargo


def test_the_probe_alone_says_it_and_its_output_is_rustcs(tmp_path: Path, ws: Path) -> None:
    # A no-op build runs no compiler; when cargo's .rustc_info.json is cold it runs -vV.
    r = cargo(tmp_path, ws, PROBE, LTOGUARD_MEMORY="lots")
    assert r.returncode == 0
    assert r.stderr.startswith("ltoguard: error: LTOGUARD_MEMORY='lots' is not valid")
    assert r.stderr.count("\n") == 1
    # What cargo stores in .rustc_info.json: rustc's output only, and its status.
    assert (tmp_path / "calls.log").read_text() == "compiled -vV\n"


def test_an_unknown_key_is_said_once_per_build_not_per_job(tmp_path: Path, ws: Path) -> None:
    with open(ws / "Cargo.toml", "a") as f:
        f.write("\n[workspace.metadata.ltoguard]\nslots = 1\nfuture-knob = 2\n")
    r = cargo(tmp_path, ws, lto=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("future-knob: unknown key, ignored") == 1, r.stderr
    log = (tmp_path / "calls.log").read_text()
    assert "unknown key" not in log  # nothing in what cargo would store and replay
    assert "compiled --crate-name app" in log  # the LTO job ran


def test_outside_cargo_nothing_is_marked(tmp_path: Path) -> None:
    env = clean_env(tmp_path, tmp_path / "state", LTOGUARD_MEMORY="lots")
    r = subprocess.run(
        [sys.executable, "-m", "ltoguard", "/bin/true", "--crate-type", "lib", "x.rs"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert not (tmp_path / "state").exists()


def test_the_calls_after_the_first_stay_light(tmp_path: Path) -> None:
    code = f"""if True:
        import sys
        from ltoguard import configfiles
        configfiles.cargo_build = lambda: "4242-99"
        env = {{"LTOGUARD_DIR": {str(tmp_path / "state")!r}}}
        first, second = configfiles.first_call_of_build(env), configfiles.first_call_of_build(env)
        heavy = ("tomllib", "tomli", "ltoguard.config", "ltoguard.messages", "ltoguard.buildcheck")
        print(first, second, [m for m in heavy if m in sys.modules])
        """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "True False []\n", r.stderr


def test_a_guarded_job_stays_quiet_only_when_the_first_call_left_its_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltoguard import buildcheck, configfiles

    monkeypatch.setattr(configfiles, "cargo_build", lambda: "123-456")
    monkeypatch.setattr(buildcheck, "_past_cargo", lambda: True)
    monkeypatch.setenv("LTOGUARD_DIR", str(tmp_path))
    assert buildcheck.said_early() is False  # no mark: nobody said anything yet
    (tmp_path / (configfiles.MARK + "123-456")).touch()
    assert buildcheck.said_early() is True
