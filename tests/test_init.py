"""`ltoguard init`: create, merge without losing a byte, idempotence, dry run, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltoguard.commands import init as initcmd
from ltoguard.config import toml_loads

REPO = Path(__file__).resolve().parent.parent
WRAP = "/opt/bin/ltoguard"

EXISTING = """\
# Team settings: keep these comments!
[alias]   # shortcuts
b = "build --release"

[build]  # build stuff
jobs = 2 # two cores here
target-dir = 'out'

[target.x86_64-unknown-linux-gnu]
linker = "clang"
rustflags = [
    "-C", "link-arg=-fuse-ld=lld",   # faster links
]
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    (root / "app" / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[workspace]\nmembers = ["app"]\n')
    (root / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\n')
    monkeypatch.chdir(root / "app" / "src")  # init finds the workspace root from below
    monkeypatch.delenv("RUSTC_WORKSPACE_WRAPPER", raising=False)
    monkeypatch.delenv("RUSTC_WRAPPER", raising=False)
    return root


def init(*args: str) -> int:
    return initcmd.main(["--wrapper-path", WRAP, *args])


def test_fresh_workspace(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert init() == 0
    path = ws / ".cargo" / "config.toml"
    assert path.read_text() == f'[build]\nrustc-workspace-wrapper = "{WRAP}"\n'
    out = capsys.readouterr().out
    assert out.startswith(f'created {path} with [build] rustc-workspace-wrapper = "{WRAP}"\n')


def test_merge_keeps_everything_and_is_idempotent(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text(EXISTING)
    assert init() == 0
    after = path.read_text()
    header = "[build]  # build stuff\n"
    line = f'rustc-workspace-wrapper = "{WRAP}"\n'
    assert after == EXISTING.replace(header, header + line)  # only the insertion
    assert toml_loads(after)["build"] == {
        "jobs": 2,
        "target-dir": "out",
        "rustc-workspace-wrapper": WRAP,
    }
    assert capsys.readouterr().out.startswith(
        f'added rustc-workspace-wrapper = "{WRAP}" to [build] in {path}'
    )

    stat = path.stat()
    assert init() == 0
    assert path.read_text() == after
    assert path.stat().st_mtime_ns == stat.st_mtime_ns  # not even rewritten
    assert (
        capsys.readouterr().out
        == f'already set: [build] rustc-workspace-wrapper = "{WRAP}" in {path}\n'
    )


def test_update_other_value(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    before = EXISTING.replace("jobs = 2", 'jobs = 2\nrustc-workspace-wrapper = "sccache"   # old')
    path.write_text(before)
    assert init() == 0
    assert path.read_text() == before.replace('"sccache"', f'"{WRAP}"')
    out = capsys.readouterr().out
    assert out.startswith(
        f'updated [build] rustc-workspace-wrapper in {path}: "sccache" -> "{WRAP}"'
    )


def test_no_build_table_appends_one(ws: Path) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text('[alias]\nb = "build"')  # no final newline
    assert initcmd.main(["--wrapper-path", WRAP, "--rustc-wrapper"]) == 0
    assert path.read_text() == f'[alias]\nb = "build"\n\n[build]\nrustc-wrapper = "{WRAP}"\n'


def test_crlf_and_dotted_keys(ws: Path) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_bytes(b"build.jobs = 2\r\n[env]\r\nX = '1'\r\n")
    assert init() == 0
    assert path.read_bytes() == (
        f"build.jobs = 2\r\nbuild.rustc-workspace-wrapper = \"{WRAP}\"\r\n[env]\r\nX = '1'\r\n".encode()
    )


def test_legacy_config_file_is_used(ws: Path) -> None:
    legacy = ws / ".cargo" / "config"
    legacy.parent.mkdir()
    legacy.write_text("[build]\njobs = 1\n")
    assert init() == 0
    assert legacy.read_text() == f'[build]\nrustc-workspace-wrapper = "{WRAP}"\njobs = 1\n'
    assert not (ws / ".cargo" / "config.toml").exists()


def test_dry_run_changes_nothing(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert init("--dry-run") == 0
    assert not (ws / ".cargo").exists()
    out = capsys.readouterr().out
    assert out.startswith("dry run, nothing written; would have created")
    assert f'+rustc-workspace-wrapper = "{WRAP}"' in out

    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text(EXISTING)
    assert init("--dry-run") == 0
    assert path.read_text() == EXISTING
    out = capsys.readouterr().out
    assert "would have added" in out
    assert f"--- {path}\n+++ {path}\n" in out
    assert f'+rustc-workspace-wrapper = "{WRAP}"\n' in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[build\njobs = 1\n", "is not valid TOML"),
        ("build = { jobs = 2 }\n", "without rewriting it"),
        ('build = "x"\n', "is not a table"),
    ],
)
def test_refusals(ws: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text(text)
    assert init() == 2
    assert path.read_text() == text
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"ltoguard: error: {path}") or captured.err.startswith(
        "ltoguard: error: cannot add"
    )
    assert message in captured.err


def test_outside_a_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert init() == 2
    assert capsys.readouterr().err.startswith(f"ltoguard: error: no Cargo.toml in {tmp_path}")


def test_warns_when_both_keys_are_ltoguard(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_text('[build]\nrustc-wrapper = "/usr/bin/ltoguard"\n')
    assert init() == 0
    assert "is ltoguard too" in capsys.readouterr().err


def init_in_a_child(ws: Path, path: str) -> subprocess.CompletedProcess[str]:
    """`python -m ltoguard init` in ws/app with PATH `path`; it must succeed."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=path)
    env.pop("RUSTC_WORKSPACE_WRAPPER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ltoguard", "init"],
        cwd=ws / "app",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.timeout(60)
def test_subprocess_default_path(ws: Path, tmp_path: Path) -> None:
    # A fake `ltoguard` on PATH: init records its absolute path.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ltoguard"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for _ in range(2):
        proc = init_in_a_child(ws, f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert proc.stdout.startswith("already set:")
    assert (ws / ".cargo" / "config.toml").read_text() == (
        f'[build]\nrustc-workspace-wrapper = "{fake}"\n'
    )


@pytest.mark.timeout(60)
def test_default_path_is_never_a_bare_name(ws: Path, tmp_path: Path) -> None:
    """Not on PATH (a fresh install.sh user): `python -m ltoguard init` writes the
    console script beside its Python, an absolute path cargo can run anywhere."""
    init_in_a_child(ws, "/nonexistent")
    beside = Path(sys.executable).parent / "ltoguard"
    assert (ws / ".cargo" / "config.toml").read_text() == (
        f'[build]\nrustc-workspace-wrapper = "{beside}"\n'
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            b"[build]\r\njobs = 1\r\n",
            f'[build]\r\nrustc-workspace-wrapper = "{WRAP}"\r\njobs = 1\r\n',
        ),
        (
            b"[build]\r\nrustc-workspace-wrapper = 'x' # c\r\n",
            f'[build]\r\nrustc-workspace-wrapper = "{WRAP}" # c\r\n',
        ),
    ],
)
def test_crlf_kept(ws: Path, before: bytes, after: str) -> None:
    path = ws / ".cargo" / "config.toml"
    path.parent.mkdir()
    path.write_bytes(before)
    assert init() == 0
    assert path.read_bytes() == after.encode()
