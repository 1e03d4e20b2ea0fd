"""Unknown keys in a settings file are warnings naming the file and the key (a newer
ltoguard, a teammate's, may know them); a bad value of a known key stays an error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ltoguard import config
from ltoguard.commands import doctor, explain
from ltoguard.config import SettingsError
from tests.procs import LTO_BIN, clean_env, ltoguard_cmd, make_fake_rustc
from tests.test_config import BIN_LTO, user_file, ws_settings

# Fixtures shared with test_config.py.
from tests.test_config import env as env
from tests.test_config import ws as ws

KNOWS = "this ltoguard knows: mode, slots, memory, wrap, dir, linker, lend, crates"


def test_user_file_unknown_keys_warn_and_the_rest_applies(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = user_file(env, 'slot = 2\nslots = 3\n[crates.x]\nmemroy = "1G"\nguard = "always"\n')
    s = config.load(env, str(tmp_path), warn=False)
    assert s.slots == 3 and s.crate("x") is not None and s.crate("x").guard == "always"  # type: ignore[union-attr]
    assert s.warnings == [
        f"{path} slot: unknown key, ignored (did you mean slots?); {KNOWS}",
        f"{path} [crates.x] memroy: unknown key, ignored (did you mean memory?);"
        " this ltoguard knows: memory, guard",
    ]
    assert capsys.readouterr().err == ""  # warn=False says nothing


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ("[workspace.metadata.ltoguard]", "[workspace.metadata.ltoguard] "),
        (
            "[workspace.metadata.ltoguard.crates.my-app]",
            "[workspace.metadata.ltoguard.crates.my-app] ",
        ),
    ],
)
def test_workspace_unknown_key_is_said_once_on_stderr(
    ws: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], table: str, where: str
) -> None:
    ws_settings(ws, f"{table}\nfuture-knob = 1\n")
    s = config.load(env, str(ws / "app"))
    err = capsys.readouterr().err
    assert err.startswith(
        f"ltoguard: warning: {ws / 'Cargo.toml'} {where}future-knob: unknown key, ignored;"
    )
    assert err.count("\n") == 1 and len(s.warnings) == 1


def test_package_table_unknown_key(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "single"
    root.mkdir()
    (root / "Cargo.toml").write_text(
        '[package]\nname = "p"\nversion = "0.1.0"\n\n[package.metadata.ltoguard]\nslotz = 1\n'
    )
    s = config.load(env, str(root), warn=False)
    assert s.warnings == [
        f"{root / 'Cargo.toml'} [package.metadata.ltoguard] slotz: unknown key, ignored"
        f" (did you mean slots?); {KNOWS}"
    ]


@pytest.mark.parametrize(
    "text", ['slots = "many"\nnew = 1\n', "crates = 3\n", "[crates.x]\nguard = 1\n"]
)
def test_a_bad_value_of_a_known_key_stays_an_error(
    env: dict[str, str], tmp_path: Path, text: str
) -> None:
    user_file(env, text)
    with pytest.raises(SettingsError):
        config.load(env, str(tmp_path), warn=False)


def test_explain_and_doctor_show_it(
    ws: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws_settings(ws, "[workspace.metadata.ltoguard]\nslot = 2\n")
    monkeypatch.chdir(ws / "app")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LTOGUARD_DIR", str(ws / "state"))
    warning = (
        f"ltoguard: warning: {ws / 'Cargo.toml'} [workspace.metadata.ltoguard] slot: unknown key"
    )
    assert explain.main(BIN_LTO) == 0
    assert capsys.readouterr().err.startswith(warning)
    doctor.main(["--json"])
    assert warning in capsys.readouterr().err


def run_job(
    tmp_path: Path, ws: Path, crate: str, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    rustc = make_fake_rustc(tmp_path)
    child_env = clean_env(tmp_path, tmp_path / "state")
    child_env["CARGO_MANIFEST_DIR"] = str(ws / "app")
    return subprocess.run(
        ltoguard_cmd(rustc, crate, extra), env=child_env, cwd=str(ws), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_a_guarded_job_says_it_a_passed_crate_does_not(ws: Path, tmp_path: Path) -> None:
    # `wrap` in the file sends every crate through the settings: only the guarded job warns.
    ws_settings(ws, '[workspace.metadata.ltoguard]\nwrap = ""\nslot = 2\n')
    guarded = run_job(tmp_path, ws, "my_app", LTO_BIN)
    assert guarded.returncode == 0, guarded.stderr
    assert "ltoguard: warning: " in guarded.stderr and "slot: unknown key" in guarded.stderr
    passed = run_job(tmp_path, ws, "dep", ["--crate-type", "lib"])
    assert passed.returncode == 0, passed.stderr
    assert passed.stderr == ""


def test_under_cargo_it_goes_past_cargos_message_cache(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # Like the waiting line: on cargo's own stderr, so a fresh unit does not replay it.
    from ltoguard import messages

    r, w = os.pipe()
    monkeypatch.setattr(messages, "_channel", messages.Channel(w, False, True))
    user_file(env, "slot = 2\n")
    try:
        config.load(env, str(tmp_path))
        os.close(w)
        said = os.read(r, 4096).decode()
    finally:
        os.close(r)
    assert said.startswith("ltoguard: warning: ") and "slot: unknown key, ignored" in said
    assert capsys.readouterr().err == ""


def test_where_cargo_would_replay_it_the_line_says_when(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # cargo's stderr out of reach (a regular file, no /proc): the line goes to ours,
    # which cargo stores and prints again on later builds while the crate is fresh.
    from ltoguard import messages

    monkeypatch.setattr(messages, "_channel", messages.Channel(-1, False, True))
    user_file(env, "slot = 2\n")
    config.load(env, str(tmp_path))
    err = capsys.readouterr().err
    assert err.startswith("ltoguard: warning: ") and err.endswith(
        "(as of this crate's last compile)\n"
    )
