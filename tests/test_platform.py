"""Platforms: Linux has everything; macOS runs without cgroups,
PR_SET_PDEATHSIG or /proc; anything else is refused with one line at start.
Simulated in-process by patching what ltoguard looks at."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from ltoguard import cli, messages, process


def test_windows_is_refused_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(sys, "platform", "win32")
    for argv in (["rustc", "-vV"], ["status"], ["--version"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith("ltoguard: error: ltoguard needs Linux or macOS")
        assert "win32" in err and "rustc-workspace-wrapper" in err


def test_macos_spawns_without_prctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PR_SET_PDEATHSIG there: the child is started without the Linux pre-exec hook
    (the slot's flock, inherited by the child, still keeps an orphan's slot held)."""
    seen: list[object] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("preexec_fn"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(sys, "platform", "darwin")
    proc = process.spawn([sys.executable, "-c", "pass"])
    assert proc.wait(timeout=30) == 0
    monkeypatch.setattr(sys, "platform", "linux")
    proc = process.spawn([sys.executable, "-c", "pass"])
    assert proc.wait(timeout=30) == 0
    assert seen[0] is None and callable(seen[1])


@pytest.mark.parametrize("in_cargo_env", [False, True])
def test_without_proc_lines_are_worded_for_replay(
    monkeypatch: pytest.MonkeyPatch, in_cargo_env: bool
) -> None:
    """No /proc (macOS): ltoguard cannot write past cargo; it tells from cargo's
    environment that cargo will replay its lines, and words them for that."""
    real_open = open
    real_isdir = os.path.isdir

    def no_proc(path: object, *args: object, **kwargs: object) -> object:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr(
        os.path, "isdir", lambda p: False if str(p).startswith("/proc") else real_isdir(p)
    )
    monkeypatch.delenv("CARGO_PKG_NAME", raising=False)
    if in_cargo_env:
        monkeypatch.setenv("CARGO_PKG_NAME", "app")
    ch = messages.Channel.detect()
    assert ch.fd == -1
    assert ch.under_cargo is in_cargo_env
    assert ch.replayed is in_cargo_env


def test_outside_cargo_nothing_is_replayed() -> None:
    ch = messages.Channel.detect(os.getpid())  # our parent here is pytest, not cargo
    assert (ch.fd, ch.under_cargo, ch.replayed) == (-1, False, False)
    assert not ch.write("x")  # nothing to write past: the caller uses stderr


def test_a_blank_mode_passes_through_like_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """The pass-through path and the settings agree: blank is unset (not an error
    that would fail every rustc call, probes included)."""
    import subprocess

    monkeypatch.setenv("LTOGUARD_MODE", " ")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "ltoguard", "/bin/echo", "-vV"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "-vV\n", "")
