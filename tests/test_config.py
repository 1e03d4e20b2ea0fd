"""Settings: precedence and origins, every error message, crate overrides, quick checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ltoguard import config, configfiles
from ltoguard.config import CrateOverride, Setting, Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent

BIN_LTO = ["rustc", "--crate-name", "my_app", "--crate-type", "bin", "src/main.rs", "-C", "lto=fat"]
BIN_PLAIN = ["rustc", "--crate-name", "my_app", "--crate-type", "bin", "src/main.rs"]
RLIB = ["rustc", "--crate-name", "my_app", "--crate-type", "lib", "src/lib.rs"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace root with one member `app` (package my-app); no ltoguard settings yet."""
    root = tmp_path / "ws"
    write(root / "Cargo.toml", '[workspace]\nmembers = ["app"]\n')
    write(root / "app" / "Cargo.toml", '[package]\nname = "my-app"\nversion = "0.1.0"\n')
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose user config dir is under tmp_path (file absent)."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}


def user_file(env: dict[str, str], text: str) -> Path:
    return write(Path(env["XDG_CONFIG_HOME"]) / "ltoguard" / "config.toml", text)


def ws_settings(ws: Path, text: str) -> None:
    write(ws / "Cargo.toml", '[workspace]\nmembers = ["app"]\n\n' + textwrap.dedent(text))


# --------------------------------------------------------------------------
# precedence and origins


def test_defaults(ws: Path, env: dict[str, str]) -> None:
    s = config.load(env, str(ws))
    assert (s.mode, s.slots, s.memory, s.wrap, s.dir, s.linker) == (
        "lto",
        None,
        None,
        None,
        None,
        "cc",
    )
    assert set(s.origins.values()) == {"default"}
    assert s.manifest == str(ws / "Cargo.toml")
    assert s.crates == {}


def test_precedence_env_over_workspace_over_user_over_default(
    ws: Path, env: dict[str, str]
) -> None:
    user = user_file(
        env,
        """
        mode = "link"
        slots = 4
        memory = "8G"
        linker = "clang"
        """,
    )
    ws_settings(
        ws,
        """
        [workspace.metadata.ltoguard]
        slots = 2
        memory = "-3G"
        """,
    )
    e = dict(env, LTOGUARD_MEMORY="12G", CARGO_MANIFEST_DIR=str(ws / "app"))
    s = config.load(e, "/")
    manifest = ws / "Cargo.toml"
    assert s.items() == [
        ("mode", Setting("link", f"{user} mode")),
        ("slots", Setting(2, f"{manifest} [workspace.metadata.ltoguard] slots")),
        ("memory", Setting("12G", "environment LTOGUARD_MEMORY")),
        ("wrap", Setting(None, "default")),
        ("dir", Setting(None, "default")),
        ("linker", Setting("clang", f"{user} linker")),
        ("lend", Setting(True, "default")),
    ]
    assert s.mode == "link" and s.slots == 2 and s.memory == "12G" and s.linker == "clang"
    assert s.origins["memory"] == "environment LTOGUARD_MEMORY"
    # each setting names its value and where it came from
    slots = s.items()[1][1]
    assert (slots.value, slots.origin) == (2, f"{manifest} [workspace.metadata.ltoguard] slots")


def test_package_metadata_for_single_package(tmp_path: Path, env: dict[str, str]) -> None:
    pkg = write(
        tmp_path / "solo" / "Cargo.toml",
        """
        [package]
        name = "solo"
        version = "0.1.0"

        [package.metadata.ltoguard]
        mode = "off"
        """,
    )
    s = config.load(env, str(tmp_path / "solo" / "src"))
    assert s.mode == "off"
    assert s.origins["mode"] == f"{pkg} [package.metadata.ltoguard] mode"


