"""A mistyped subcommand (`ltoguard stauts`) is told apart from a program to wrap:
only when no such program exists, and only then is the hint computed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ltoguard import cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

TYPO = "ltoguard: error: no such command 'stauts'; did you mean 'status'?\n"


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("LTOGUARD_WRAP", raising=False)
    monkeypatch.setenv("LTOGUARD_MODE", "off")  # nothing from a settings file decides
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("empty_path")
@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["stauts"], "status"),
        (["statsu", "--json"], "status"),
        (["initt"], "init"),
        (["learend"], "learned"),
        (["doctr"], "doctor"),
    ],
)
def test_a_close_word_is_a_typo(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"ltoguard: error: no such command '{argv[0]}'; did you mean '{hint}'?\n"


@pytest.mark.usefixtures("empty_path")
@pytest.mark.parametrize("argv", [["xyzzy"], ["./stauts"], ["/no/such/stauts", "-vV"]])
def test_anything_else_missing_is_a_program_that_cannot_run(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 127
    assert capsys.readouterr().err == (
        f"ltoguard: error: cannot run {argv[0]}: No such file or directory\n"
    )


@pytest.mark.usefixtures("empty_path")
def test_a_missing_inner_wrapper_is_not_taken_for_a_typo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LTOGUARD_WRAP", "stauts")
    assert cli.main(["rustc", "-vV"]) == 127
    assert (
        capsys.readouterr().err == "ltoguard: error: cannot run stauts: No such file or directory\n"
    )


def test_a_program_on_path_wins_over_the_hint(tmp_path: Path) -> None:
    # A real program whose name is close to a subcommand is run, exit status unchanged.
    prog = os.path.join(str(tmp_path), "stauts")
    with open(prog, "w") as f:
        f.write('#!/bin/sh\necho "ran $*"\nexit 7\n')
    os.chmod(prog, 0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    env.pop("LTOGUARD_WRAP", None)
    env["LTOGUARD_MODE"] = "off"
    r = subprocess.run(
        [sys.executable, "-m", "ltoguard", "stauts", "-vV"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (r.returncode, r.stdout, r.stderr) == (7, "ran -vV\n", "")


def test_the_typo_from_the_command_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ltoguard", "stauts"],
        env={**os.environ, "PATH": "/nonexistent", "LTOGUARD_MODE": "off"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (2, TYPO)


@pytest.mark.usefixtures("empty_path")
def test_a_program_that_cannot_be_executed_gets_one_line_and_127(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_executable = tmp_path / "rustc"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    assert cli.main([str(not_executable), "-vV"]) == 127
    err = capsys.readouterr().err
    assert err.startswith(f"ltoguard: error: cannot run {not_executable}:") and err.count("\n") == 1
