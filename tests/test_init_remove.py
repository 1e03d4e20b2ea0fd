"""`ltoguard init --remove`: the line init added goes, nothing else; idempotent; dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltoguard.commands import init as initcmd
from tests.test_init import EXISTING, WRAP, init

# The fixture is shared with test_init.py (same workspace layout).
from tests.test_init import ws as ws  # noqa: F401

NOTE_END = (
    "what ltoguard learned stays in its cache (`ltoguard learned` shows where) and any "
    "ltoguard-report.html stays in the target directory\n"
)


def remove(*args: str) -> int:
    return initcmd.main(["--remove", *args])


def test_init_then_remove_restores_the_file_byte_for_byte(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text(EXISTING)
    assert init() == 0
    assert path.read_text() != EXISTING
    capsys.readouterr()
    assert remove() == 0
    assert path.read_text() == EXISTING
    out = capsys.readouterr().out
    assert out == (
        f'removed [build] rustc-workspace-wrapper = "{WRAP}" from {path}\n'
        "note: the next build recompiles every workspace member once (cargo hashes the "
        "wrapper's path into their metadata); " + NOTE_END
    )
    assert remove() == 0  # idempotent
    assert path.read_text() == EXISTING
    assert capsys.readouterr().out == (
        f"nothing to remove: no [build] wrapper naming ltoguard in {path}\n"
    )


def test_a_file_init_created_goes_as_it_came(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ws / ".cargo" / "config.toml"
    assert init() == 0
    assert remove() == 0
    assert not path.exists()
    assert capsys.readouterr().out.splitlines()[-2] == (
        f'removed {path} (it held only [build] rustc-workspace-wrapper = "{WRAP}")'
    )
    assert remove() == 0
    assert capsys.readouterr().out == f"nothing to remove: no {path}\n"


@pytest.mark.parametrize(
    "text",
    [
        '[build]\nrustc-workspace-wrapper = "sccache"\n',
        '[build]\nrustc-wrapper = "/usr/bin/sccache"  # ours\n',
        '[target.x]\nrustc-workspace-wrapper = "/opt/bin/ltoguard"\n',
        "# only a comment\n",
    ],
)
def test_another_wrapper_is_left_alone(
    ws: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text(text)
    assert remove() == 0
    assert path.read_text() == text
    assert capsys.readouterr().out.startswith("nothing to remove")


def test_dry_run_shows_the_change_and_writes_nothing(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    text = f'[build]\njobs = 2\nrustc-workspace-wrapper = "{WRAP}"\n'
    path.write_text(text)
    assert remove("--dry-run") == 0
    assert path.read_text() == text
    out = capsys.readouterr().out
    assert out.startswith("dry run, nothing written; would have removed [build] rustc-")
    assert f'-rustc-workspace-wrapper = "{WRAP}"\n' in out and "+" not in out.split("@@")[-1]


@pytest.mark.parametrize(
    ("before", "after", "rebuild"),
    [
        # dotted keys in the root table
        (
            f'build.jobs = 2\nbuild.rustc-workspace-wrapper = "{WRAP}"\n[alias]\nb = "build"\n',
            '[alias]\nb = "build"\n',
            True,
        ),
        # CRLF, the key indented with a comment of its own
        (
            f'[build]\r\n  rustc-wrapper = "{WRAP}" # ltoguard\r\njobs = 1\r\n',
            "[build]\r\njobs = 1\r\n",
            False,
        ),
        # both keys (cargo would run ltoguard twice): both go
        (
            f'[build]\nrustc-wrapper = "{WRAP}"\nrustc-workspace-wrapper = "{WRAP}"\nx = 1\n',
            "[build]\nx = 1\n",
            True,
        ),
    ],
)
def test_shapes(
    ws: Path, capsys: pytest.CaptureFixture[str], before: str, after: str, rebuild: bool
) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_bytes(before.encode())
    assert remove() == 0
    if before.startswith("build.jobs"):
        after = "build.jobs = 2\n" + after
    assert path.read_bytes() == after.encode()
    assert ("recompiles every workspace member" in capsys.readouterr().out) == rebuild


def test_the_environment_still_naming_ltoguard_is_said(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUSTC_WORKSPACE_WRAPPER", WRAP)
    assert remove() == 0
    assert capsys.readouterr().err == (
        "ltoguard: warning: RUSTC_WORKSPACE_WRAPPER names ltoguard in this environment;"
        " cargo still runs it\n"
    )
