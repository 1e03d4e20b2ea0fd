"""scripts/gen_workspace.py: deterministic output, and the workspace builds and runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import BuildResult, cargo_env


@pytest.fixture
def gen(gen_workspace: ModuleType) -> ModuleType:
    return gen_workspace


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "target" not in p.relative_to(root).parts
    }


def test_same_arguments_write_the_same_bytes(gen: ModuleType, tmp_path: Path) -> None:
    kwargs = {"bins": 2, "libs": 3, "size": "small", "tests": True, "examples": True}
    gen.generate(tmp_path / "a", **kwargs)
    gen.generate(tmp_path / "b", **kwargs)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a == b
    assert "bins/app01/tests/cli.rs" in a
    assert "libs/lib02/examples/lib02_show.rs" in a


def test_regenerating_leaves_unchanged_files_alone(gen: ModuleType, tmp_path: Path) -> None:
    # cargo rebuilds on mtime: a rerun with the same args must not touch files.
    gen.generate(tmp_path, bins=1, libs=2)
    main_rs = tmp_path / "bins/app00/src/main.rs"
    before = main_rs.stat().st_mtime_ns
    gen.generate(tmp_path, bins=1, libs=2)
    assert main_rs.stat().st_mtime_ns == before


def test_size_changes_the_code(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "s", bins=1, libs=2, size="small")
    gen.generate(tmp_path / "m", bins=1, libs=2, size="medium")
    small = (tmp_path / "s/libs/lib01/src/units.rs").read_text()
    medium = (tmp_path / "m/libs/lib01/src/units.rs").read_text()
    assert len(medium) > 5 * len(small)


@pytest.mark.parametrize(
    ("lto", "line"),
    [
        ("fat", 'lto = "fat"'),
        ("thin", 'lto = "thin"'),
        ("true", "lto = true"),
        ("false", "lto = false"),
        ("off", 'lto = "off"'),
    ],
)
def test_release_profile(gen: ModuleType, tmp_path: Path, lto: str, line: str) -> None:
    gen.generate(tmp_path, bins=1, libs=1, lto=lto, codegen_units=1, debug=True)
    text = (tmp_path / "Cargo.toml").read_text()
    profile = text.split("[profile.release]\n", 1)[1].splitlines()
    assert profile == [line, "codegen-units = 1", "debug = true"]


@pytest.mark.parametrize(
    ("args", "line"),
    [([], None), (["--debug"], "debug = true"), (["--debug", "1"], "debug = 1"),
     (["--debug", "line-tables-only"], 'debug = "line-tables-only"'),
     (["--debug", "false"], None)],
)  # fmt: skip
def test_debug_takes_a_level(
    gen: ModuleType, tmp_path: Path, args: list[str], line: str | None
) -> None:
    assert gen.main([str(tmp_path), "--bins", "1", "--libs", "1", *args]) == 0
    profile = (tmp_path / "Cargo.toml").read_text().split("[profile.release]\n", 1)[1]
    debug = [x for x in profile.splitlines() if x.startswith("debug")]
    assert debug == ([line] if line else [])


def test_profile_defaults_add_nothing(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, bins=1, libs=1)
    text = (tmp_path / "Cargo.toml").read_text()
    assert text.split("[profile.release]\n", 1)[1] == 'lto = "fat"\n'


def test_every_bin_uses_the_core_and_several_libs(gen: ModuleType) -> None:
    libs, bin_libs, per_lib = gen.plan(bins=4, libs=6, units=gen.SIZES["medium"])
    assert libs == [f"lib{i:02d}" for i in range(6)]
    assert sorted(bin_libs) == ["app00", "app01", "app02", "app03"]
    for deps in bin_libs.values():
        assert deps[0] == "lib00"
        assert len(deps) == 4
    # Every lib ends up in some binary.
    assert {d for deps in bin_libs.values() for d in deps} == set(libs)
    # The LTO volume of one binary does not depend on how many libs exist.
    assert per_lib * 4 + gen.BIN_OWN_UNITS >= gen.SIZES["medium"]


def test_cli_rejects_a_bad_size(
    gen: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        gen.main([str(tmp_path), "--size", "huge"])
    assert exc.value.code == 2
    assert "--size" in capsys.readouterr().err


def test_cli_writes_the_workspace(gen: ModuleType, tmp_path: Path) -> None:
    assert gen.main([str(tmp_path), "--bins", "2", "--libs", "2", "--lto", "thin"]) == 0
    text = (tmp_path / "Cargo.toml").read_text()
    assert '"bins/app01"' in text and '"libs/lib01"' in text and 'lto = "thin"' in text


@pytest.mark.cargo
@pytest.mark.timeout(600)
def test_small_workspace_builds_and_bins_print_checksums(built_workspace: BuildResult) -> None:
    assert built_workspace.returncode == 0, built_workspace.stderr[-4000:]
    # Generated code must compile warning-free, so ltoguard's e2e tests can
    # assert on cargo's stderr.
    assert "warning" not in built_workspace.stderr, built_workspace.stderr[-4000:]
    ws = built_workspace.workspace
    outputs = {}
    for name in ws.bins:
        exe = ws.bin_path(name, built_workspace.target_dir)
        first = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=True)
        again = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=True)
        assert re.fullmatch(rf"{name} checksum [0-9a-f]{{16}}\n", first.stdout)
        assert again.stdout == first.stdout
        outputs[name] = first.stdout.split()[-1]
    assert len(set(outputs.values())) == len(outputs)


@pytest.mark.cargo
@pytest.mark.timeout(300)
def test_generated_tests_and_examples_compile(gen: ModuleType, tmp_path: Path) -> None:
    # `cargo check` type-checks every target without the slow LTO codegen.
    gen.generate(tmp_path, bins=1, libs=2, size="small", tests=True, examples=True)
    proc = subprocess.run(
        ["cargo", "check", "--release", "--all-targets", "-j2"],
        cwd=tmp_path,
        env=cargo_env(tmp_path / "target"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warning" not in proc.stderr, proc.stderr[-4000:]
    # The test and example targets were really checked, not skipped.
    release = tmp_path / "target" / "release"
    deps = [p.name for d in ("deps", "examples") for p in (release / d).iterdir()]
    for target in ("lib00_show", "lib01_show", "smoke", "cli"):
        assert any(name.startswith(f"lib{target}-") for name in deps), (target, deps)
