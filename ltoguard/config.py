"""Settings and where each came from (issue #5).

Highest first: the environment (``LTOGUARD_*``); the workspace's ``Cargo.toml``
(``[workspace.metadata.ltoguard]``, or ``[package.metadata.ltoguard]`` for a
single-package project); the user file ``$XDG_CONFIG_HOME/ltoguard/config.toml``
(default ``~/.config/ltoguard/config.toml``); the defaults. Per-crate overrides
(``crates.NAME``) come from the files only; a workspace entry for a crate replaces
the user file's entry for it as a whole.

Every value is checked, including ones a higher source overrides: a typo in a
file is an error that names the file, the key, the value and what is accepted,
never a silently ignored setting. An empty ``LTOGUARD_*`` variable counts as
unset, except ``LTOGUARD_WRAP=""`` which means "no inner wrapper" (like cargo's
empty ``RUSTC_WRAPPER``).

The pass-through path does not import this module: its quick "could a file
matter?" checks live in configfiles.py. TOML, json and the size parser are
imported only when settings are loaded.
"""

from __future__ import annotations

import os

from ltoguard.classify import MODES
from ltoguard.configfiles import (
    MAX_FILE,
    ancestors,
    may_override,
    may_set,
    normalise_crate,
    read_bytes,
    scan,
    user_config_path,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from ltoguard.classify import Decision

GUARD_VALUES = ("always", "never", "auto")
KEYS = ("mode", "slots", "memory", "wrap", "dir", "linker")
ENV_VARS = {key: f"LTOGUARD_{key.upper()}" for key in KEYS}
DEFAULTS: dict[str, object] = {
    "mode": "lto",
    "slots": None,
    "memory": None,
    "wrap": None,
    "dir": None,
    "linker": "cc",
}
ACCEPTED = {
    "mode": "lto (default), link or off",
    "slots": "auto or a whole number from 1 to 1024",
    "memory": (
        "auto (detect) or a size: 12G, 1500M, 512MiB, 2.5GB or plain bytes, optionally"
        " negative for 'all but' (-3G); units are binary"
    ),
    "wrap": 'a program name or path such as "sccache"; "" for none',
    "dir": "a directory path",
    "linker": 'a program name or path such as "cc" or "clang"',
}
CRATE_KEYS = ("memory", "guard")
CRATE_ACCEPTED = {
    "memory": "a positive size such as 3G, 1500M or plain bytes (the crate's peak memory)",
    "guard": "always, never or auto (default)",
}
WORKSPACE_TABLE = "workspace.metadata.ltoguard"
PACKAGE_TABLE = "package.metadata.ltoguard"


class SettingsError(Exception):
    """A bad setting; the one-line message names the file or variable, key, value and what is accepted."""


class Setting(tuple):  # type: ignore[type-arg]
    """``(value, origin)``: a NamedTuple built by hand, because importing typing
    costs ~3 ms and this module is imported on the pass-through path."""

    __slots__ = ()

    def __new__(cls, value: object, origin: str) -> Setting:
        return tuple.__new__(cls, (value, origin))

    @property
    def value(self) -> object:
        return self[0]

    @property
    def origin(self) -> str:
        origin: str = self[1]
        return origin

    def __repr__(self) -> str:
        return f"Setting(value={self[0]!r}, origin={self[1]!r})"


class CrateOverride:
    """Per-crate settings: ``memory`` is a peak estimate in bytes (None: learn it),
    ``guard`` is "always", "never" or "auto"."""

    __slots__ = ("name", "memory", "guard", "origin")

    def __init__(self, name: str, memory: int | None, guard: str, origin: str) -> None:
        self.name = name
        self.memory = memory
        self.guard = guard
        self.origin = origin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CrateOverride):
            return NotImplemented
        return (self.name, self.memory, self.guard, self.origin) == (
            other.name,
            other.memory,
            other.guard,
            other.origin,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"CrateOverride(name={self.name!r}, memory={self.memory!r}, "
            f"guard={self.guard!r}, origin={self.origin!r})"
        )


class Settings:
    """The settings in force; ``origins[key]`` says where each value came from."""

    def __init__(
        self,
        values: Mapping[str, Setting],
        crates: Mapping[str, CrateOverride] | None = None,
        manifest: str | None = None,
        user_file: str | None = None,
    ) -> None:
        merged = {key: Setting(DEFAULTS[key], "default") for key in KEYS}
        merged.update(values)
        self.settings = merged
        mode, slots, memory = merged["mode"].value, merged["slots"].value, merged["memory"].value
        wrap, dir_, linker = merged["wrap"].value, merged["dir"].value, merged["linker"].value
        assert isinstance(mode, str) and isinstance(linker, str)
        assert slots is None or isinstance(slots, int)
        assert all(v is None or isinstance(v, str) for v in (memory, wrap, dir_))
        self.mode: str = mode
        self.slots: int | None = slots
        self.memory: str | None = memory  # type: ignore[assignment]
        self.wrap: str | None = wrap  # type: ignore[assignment]
        self.dir: str | None = dir_  # type: ignore[assignment]
        self.linker: str = linker
        self.crates: dict[str, CrateOverride] = dict(crates or {})
        self.origins: dict[str, str] = {key: s.origin for key, s in merged.items()}
        self.manifest = manifest  # the workspace Cargo.toml consulted, if any
        self.user_file = user_file  # the user config path looked at (it may not exist)

    def crate(self, name: str | None) -> CrateOverride | None:
        """The override for a crate, by the name cargo passes (``--crate-name``)."""
        if not name:
            return None
        return self.crates.get(normalise_crate(name))

    def items(self) -> list[tuple[str, Setting]]:
        return [(key, self.settings[key]) for key in KEYS]


