"""Finding and reading the settings files: TOML parsing, and the workspace root the way cargo finds it."""

from __future__ import annotations

import os

from ltoguard.configfiles import MAX_FILE, ancestors, read_bytes
from ltoguard.configvalues import SettingsError, bad_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

WORKSPACE_TABLE = "workspace.metadata.ltoguard"
PACKAGE_TABLE = "package.metadata.ltoguard"


def _tomllib() -> Any:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    return tomllib


def toml_loads(text: str) -> dict[str, object]:
    result: dict[str, object] = _tomllib().loads(text)
    return result


def toml_error_type() -> type[Exception]:
    error: type[Exception] = _tomllib().TOMLDecodeError
    return error


def read_toml(path: str, *, missing_ok: bool = False) -> dict[str, object] | None:
    """Parse a TOML file; None if it is absent and ``missing_ok``. Raises SettingsError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise SettingsError(f"{path}: file not found") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE:
        raise SettingsError(f"{path}: larger than {MAX_FILE} bytes; not read")
    try:
        return toml_loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path}: not UTF-8 (byte {exc.start}); TOML files must be UTF-8"
        ) from None
    except toml_error_type() as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None


def _parse_quiet(path: str) -> dict[str, object] | None:
    try:
        return read_toml(path)
    except SettingsError:
        return None


def _path_under(path: str, prefix: str) -> bool:
    # Component-wise, like Rust's Path::starts_with.
    path, prefix = os.path.normpath(path), os.path.normpath(prefix)
    return path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep)


def _excluded(ws: Mapping[str, object], root: str, pkg_dir: str) -> bool:
    # cargo's WorkspaceRootConfig::is_excluded: under an `exclude` entry and not
    # under a `members` entry (members are compared as path prefixes, not globs).
    def listed(key: str) -> bool:
        entries = ws.get(key)
        if not isinstance(entries, list):
            return False
        return any(
            isinstance(e, str) and _path_under(pkg_dir, os.path.join(root, e)) for e in entries
        )

    return listed("exclude") and not listed("members")


def find_workspace_manifest(start: str) -> str | None:
    """The Cargo.toml whose settings apply to ``start``, found the way cargo finds
    a workspace root: the nearest Cargo.toml; if it is not a root itself, its
    ``package.workspace`` or the nearest ancestor ``[workspace]`` that does not
    exclude it; else the nearest Cargo.toml (a single-package project)."""
    nearest = None
    for d in ancestors(start):
        candidate = os.path.join(d, "Cargo.toml")
        if os.path.isfile(candidate):
            nearest = candidate
            break
    if nearest is None:
        return None
    data = _parse_quiet(nearest)
    if data is None or "workspace" in data:
        return nearest
    pkg_dir = os.path.dirname(nearest)
    package = data.get("package")
    if isinstance(package, dict) and isinstance(package.get("workspace"), str):
        root = os.path.normpath(os.path.join(pkg_dir, package["workspace"], "Cargo.toml"))
        return root if os.path.isfile(root) else nearest
    for d in ancestors(os.path.dirname(pkg_dir)):
        if d.endswith(os.path.join("target", "package")):
            break  # cargo's find_root_iter stops here (packaged sources)
        candidate = os.path.join(d, "Cargo.toml")
        raw = read_bytes(candidate)
        if raw is None or b"workspace" not in raw:
            continue
        anc = _parse_quiet(candidate)
        ws = anc.get("workspace") if anc is not None else None
        if isinstance(ws, dict) and not _excluded(ws, d, pkg_dir):
            return candidate
    return nearest


def metadata_table(
    data: Mapping[str, object], path: str
) -> tuple[Mapping[str, object] | None, str]:
    """The ltoguard table of a Cargo.toml and its dotted name."""
    found: list[tuple[object, str]] = []
    for top, dotted in (("workspace", WORKSPACE_TABLE), ("package", PACKAGE_TABLE)):
        section = data.get(top)
        meta = section.get("metadata") if isinstance(section, dict) else None
        if isinstance(meta, dict) and "ltoguard" in meta:
            found.append((meta["ltoguard"], dotted))
    if not found:
        return None, ""
    if len(found) > 1:
        raise SettingsError(
            f"{path}: both [{WORKSPACE_TABLE}] and [{PACKAGE_TABLE}] are set; keep one "
            f"([{WORKSPACE_TABLE}] for a workspace)"
        )
    table, dotted = found[0]
    if not isinstance(table, dict):
        parent = dotted.rsplit(".", 1)[0]
        raise bad_value(f"{path} [{parent}] ltoguard", table, "a table of ltoguard settings")
    return table, dotted
