"""scripts/gen_realcrates.py: the workspace's TOML and its offline registry (no cargo build)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import load_script

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REGISTRY = Path("/usr/share/cargo/registry")


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_script("gen_realcrates")


def generate(gen: ModuleType, out: Path, **kwargs: Any) -> None:
    if not REGISTRY.is_dir():
        pytest.skip(f"no Debian crate registry at {REGISTRY} (apt-get install librust-*-dev)")
    try:
        gen.generate(out, **kwargs)
    except gen.MissingCrate as exc:
        pytest.skip(str(exc))


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = tomllib.loads(path.read_text())
    return result


def test_workspace_parses_and_uses_the_registry_offline(gen: ModuleType, tmp_path: Path) -> None:
    generate(gen, tmp_path, bins=4, seed=3, lto="thin", debug=True)
    config = load(tmp_path / ".cargo/config.toml")
    assert config["source"]["crates-io"] == {"replace-with": "debian"}
    assert Path(config["source"]["debian"]["directory"]) == REGISTRY.resolve()
    assert config["net"]["offline"] is True

    ws = load(tmp_path / "Cargo.toml")
    assert ws["profile"]["release"] == {
        "opt-level": 3,
        "lto": "thin",
        "codegen-units": 1,
        "debug": True,
    }
    members = ws["workspace"]["members"]
    assert members == [f"bins/app{b:02d}" for b in range(4)]
    held = {p.name.rsplit("-", 1)[0] for p in REGISTRY.iterdir()}
    counts = []
    for member in members:
        deps = load(tmp_path / member / "Cargo.toml")["dependencies"]
        assert set(deps) <= held
        counts.append(len(deps))
        main_rs = (tmp_path / member / "src/main.rs").read_text()
        for crate in deps:
            if crate != "serde":  # comes with serde_json
                assert (tmp_path / member / f"src/c_{crate.replace('-', '_')}.rs").is_file()
                assert f"mod c_{crate.replace('-', '_')};" in main_rs
    # Crate sets differ in size, so the LTO peaks do too.
    assert len(set(counts)) > 1


def test_small_mode_uses_one_to_three_cheap_crates(gen: ModuleType) -> None:
    cheap = {c.name for c in gen.CRATES if c.cheap}
    plan = gen.plan(60, seed=1, small=True)
    assert len(plan) == 60
    assert all(1 <= len(cs) <= 3 and set(cs) <= cheap for cs in plan.values())


def test_same_arguments_write_the_same_bytes(gen: ModuleType, tmp_path: Path) -> None:
    generate(gen, tmp_path / "a", bins=3, seed=5)
    generate(gen, tmp_path / "b", bins=3, seed=5)
    generate(gen, tmp_path / "c", bins=3, seed=6)

    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")


def test_a_missing_crate_names_the_package(gen: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "reg" / "regex-1.7.1").mkdir(parents=True)
    with pytest.raises(gen.MissingCrate, match="apt-get install -y librust-clap-dev"):
        gen.resolve_versions(tmp_path / "reg", ["clap", "regex"])
    assert gen.resolve_versions(tmp_path / "reg", ["regex"]) == {"regex": "1.7"}
    assert "librust-clap-derive-dev" in gen.APT_PACKAGES


def test_path_crates_are_copied_into_the_workspace_and_patch_the_registry(
    gen: ModuleType, tmp_path: Path
) -> None:
    """--path-crates: the bins' direct crates as path dependencies, the way a
    workspace that vendors or forks its crates has them (cargo runs rustc for them
    at the workspace root, as for its own crates: the cold estimate's `generic`
    input counts their metadata)."""
    generate(gen, tmp_path, bins=2, seed=0, path_crates=True)
    ws = load(tmp_path / "Cargo.toml")
    direct = set()
    for member in ws["workspace"]["members"]:
        direct |= set(load(tmp_path / member / "Cargo.toml")["dependencies"])
    assert ws["patch"]["crates-io"] == {n: {"path": f"crates/{n}"} for n in direct}
    for n in direct:
        manifest = load(tmp_path / "crates" / n / "Cargo.toml")
        assert manifest["package"]["name"] == n
        assert "dev-dependencies" not in manifest and "test" not in manifest
        assert not (tmp_path / "crates" / n / ".cargo-checksum.json").exists()
    config = load(tmp_path / ".cargo/config.toml")
    assert config["build"]["rustflags"] == ["--cap-lints=allow"]
    # cargo resolves it offline, every patch used (an unused one is only warned of)
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no cargo on PATH")
    done = subprocess.run(
        [cargo, "metadata", "--offline", "--format-version", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "was not used" not in done.stderr, done.stderr[-2000:]
    packages = json.loads(done.stdout)["packages"]
    local = {p["name"] for p in packages if p["source"] is None}
    assert direct <= local


def test_without_path_crates_nothing_is_patched(gen: ModuleType, tmp_path: Path) -> None:
    generate(gen, tmp_path, bins=2, seed=0)
    assert "patch" not in load(tmp_path / "Cargo.toml")
    assert "build" not in load(tmp_path / ".cargo/config.toml")
    assert not (tmp_path / "crates").exists()
