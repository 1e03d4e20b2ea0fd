"""`ltoguard explain`: text and --json output, errors, argv forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltoguard.commands import explain

REPO = Path(__file__).resolve().parent.parent

GUARDED = [
    "/usr/bin/rustc",
    "--crate-name",
    "app",
    "--edition=2021",
    "src/main.rs",
    "--crate-type",
    "bin",
    "--emit=dep-info,link",
    "-C",
    "opt-level=3",
    "-C",
    "lto=fat",
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
]
PASSED = ["--crate-name", "lib01", "--crate-type", "lib", "src/lib.rs", "-C", "linker-plugin-lto"]

SCHEMA_KEYS = {"argv", "decision", "reason", "classifier", "crate", "override", "settings", "files"}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    (root / "app").mkdir(parents=True)
    (root / "Cargo.toml").write_text(
        '[workspace]\nmembers = ["app"]\n\n[workspace.metadata.ltoguard]\nslots = 2\n'
    )
    (root / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\n')
    monkeypatch.chdir(root)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("LTOGUARD_MODE", "LTOGUARD_SLOTS", "LTOGUARD_MEMORY", "LTOGUARD_WRAP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("LTOGUARD_DIR", raising=False)
    monkeypatch.delenv("LTOGUARD_LINKER", raising=False)
    monkeypatch.delenv("CARGO_MANIFEST_DIR", raising=False)
    return root


def test_text_guarded(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain.main(GUARDED) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "decision: GUARD \u2014 bin with -C lto=fat links a final artifact"
    assert out[1] == "job:      crate app (bin, lto=fat)"
    assert out[2] == "settings:"
    rows = {line.split()[0]: line for line in out[3:10]}
    assert list(rows) == ["mode", "slots", "memory", "wrap", "dir", "linker", "lend"]
    assert rows["mode"].split("#")[1].strip() == "default"
    assert rows["slots"].split("=")[1].split("#")[0].strip() == "2"
    assert rows["slots"].endswith(f"# {ws / 'Cargo.toml'} [workspace.metadata.ltoguard] slots")
    assert f"workspace = {ws / 'Cargo.toml'}" in out[11]


def test_text_passed_with_override(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "Cargo.toml").write_text(
        '[workspace]\nmembers = ["app"]\n\n'
        '[workspace.metadata.ltoguard.crates.lib01]\nguard = "never"\nmemory = "3G"\n'
    )
    assert explain.main(PASSED) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "decision: PASS \u2014 lib with -C linker-plugin-lto only emits bitcode"
    assert out[1] == "job:      crate lib01 (lib, linker-plugin-lto)"
    assert out[2] == (
        f'override: guard = "never", memory = 3 GiB  '
        f"# {ws / 'Cargo.toml'} [workspace.metadata.ltoguard.crates.lib01]"
    )


def test_json_schema(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain.main(["--json", *GUARDED]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == SCHEMA_KEYS
    assert doc["decision"] == "guard"
    assert doc["argv"] == GUARDED  # rustc's own --json is not taken for ltoguard's
    assert doc["classifier"] == {
        "decision": "guard",
        "reason": "bin with -C lto=fat links a final artifact",
        "mode": "lto",
    }
    assert doc["crate"]["name"] == "app" and doc["crate"]["types"] == ["bin"]
    assert doc["crate"]["lto"] == "fat" and doc["crate"]["test"] is False
    assert doc["override"] is None
    assert list(doc["settings"]) == ["mode", "slots", "memory", "wrap", "dir", "linker", "lend"]
    assert doc["settings"]["slots"] == {
        "value": 2,
        "origin": f"{ws / 'Cargo.toml'} [workspace.metadata.ltoguard] slots",
    }
    assert doc["settings"]["memory"] == {"value": None, "origin": "default"}
    assert doc["files"]["workspace"] == str(ws / "Cargo.toml")
    assert doc["files"]["user_exists"] is False


def test_json_passed_and_prepended_rustc(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain.main(["--json", *PASSED]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "pass"
    assert doc["argv"] == ["rustc", *PASSED]
    assert doc["crate"]["name"] == "lib01"


def test_pasted_cargo_verbose_line(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `cargo build -v` prints the environment, then the command, as one line.
    line = (
        f"CARGO_MANIFEST_DIR={ws / 'app'} LTOGUARD_MODE=link /x/rustc --crate-name app "
        "--crate-type bin src/main.rs -C opt-level=3"
    )
    assert explain.main(["--json", line]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["argv"][0] == "/x/rustc"
    assert doc["decision"] == "guard"
    assert doc["settings"]["mode"] == {"value": "link", "origin": "environment LTOGUARD_MODE"}


def test_config_error_exits_2(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "Cargo.toml").write_text('[workspace]\n[workspace.metadata.ltoguard]\nslots = "x"\n')
    assert explain.main(GUARDED) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"ltoguard: error: {ws / 'Cargo.toml'} [workspace.metadata.ltoguard] slots"
    )


def test_no_args(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain.main([]) == 2
    assert capsys.readouterr().err.startswith("ltoguard: error: no rustc arguments")


@pytest.mark.timeout(60)
def test_subprocess(ws: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ltoguard", "explain", "--json", *GUARDED],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["decision"] == "guard"
    assert doc["settings"]["slots"]["value"] == 2
