"""The state-reading commands refuse an unusable state directory as a build would:
the same one-line message, exit 2 (issue #10 item 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltoguard import cli
from ltoguard.statedir import StateDirError, open_state_dir

COMMANDS = [
    ["status"],
    ["learned"],
    ["report"],
    ["explain", "rustc", "--crate-type", "bin", "m.rs"],
]


def build_says(path: Path) -> str:
    with pytest.raises(StateDirError) as exc:
        open_state_dir(str(path))
    return f"ltoguard: error: {exc.value}\n"


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("kind", ["file", "world-writable", "no parent"])
def test_a_bad_state_dir_is_refused_like_a_build(
    argv: list[str],
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "state"
    if kind == "file":
        bad.write_text("")
    elif kind == "world-writable":
        bad.mkdir()
        os.chmod(bad, 0o777)
    else:
        bad = tmp_path / "missing" / "state"
    expected = build_says(bad)
    monkeypatch.setenv("LTOGUARD_DIR", str(bad))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(expected), err
    assert err.count("ltoguard: error:") == 1


@pytest.mark.parametrize("argv", COMMANDS[:2], ids=lambda a: a[0])
def test_a_state_dir_not_made_yet_is_fine(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LTOGUARD_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert cli.main(argv) == 0
    assert "no guarded compile has run yet" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()  # looking does not create it
