"""scripts/gen_generic.py: deterministic output, valid manifests, and bins that build."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import cargo_env, load_script


@pytest.fixture
def gen() -> ModuleType:
    return load_script("gen_generic")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "target" not in p.relative_to(root).parts
    }


def test_same_arguments_write_the_same_bytes(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", bins=2, algos=5, types=2)
    gen.generate(tmp_path / "b", bins=2, algos=5, types=2)
    a = snapshot(tmp_path / "a")
    assert a == snapshot(tmp_path / "b")
    assert {"libs/graphlib/src/lib.rs", "bins/app01/src/types.rs", "Cargo.toml"} <= set(a)


def test_regenerating_leaves_unchanged_files_alone(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, bins=1, algos=2, types=1)
    lib = tmp_path / "libs/graphlib/src/lib.rs"
    before = lib.stat().st_mtime_ns
    gen.generate(tmp_path, bins=1, algos=2, types=1)
    assert lib.stat().st_mtime_ns == before


def test_algos_grow_the_library_and_types_the_bins(gen: ModuleType) -> None:
    assert len(gen.lib_rs(40)) > 3 * len(gen.lib_rs(8))
    assert gen.lib_rs(8).count("pub fn algo_") == 8
    # every algorithm is generic: the library alone compiles none of them
    assert all(
        line.startswith("pub fn algo_") and "<N: Node, E: Edge>" in line
        for line in gen.lib_rs(8).splitlines()
        if line.startswith("pub fn algo_")
    )
    main = gen.main_rs("app00", 3)
    assert len(re.findall(r"run_all::<types::Node\d+, types::Edge\d+>", main)) == 3
    assert gen.types_rs("app00", 3).count("impl graphlib::Node for") == 3


def test_later_bins_instantiate_up_to_twice_as_many_types(gen: ModuleType) -> None:
    assert gen.bin_types(1, 4) == [4]
    assert gen.bin_types(3, 2) == [2, 3, 4]
    assert gen.bin_types(4, 3) == [3, 4, 5, 6]


def test_the_release_profile(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "p", bins=1, algos=1, types=1)
    gen.generate(tmp_path / "d", bins=1, algos=1, types=1, debug=True, codegen_units=1)
    plain = (tmp_path / "p/Cargo.toml").read_text().split("[profile.release]\n", 1)[1]
    debug = (tmp_path / "d/Cargo.toml").read_text().split("[profile.release]\n", 1)[1]
    assert plain == 'lto = "fat"\n'
    assert debug.splitlines() == ['lto = "fat"', "codegen-units = 1", "debug = true"]


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_cargo_reads_the_manifests(gen: ModuleType, tmp_path: Path) -> None:
    # `cargo metadata` parses every manifest and resolves the path dependencies,
    # without compiling anything.
    gen.generate(tmp_path, bins=3, algos=2, types=1, debug=True)
    proc = subprocess.run(
        ["cargo", "metadata", "--offline", "--format-version", "1", "--no-deps"],
        cwd=tmp_path,
        env=cargo_env(tmp_path / "target"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(set(re.findall(r'"name":"(app\d\d|graphlib)"', proc.stdout)))
    assert names == ["app00", "app01", "app02", "graphlib"]


def test_cli_rejects_nothing_to_build(
    gen: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        gen.main([str(tmp_path), "--algos", "0"])
    assert exc.value.code == 2
    assert "at least one" in capsys.readouterr().err
    assert gen.main([str(tmp_path), "--bins", "2", "--debug"]) == 0
    assert "debug = true" in (tmp_path / "Cargo.toml").read_text()


@pytest.mark.cargo
@pytest.mark.timeout(600)
def test_the_workspace_builds_warning_free_and_bins_print_checksums(
    gen: ModuleType, tmp_path: Path
) -> None:
    gen.generate(tmp_path, bins=2, algos=3, types=1)
    proc = subprocess.run(
        ["cargo", "build", "--release", "-j2"],
        cwd=tmp_path,
        env=cargo_env(tmp_path / "target"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warning" not in proc.stderr, proc.stderr[-4000:]
    sums = set()
    for name in ("app00", "app01"):
        exe = tmp_path / "target" / "release" / name
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=True).stdout
        again = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=True)
        assert re.fullmatch(rf"{name} checksum [0-9a-f]{{16}}\n", out)
        assert again.stdout == out
        sums.add(out.split()[-1])
    assert len(sums) == 2
