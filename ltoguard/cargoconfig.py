"""Where cargo reads its configuration, and which rustc wrappers it will run.

cargo's config files, highest precedence first: ``.cargo/config.toml`` (or the
old ``.cargo/config``) in the current directory and each parent, then
``$CARGO_HOME/config.toml``; the environment (``RUSTC_WRAPPER``,
``CARGO_BUILD_RUSTC_WRAPPER`` and the workspace variants) wins over all of them,
and an empty value there turns the wrapper off. Used by ``ltoguard doctor``.
"""

from __future__ import annotations

import os

from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

WRAPPER_KEYS = ("rustc-wrapper", "rustc-workspace-wrapper")
ENV_FOR = {
    "rustc-wrapper": ("RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"),
    "rustc-workspace-wrapper": ("RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER"),
}


@struct
class Registered:
    """One wrapper setting cargo will use: its key, value and where it came from."""

    key: str
    value: str
    origin: str
    base: str  # directory a relative path is resolved against


def cargo_config_files(cwd: str, environ: Mapping[str, str]) -> list[str]:
    """cargo's config files, highest precedence first: ``.cargo/config.toml`` (or the
    old ``.cargo/config``) in cwd and each parent, then ``$CARGO_HOME/config.toml``."""
    from ltoguard.configfiles import ancestors

    found: list[str] = []
    home = environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    home_dir = os.path.abspath(home)
    for d in ancestors(cwd):
        if os.path.abspath(os.path.join(d, ".cargo")) == home_dir:
            continue  # $CARGO_HOME is read last, below
        for name in ("config.toml", "config"):
            path = os.path.join(d, ".cargo", name)
            if os.path.isfile(path):
                found.append(path)
                break
    for name in ("config.toml", "config"):
        path = os.path.join(home_dir, name)
        if os.path.isfile(path):
            found.append(path)
            break
    return found


def read_toml_quietly(path: str) -> tuple[dict[str, Any], str]:
    """A TOML file's contents and "", or {} and the one-line reason it cannot be read."""
    from ltoguard.config import SettingsError
    from ltoguard.manifest import read_toml

    try:
        data = read_toml(path)
    except SettingsError as exc:
        return {}, str(exc)
    return data or {}, ""


def registered_wrappers(cwd: str, environ: Mapping[str, str]) -> tuple[list[Registered], list[str]]:
    """The wrapper settings in force (at most one per key) and config files that
    could not be read."""
    out: list[Registered] = []
    problems: list[str] = []
    files = cargo_config_files(cwd, environ)
    parsed = []
    for path in files:
        data, err = read_toml_quietly(path)
        if err:
            problems.append(err)
        parsed.append((path, data))
    for key in WRAPPER_KEYS:
        env_hit = next(((v, environ[v]) for v in ENV_FOR[key] if v in environ), None)
        if env_hit is not None:
            if env_hit[1]:  # an empty value disables the wrapper
                out.append(Registered(key, env_hit[1], f"environment {env_hit[0]}", cwd))
            continue
        for path, data in parsed:
            build = data.get("build")
            value = build.get(key) if isinstance(build, dict) else None
            if isinstance(value, str) and value:
                # cargo resolves a relative path with a slash against the directory
                # holding .cargo/; a bare name is looked up on PATH.
                base = os.path.dirname(os.path.dirname(path))
                out.append(Registered(key, value, path, base))
                break
    return out, problems