def test_env_values_and_empty_env(ws: Path, env: dict[str, str]) -> None:
    user_file(env, 'wrap = "sccache"\nslots = 3\n')
    e = dict(env, LTOGUARD_SLOTS="", LTOGUARD_WRAP="", LTOGUARD_MODE=" LINK ", LTOGUARD_DIR="/x/y")
    s = config.load(e, str(ws))
    assert s.slots == 3  # empty = unset
    assert s.wrap is None and s.origins["wrap"] == "environment LTOGUARD_WRAP"  # empty = none
    assert s.mode == "link"
    assert s.dir == "/x/y"
    assert config.load(dict(env, LTOGUARD_SLOTS="Auto"), str(ws)).slots is None
    assert config.load(dict(env, LTOGUARD_SLOTS="16"), str(ws)).slots == 16


def test_relative_dir_is_relative_to_its_file(ws: Path, env: dict[str, str]) -> None:
    ws_settings(ws, '[workspace.metadata.ltoguard]\ndir = "state"\n')
    assert config.load(env, str(ws / "app")).dir == str(ws / "state")


def test_workspace_root_found_like_cargo(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write(root / "Cargo.toml", '[workspace]\nmembers = ["a"]\nexclude = ["ex"]\n')
    write(root / "a" / "Cargo.toml", '[package]\nname = "a"\n')
    write(root / "ex" / "Cargo.toml", '[package]\nname = "ex"\n')
    write(root / "elsewhere" / "Cargo.toml", '[package]\nname = "e"\nworkspace = "../a-root"\n')
    write(root / "a-root" / "Cargo.toml", "[workspace]\n")
    assert config.find_workspace_manifest(str(root / "a" / "src")) == str(root / "Cargo.toml")
    assert config.find_workspace_manifest(str(root)) == str(root / "Cargo.toml")
    # excluded: its own root
    assert config.find_workspace_manifest(str(root / "ex")) == str(root / "ex" / "Cargo.toml")
    # package.workspace points elsewhere
    assert config.find_workspace_manifest(str(root / "elsewhere")) == str(
        root / "a-root" / "Cargo.toml"
    )
    assert config.find_workspace_manifest(str(tmp_path)) is None


# --------------------------------------------------------------------------
# per-crate overrides


def test_crate_overrides_normalised_and_replaced_by_workspace(
    ws: Path, env: dict[str, str]
) -> None:
    user = user_file(
        env,
        """
        [crates.my_app]
        guard = "never"
        [crates.other-crate]
        memory = "1500M"
        """,
    )
    ws_settings(
        ws,
        """
        [workspace.metadata.ltoguard.crates.my-app]
        memory = "3G"
        guard = "always"
        """,
    )
    s = config.load(env, str(ws))
    manifest = ws / "Cargo.toml"
    expected = CrateOverride(
        "my_app", 3 << 30, "always", f"{manifest} [workspace.metadata.ltoguard.crates.my-app]"
    )
    assert s.crate("my_app") == expected
    assert s.crate("my-app") == expected
    assert s.crate("other_crate") == CrateOverride(
        "other_crate", 1500 << 20, "auto", f"{user} [crates.other-crate]"
    )
    assert s.crate("nope") is None and s.crate(None) is None


def test_same_crate_spelled_twice_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    user = user_file(env, '[crates.a-b]\nguard = "never"\n[crates.a_b]\nguard = "always"\n')
    with pytest.raises(SettingsError) as e:
        config.load(env, str(tmp_path))
    assert (
        str(e.value) == f"{user}: [crates.a-b] and [crates.a_b] name the same crate (a_b); keep one"
    )


# --------------------------------------------------------------------------
# error messages: file, key, value, accepted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'slots = "many"\n',
            'slots = "many" is not valid; accepted: auto or a whole number from 1 to 1024',
        ),
        ("slots = 0\n", "slots = 0 is not valid; accepted: auto or a whole number from 1 to 1024"),
        (
            "slots = true\n",
            "slots = true is not valid; accepted: auto or a whole number from 1 to 1024",
        ),
        ('mode = "fast"\n', 'mode = "fast" is not valid; accepted: lto (default), link or off'),
        (
            'memory = "12Q"\n',
            "memory = \"12Q\" is not valid (unknown unit 'Q'); accepted: auto (detect) or a size",
        ),
        (
            'memory = "0"\n',
            'memory = "0" is not valid (must not be zero); accepted: auto (detect) or a size',
        ),
        ("memory = true\n", "memory = true is not valid; accepted: auto (detect) or a size"),
        ("wrap = 1\n", 'wrap = 1 is not valid; accepted: a program name or path such as "sccache"'),
        ('linker = ""\n', 'linker = "" is not valid; accepted: a program name or path'),
        ("dir = [1]\n", "dir = [1] is not valid; accepted: a directory path"),
        ("crates = 3\n", "crates = 3 is not valid; accepted: a table of crate tables"),
        (
            '[crates.x]\nguard = "sometimes"\n',
            '[crates.x] guard = "sometimes" is not valid; accepted: always, never or auto (default)',
        ),
        (
            '[crates.x]\nmemory = "-1G"\n',
            '[crates.x] memory = "-1G" is not valid (an estimate must be positive); accepted: a positive size',
        ),
    ],
)
def test_user_file_errors(env: dict[str, str], tmp_path: Path, text: str, message: str) -> None:
    path = user_file(env, text)
    with pytest.raises(SettingsError) as e:
        config.load(env, str(tmp_path))
    assert str(e.value).startswith(f"{path} {message}")
    assert "\n" not in str(e.value)