def crate_may_have_override(
    crate_name: str | None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> bool:
    """False when no config file can hold an override for this crate; True means
    "call load() and look". Reads a few small files; parses nothing."""
    return may_override(scan(environ, cwd), crate_name)


def files_may_set(
    key: str, environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> bool:
    """False when no config file can set ``key`` (e.g. "mode"); True means "call load()"."""
    return may_set(scan(environ, cwd), key)


# --------------------------------------------------------------------------
# reading files


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


# --------------------------------------------------------------------------
# checking values


class _Invalid(Exception):
    pass


def toml_value(value: object) -> str:
    """A value the way it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def _check_size(text: str) -> int:
    from ltoguard.memory import SIZE_EXAMPLES, parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        # Keep only parse_size's diagnosis ("unknown unit 'q'"): the message
        # states the value and the accepted forms itself.
        msg = str(exc).replace(SIZE_EXAMPLES, "").rstrip(" ;:")
        raise _Invalid(msg.split(": ", 1)[1] if ": " in msg else "") from None


def _check(key: str, value: object, from_env: bool, base_dir: str | None) -> object:
    """The checked value of one setting, or _Invalid."""
    if from_env:
        assert isinstance(value, str)
        if key == "mode":
            value = value.strip().lower()
        elif key in ("slots", "memory"):
            value = value.strip()
            if value.lower() == "auto":
                return None
            if key == "slots":
                try:
                    value = int(value)
                except ValueError:
                    raise _Invalid() from None
    if key == "mode":
        if value not in MODES:
            raise _Invalid()
        return value
    if key == "slots":
        if value == "auto":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise _Invalid()
        return value
    if key == "memory":
        if value == "auto":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value != 0:
            return str(value)
        if not isinstance(value, str):
            raise _Invalid()
        _check_size(value)
        return value.strip()
    if not isinstance(value, str):
        raise _Invalid()
    if key == "wrap":
        return value or None
    if not value.strip():
        raise _Invalid()
    if key == "dir":
        value = os.path.expanduser(value)
        if base_dir is not None:
            # Relative to the file that says it, so every rustc of a build
            # (each in its own cwd) agrees on one state directory.
            value = os.path.normpath(os.path.join(base_dir, value))
    return value


def _bad(where: str, value: object, accepted: str, detail: str = "") -> SettingsError:
    why = f" ({detail})" if detail else ""
    return SettingsError(f"{where} = {toml_value(value)} is not valid{why}; accepted: {accepted}")


def _unknown(where: str, key: str, value: object, accepted: Sequence[str]) -> SettingsError:
    import difflib

    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return SettingsError(
        f"{where}{key} = {toml_value(value)}: unknown key{hint}; accepted keys: {', '.join(accepted)}"
    )


def _apply_file(
    table: Mapping[str, object],
    path: str,
    prefix: str,
    crates_table: str,
    values: dict[str, Setting],
    crates: dict[str, CrateOverride],
) -> None:
    """Check one file's ltoguard table and record its settings.

    ``prefix`` is how a key is located in the file ("" or "[workspace.metadata.ltoguard] ");
    ``crates_table`` the dotted name of its crates table, for messages.
    """
    base_dir = os.path.dirname(path)
    for key, value in table.items():
        where = f"{path} {prefix}{key}"
        if key == "crates":
            if not isinstance(value, dict):
                raise _bad(
                    where, value, "a table of crate tables: [crates.NAME] with memory and guard"
                )
            crates.update(_crates(value, path, crates_table))
            continue
        if key not in KEYS:
            raise _unknown(f"{path} {prefix}", key, value, (*KEYS, "crates"))
        try:
            checked = _check(key, value, False, base_dir)
        except _Invalid as exc:
            raise _bad(where, value, ACCEPTED[key], str(exc)) from None
        values[key] = Setting(checked, where)


def _crates(table: Mapping[str, object], path: str, dotted: str) -> dict[str, CrateOverride]:
    found: dict[str, CrateOverride] = {}
    spelled: dict[str, str] = {}
    for name, entry in table.items():
        origin = f"{path} [{dotted}.{name}]"
        if not isinstance(entry, dict):
            raise _bad(f"{path} [{dotted}] {name}", entry, "a table with memory and guard keys")
        memory: int | None = None
        guard = "auto"
        for key, value in entry.items():
            where = f"{origin} {key}"
            if key not in CRATE_KEYS:
                raise _unknown(f"{origin} ", key, value, CRATE_KEYS)
            if key == "guard":
                if value not in GUARD_VALUES:
                    raise _bad(where, value, CRATE_ACCEPTED[key])
                assert isinstance(value, str)
                guard = value
            else:
                try:
                    if isinstance(value, bool) or not isinstance(value, (int, str)):
                        raise _Invalid()
                    memory = value if isinstance(value, int) else _check_size(value)
                    if memory <= 0:
                        raise _Invalid("an estimate must be positive")
                except _Invalid as exc:
                    raise _bad(where, value, CRATE_ACCEPTED[key], str(exc)) from None
        key_name = normalise_crate(name)
        if key_name in spelled:
            raise SettingsError(
                f"{path}: [{dotted}.{spelled[key_name]}] and [{dotted}.{name}] name the same "
                f"crate ({key_name}); keep one"
            )
        spelled[key_name] = name
        found[key_name] = CrateOverride(key_name, memory, guard, origin)
    return found


def _metadata_table(
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
        raise _bad(f"{path} [{parent}] ltoguard", table, "a table of ltoguard settings")
    return table, dotted


def load(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
    """The settings in force for a rustc run in ``cwd`` (default: the current
    directory) with ``environ`` (default: os.environ). Raises SettingsError."""
    env = os.environ if environ is None else environ
    here = cwd or os.getcwd()
    values: dict[str, Setting] = {}
    crates: dict[str, CrateOverride] = {}

    user = user_config_path(env)
    data = read_toml(user, missing_ok=True)
    if data is not None:
        _apply_file(data, user, "", "crates", values, crates)

    # cargo runs rustc in the workspace root but sets CARGO_MANIFEST_DIR to the
    # package's directory: that is where cargo itself starts its root search.
    start = env.get("CARGO_MANIFEST_DIR") or here
    if not os.path.isabs(start):
        start = os.path.join(here, start)
    manifest = find_workspace_manifest(start)
    if manifest is not None:
        data = read_toml(manifest)
        assert data is not None
        table, dotted = _metadata_table(data, manifest)
        if table is not None:
            _apply_file(table, manifest, f"[{dotted}] ", f"{dotted}.crates", values, crates)

    for key in KEYS:
        var = ENV_VARS[key]
        raw = env.get(var)
        if raw is None or (raw == "" and key != "wrap"):
            continue
        try:
            checked = _check(key, raw, True, None)
        except _Invalid as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise SettingsError(
                f"{var}={raw!r} is not valid{detail}; accepted: {ACCEPTED[key]}"
            ) from None
        values[key] = Setting(checked, f"environment {var}")

    return Settings(values, crates, manifest, user)


# --------------------------------------------------------------------------
# the decision with overrides applied


class Verdict:
    """Whether to guard one invocation: the classifier's decision (in ``mode``)
    adjusted by the configured mode and the crate's ``guard`` override."""

    __slots__ = ("guarded", "reason", "decision", "override", "mode")

    def __init__(
        self,
        guarded: bool,
        reason: str,
        decision: Decision,
        override: CrateOverride | None,
        mode: str,
    ) -> None:
        self.guarded = guarded
        self.reason = reason
        self.decision = decision  # the classifier's, for the crate facts
        self.override = override
        self.mode = mode  # the mode ``decision`` was classified in


def decide(argv: Sequence[str], settings: Settings) -> Verdict:
    """``mode = "off"`` passes everything (the off switch wins over overrides);
    ``guard = "never"`` passes the crate; ``guard = "always"`` guards every final
    link of the crate, with or without LTO (what mode "link" does for all crates)."""
    from ltoguard.classify import classify

    if settings.mode == "off":
        # Classified anyway so that explain can still show the crate.
        d = classify(argv, "lto")
        reason = f"mode = off ({settings.origins['mode']})"
        return Verdict(False, reason, d, settings.crate(d.crate_name), "lto")
    d = classify(argv, settings.mode)
    override = settings.crate(d.crate_name)
    if override is None or override.guard == "auto":
        return Verdict(d.guarded, d.reason, d, override, settings.mode)
    said = f'guard = "{override.guard}" in {override.origin}'
    if override.guard == "never":
        if not d.guarded:
            return Verdict(False, d.reason, d, override, settings.mode)
        return Verdict(False, f"{said} (otherwise: {d.reason})", d, override, settings.mode)
    if d.guarded:
        return Verdict(True, d.reason, d, override, settings.mode)
    linked = classify(argv, "link")
    if not linked.guarded:
        reason = f"{d.reason} ({said}, but this is no final link)"
        return Verdict(False, reason, d, override, settings.mode)
    what = "test harness" if d.is_test else ",".join(d.crate_types) or "bin"
    return Verdict(True, f"{what} links a final artifact and {said}", d, override, settings.mode)
