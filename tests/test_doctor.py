"""`ltoguard doctor`: each check against a workspace made for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltoguard.commands import doctor
from ltoguard.commands.doctor import FAIL, OK, WARN, Check

LTOGUARD = str(Path(sys.executable).parent / "ltoguard")
CARGO_TOML = """\
[workspace]
members = []

[profile.release]
{profile}
"""


def workspace(tmp_path: Path, profile: str = 'lto = "fat"') -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "Cargo.toml").write_text(CARGO_TOML.format(profile=profile))
    return ws


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "CARGO_HOME": str(tmp_path / "cargo-home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LTOGUARD_DIR": str(tmp_path / "state"),
    }
    env.update(extra)
    return env


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_bare_name_not_on_path_is_caught(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (ws / ".cargo").mkdir()
    (ws / ".cargo" / "config.toml").write_text('[build]\nrustc-workspace-wrapper = "ltoguard"\n')
    checks = by_name(doctor.run_checks(str(ws), env_for(tmp_path, PATH="/nonexistent")))
    assert checks["wrapper"].status == OK
    assert str(ws / ".cargo" / "config.toml") in checks["wrapper"].message  # its origin
    assert checks["wrapper path"].status == FAIL
    assert "bare name 'ltoguard' is not on PATH" in checks["wrapper path"].message
    assert "could not execute process" in checks["wrapper path"].message


def test_a_dangling_symlink_is_a_moved_venv(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    link = tmp_path / "ltoguard"
    link.symlink_to(tmp_path / "gone" / "venv" / "bin" / "ltoguard-fast")
    checks = by_name(
        doctor.run_checks(str(ws), env_for(tmp_path, RUSTC_WORKSPACE_WRAPPER=str(link)))
    )
    assert checks["wrapper path"].status == FAIL
    assert "which is gone" in checks["wrapper path"].message


def test_the_env_wins_and_an_empty_value_disables(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    home = tmp_path / "cargo-home"
    home.mkdir()
    (home / "config.toml").write_text(f'[build]\nrustc-workspace-wrapper = "{LTOGUARD}"\n')
    checks = by_name(doctor.run_checks(str(ws), env_for(tmp_path)))
    assert checks["wrapper"].status == OK and str(home / "config.toml") in checks["wrapper"].message
    assert checks["wrapper path"].status == OK, checks["wrapper path"]
    checks = by_name(doctor.run_checks(str(ws), env_for(tmp_path, RUSTC_WORKSPACE_WRAPPER="")))
    assert checks["wrapper"].status == FAIL  # cargo runs no wrapper at all now


@pytest.mark.parametrize(
    ("profile", "status"),
    [
        ('lto = "fat"', OK),
        ('lto = "thin"', OK),
        ("lto = true", OK),
        ("lto = false", FAIL),
        ('lto = "off"', FAIL),
        ("opt-level = 3", FAIL),  # no lto key at all
    ],
)
def test_release_profile_without_lto_is_caught(tmp_path: Path, profile: str, status: str) -> None:
    ws = workspace(tmp_path, profile)
    check = doctor.check_lto(str(ws), env_for(tmp_path), "lto")
    assert check.status == status, check
    if status == FAIL:
        assert "guards nothing" in check.message


def test_lto_from_the_environment_or_mode_link(tmp_path: Path) -> None:
    ws = workspace(tmp_path, "opt-level = 3")
    env = env_for(tmp_path, CARGO_PROFILE_RELEASE_LTO="thin")
    assert doctor.check_lto(str(ws), env, "lto").status == OK
    assert doctor.check_lto(str(ws), env_for(tmp_path), "link").status == OK


def test_bad_state_dir_is_caught(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    checks = by_name(doctor.run_checks(str(ws), env_for(tmp_path, LTOGUARD_DIR=str(not_a_dir))))
    assert checks["state dir"].status == FAIL
    assert str(not_a_dir) in checks["state dir"].message


def test_bad_setting_is_caught(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    checks = by_name(doctor.run_checks(str(ws), env_for(tmp_path, LTOGUARD_SLOTS="many")))
    assert checks["settings"].status == FAIL
    assert "LTOGUARD_SLOTS='many' is not valid" in checks["settings"].message


def test_command_verdict_and_json(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    good = env_for(tmp_path, RUSTC_WORKSPACE_WRAPPER=LTOGUARD)
    proc = subprocess.run(
        [LTOGUARD, "doctor"], cwd=ws, env=good, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("verdict: ready")
    bad = dict(good, RUSTC_WORKSPACE_WRAPPER="ltoguard", PATH="/nonexistent")
    proc = subprocess.run(
        [LTOGUARD, "doctor", "--json"], cwd=ws, env=bad, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert {c["name"]: c["status"] for c in doc["checks"]}["wrapper path"] == FAIL
    assert all(c["status"] in (OK, WARN, FAIL) for c in doc["checks"])


def test_an_inner_wrapper_set_in_a_file_must_exist(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    text = (ws / "Cargo.toml").read_text()
    (ws / "Cargo.toml").write_text(
        text + '\n[workspace.metadata.ltoguard]\nwrap = "sccache-nowhere"\n'
    )
    env = env_for(tmp_path, RUSTC_WRAPPER=LTOGUARD, PATH="/nonexistent")
    checks = by_name(doctor.run_checks(str(ws), env))
    assert checks["sccache"].status == FAIL
    assert (
        "sccache-nowhere" in checks["sccache"].message and "Cargo.toml" in checks["sccache"].message
    )