def test_workspace_errors_name_the_table(ws: Path, env: dict[str, str]) -> None:
    ws_settings(ws, '[workspace.metadata.ltoguard]\nmode = "fat"\n')
    with pytest.raises(SettingsError) as e:
        config.load(env, str(ws / "app"))
    assert str(e.value) == (
        f'{ws / "Cargo.toml"} [workspace.metadata.ltoguard] mode = "fat" is not valid; '
        "accepted: lto (default), link or off"
    )
    ws_settings(ws, '[workspace.metadata.ltoguard.crates.my-app]\nguard = "yes"\n')
    with pytest.raises(SettingsError) as e:
        config.load(env, str(ws / "app"))
    assert str(e.value).startswith(
        f'{ws / "Cargo.toml"} [workspace.metadata.ltoguard.crates.my-app] guard = "yes" is not valid'
    )


def test_invalid_toml_names_the_file(env: dict[str, str], tmp_path: Path) -> None:
    path = user_file(env, "slots = \n")
    with pytest.raises(SettingsError, match=rf"^{path}: invalid TOML: "):
        config.load(env, str(tmp_path))


def test_overridden_bad_value_still_an_error(env: dict[str, str], tmp_path: Path) -> None:
    # A typo must not hide behind a higher source that happens to set the key.
    user_file(env, 'mode = "lt"\n')
    with pytest.raises(SettingsError, match="mode"):
        config.load(dict(env, LTOGUARD_MODE="lto"), str(tmp_path))


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "LTOGUARD_SLOTS",
            "many",
            "LTOGUARD_SLOTS='many' is not valid; accepted: auto or a whole number from 1 to 1024",
        ),
        (
            "LTOGUARD_SLOTS",
            "2000",
            "LTOGUARD_SLOTS='2000' is not valid; accepted: auto or a whole number from 1 to 1024",
        ),
        (
            "LTOGUARD_MODE",
            "fast",
            "LTOGUARD_MODE='fast' is not valid; accepted: lto (default), link or off",
        ),
        (
            "LTOGUARD_MEMORY",
            "lots",
            "LTOGUARD_MEMORY='lots' is not valid; accepted: auto (detect) or a size",
        ),
        (
            "LTOGUARD_MEMORY",
            "3X",
            "LTOGUARD_MEMORY='3X' is not valid (unknown unit 'X'); accepted: auto",
        ),
    ],
)
def test_env_errors(
    env: dict[str, str], tmp_path: Path, var: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as e:
        config.load(dict(env, **{var: value}), str(tmp_path))
    assert str(e.value).startswith(message)


# --------------------------------------------------------------------------
# decide(): overrides on top of the classifier


def test_decide(ws: Path, env: dict[str, str]) -> None:
    s = config.load(env, str(ws))
    assert config.decide(BIN_LTO, s).guarded
    assert not config.decide(BIN_PLAIN, s).guarded

    ws_settings(ws, '[workspace.metadata.ltoguard.crates.my-app]\nguard = "always"\n')
    s = config.load(env, str(ws))
    v = config.decide(BIN_PLAIN, s)
    assert v.guarded and 'guard = "always"' in v.reason and v.override is not None
    assert not config.decide(RLIB, s).guarded  # no final link

    ws_settings(ws, '[workspace.metadata.ltoguard.crates.my_app]\nguard = "never"\n')
    v = config.decide(BIN_LTO, config.load(env, str(ws)))
    assert not v.guarded and v.reason.startswith('guard = "never" in ')
    assert v.decision.guarded  # the classifier alone would guard it

    v = config.decide(BIN_LTO, config.load(dict(env, LTOGUARD_MODE="off"), str(ws)))
    assert not v.guarded and v.reason == "mode = off (environment LTOGUARD_MODE)"
    assert v.decision.crate_name == "my_app"


# --------------------------------------------------------------------------
# quick checks for the pass-through path


def may_override(crate: str | None, env: dict[str, str], cwd: str) -> bool:
    return configfiles.may_override(configfiles.scan(env, cwd), crate)


def test_crate_may_have_override(ws: Path, env: dict[str, str], tmp_path: Path) -> None:
    app = str(ws / "app")
    assert not may_override("my_app", env, app)
    assert not may_override(None, env, app)
    ws_settings(ws, '[workspace.metadata.ltoguard.crates.my-app]\nguard = "always"\n')
    assert may_override("my_app", env, app)
    assert not may_override("other", env, app)
    # CARGO_MANIFEST_DIR wins over cwd, as cargo sets it for rustc
    assert may_override("my_app", dict(env, CARGO_MANIFEST_DIR=app), "/")
    assert not may_override("my_app", env, str(tmp_path))
    user_file(env, '[crates."other-crate"]\nguard = "never"\n')
    assert may_override("other_crate", env, str(tmp_path))
    # Settings that mention ltoguard but not the crate: no override possible
    ws_settings(ws, "[workspace.metadata.ltoguard]\nslots = 2\n")
    assert not may_override("my_app", env, app)
    assert configfiles.may_set(configfiles.scan(env, app), "slots")
    assert not configfiles.may_set(configfiles.scan(env, app), "mode")


def test_quick_check_imports_no_toml(ws: Path, env: dict[str, str]) -> None:
    ws_settings(ws, '[workspace.metadata.ltoguard.crates.my-app]\nguard = "always"\n')
    code = textwrap.dedent(
        f"""
        import os, sys
        from ltoguard import classify, configfiles, verdict
        os.chdir({str(ws / "app")!r})
        argv = {BIN_PLAIN!r}
        passed = classify.classify(argv, "lto")
        env = {env!r}
        found = verdict.files_may_change(argv, passed, "lto", env, configfiles.scan(env))
        heavy = [m for m in ("tomllib", "tomli", "ltoguard.memory", "ltoguard.sizes", "ltoguard.config") if m in sys.modules]
        print(passed.guarded, found, heavy)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False True []"


def test_settings_defaults_constructor() -> None:
    s = Settings({"slots": Setting(3, "test")})
    assert s.slots == 3 and s.mode == "lto" and s.origins["mode"] == "default"
    assert json.loads(json.dumps(s.origins))["slots"] == "test"


def test_a_blank_variable_counts_as_unset(env: dict[str, str], tmp_path: Path) -> None:
    s = config.load(dict(env, LTOGUARD_MODE="  ", LTOGUARD_SLOTS=" "), str(tmp_path))
    assert (s.mode, s.origins["mode"], s.slots) == ("lto", "default", None)


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("  ", True), ("lto", False)])
def test_a_file_mode_counts_unless_the_environment_sets_one(raw: str, expected: bool) -> None:
    """The pass-through's quick check agrees with config.load: a blank LTOGUARD_MODE
    is unset, so a `mode = "link"` in a file may still guard this non-LTO link."""
    from ltoguard import classify, verdict

    passed = classify.classify(BIN_PLAIN, "lto")
    texts = [b'[workspace.metadata.ltoguard]\nmode = "link"\n']
    env = {"LTOGUARD_MODE": raw} if raw else {}
    assert verdict.files_may_change(BIN_PLAIN, passed, "lto", env, texts) is expected
