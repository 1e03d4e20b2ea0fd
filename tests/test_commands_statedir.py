"""The state-reading commands refuse an unusable state directory as a build would:
the same one-line message, exit 2."""

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
@pytest.mark.parametrize(
    "kind", ["file", "world-writable", "no parent", "under a file", "cannot be made"]
)
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
    elif kind == "no parent":
        bad = tmp_path / "missing" / "state"
    elif kind == "under a file":
        (tmp_path / "file").write_text("")
        bad = tmp_path / "file" / "state"
    else:
        # The parent exists, but nothing can be made in it (procfs).
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc here")
        bad = Path("/proc/ltoguard-state")
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


def test_looking_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The check makes and removes an empty sibling: the parent is as it was.
    monkeypatch.setenv("LTOGUARD_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status"]) == 0
    assert sorted(os.listdir(tmp_path)) == []
