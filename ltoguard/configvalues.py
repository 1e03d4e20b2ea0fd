"""What each setting accepts, and how a value from a file or the environment is checked.

The bottom layer of the settings: config.py loads and merges, manifest.py finds and
reads the files, and both use the types and checks here. Every message names the
file or variable, the key, the value and what is accepted.
"""

from __future__ import annotations

import os

from ltoguard.classify import MODES
from ltoguard.configfiles import normalise_crate
from ltoguard.structs import struct
from ltoguard.verdict import MODE_ACCEPTED, check_mode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

GUARD_VALUES = ("always", "never", "auto")
KEYS = ("mode", "slots", "memory", "wrap", "dir", "linker", "lend")
ENV_VARS = {key: f"LTOGUARD_{key.upper()}" for key in KEYS}  # LTOGUARD_MODE, ..., LTOGUARD_LEND
DEFAULTS: dict[str, object] = {
    "mode": "lto",
    "slots": None,
    "memory": None,
    "wrap": None,
    "dir": None,
    "linker": "cc",
    "lend": True,
}
ACCEPTED = {
    "mode": MODE_ACCEPTED,
    "slots": "auto or a whole number from 1 to 1024",
    "memory": (
        "auto (detect) or a size: 12G, 1500M, 512MiB, 2.5GB or plain bytes, optionally"
        " negative for 'all but' (-3G); units are binary"
    ),
    "wrap": 'a program name or path such as "sccache"; "" for none',
    "dir": "a directory path",
    "linker": 'a program name or path such as "cc" or "clang"',
    "lend": "true (default: a job that waits lends its jobserver token to cargo) or false; in the environment 1/yes/on/true or 0/no/off/false",
}
# What each setting does, one line, for `ltoguard explain` and `--help`.
HELP = {
    "mode": "what is guarded: lto links, every final link, or off (kill switch)",
    "slots": "at most N guarded jobs at once; auto: free memory and the CPUs decide",
    "memory": "memory for guarded jobs: 12G, or -3G for all but 3 GiB",
    "wrap": "an inner wrapper to run rustc through (sccache)",
    "dir": "state directory: locks, queue, learned peaks",
    "linker": "the real linker ltoguard-link runs",
    "lend": "a waiting job lends its jobserver token to cargo",
}
_TRUE_WORDS = ("1", "yes", "on", "true")
_FALSE_WORDS = ("0", "no", "off", "false")
CRATE_KEYS = ("memory", "guard")
CRATE_ACCEPTED = {
    "memory": "a positive size such as 3G, 1500M or plain bytes (the crate's peak memory)",
    "guard": "always, never or auto (default)",
}


class SettingsError(Exception):
    """A bad setting; the one-line message names the file or variable, key, value and what is accepted."""


@struct(frozen=True)
class Setting:
    """One setting in force and where it came from ("default", "environment VAR", a file)."""

    value: object
    origin: str


@struct
class CrateOverride:
    """Per-crate settings: ``memory`` is a peak estimate in bytes (None: learn it),
    ``guard`` is "always", "never" or "auto"."""

    name: str
    memory: int | None
    guard: str
    origin: str


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
    from ltoguard.sizes import SIZE_EXAMPLES, parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        # Keep only parse_size's diagnosis ("unknown unit 'q'"): the message
        # states the value and the accepted forms itself.
        msg = str(exc).replace(SIZE_EXAMPLES, "").rstrip(" ;:")
        raise _Invalid(msg.split(": ", 1)[1] if ": " in msg else "") from None


def _from_env(key: str, raw: str) -> object:
    """An environment value as the file form it stands for (env values are all strings)."""
    if key == "mode":
        mode = check_mode(raw)
        if mode is None:
            raise _Invalid()
        return mode
    if key in ("slots", "memory"):
        value = raw.strip()
        if value.lower() == "auto":
            return "auto"
        if key == "slots":
            try:
                return int(value)
            except ValueError:
                raise _Invalid() from None
        return value
    if key == "lend":
        word = raw.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise _Invalid()
    return raw


def _check_slots(value: object) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise _Invalid()
    return value


def _check_memory(value: object) -> str | None:
    if value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value != 0:
        return str(value)
    if not isinstance(value, str):
        raise _Invalid()
    _check_size(value)
    return value.strip()


def _check(key: str, value: object, from_env: bool, base_dir: str | None) -> object:
    """The checked value of one setting, or _Invalid."""
    if from_env:
        assert isinstance(value, str)
        value = _from_env(key, value)
    if key == "mode":
        if value not in MODES:
            raise _Invalid()
        return value
    if key == "slots":
        return _check_slots(value)
    if key == "memory":
        return _check_memory(value)
    if key == "lend":
        if not isinstance(value, bool):
            raise _Invalid()
        return value
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


def bad_value(where: str, value: object, accepted: str, detail: str = "") -> SettingsError:
    why = f" ({detail})" if detail else ""
    return SettingsError(f"{where} = {toml_value(value)} is not valid{why}; accepted: {accepted}")


def unknown_key(where: str, key: str, accepted: Sequence[str]) -> str:
    """The warning for a key this ltoguard does not know: a newer ltoguard may (a
    teammate's), so it is ignored, not refused."""
    import difflib

    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where}{key}: unknown key, ignored{hint}; this ltoguard knows: {', '.join(accepted)}"


def apply_file(
    table: Mapping[str, object],
    path: str,
    prefix: str,
    crates_table: str,
    values: dict[str, Setting],
    crates: dict[str, CrateOverride],
    warnings: list[str],
) -> None:
    """Check one file's ltoguard table and record its settings; an unknown key is
    appended to ``warnings``, a bad value of a known one raises SettingsError.

    ``prefix`` is how a key is located in the file ("" or "[workspace.metadata.ltoguard] ");
    ``crates_table`` the dotted name of its crates table, for messages.
    """
    base_dir = os.path.dirname(path)
    for key, value in table.items():
        where = f"{path} {prefix}{key}"
        if key == "crates":
            if not isinstance(value, dict):
                raise bad_value(
                    where, value, "a table of crate tables: [crates.NAME] with memory and guard"
                )
            crates.update(_crates(value, path, crates_table, warnings))
            continue
        if key not in KEYS:
            warnings.append(unknown_key(f"{path} {prefix}", key, (*KEYS, "crates")))
            continue
        try:
            checked = _check(key, value, False, base_dir)
        except _Invalid as exc:
            raise bad_value(where, value, ACCEPTED[key], str(exc)) from None
        values[key] = Setting(checked, where)


def _crates(
    table: Mapping[str, object], path: str, dotted: str, warnings: list[str]
) -> dict[str, CrateOverride]:
    found: dict[str, CrateOverride] = {}
    spelled: dict[str, str] = {}
    for name, entry in table.items():
        origin = f"{path} [{dotted}.{name}]"
        if not isinstance(entry, dict):
            raise bad_value(
                f"{path} [{dotted}] {name}", entry, "a table with memory and guard keys"
            )
        memory: int | None = None
        guard = "auto"
        for key, value in entry.items():
            where = f"{origin} {key}"
            if key not in CRATE_KEYS:
                warnings.append(unknown_key(f"{origin} ", key, CRATE_KEYS))
                continue
            if key == "guard":
                if value not in GUARD_VALUES:
                    raise bad_value(where, value, CRATE_ACCEPTED[key])
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
                    raise bad_value(where, value, CRATE_ACCEPTED[key], str(exc)) from None
        key_name = normalise_crate(name)
        if key_name in spelled:
            raise SettingsError(
                f"{path}: [{dotted}.{spelled[key_name]}] and [{dotted}.{name}] name the same "
                f"crate ({key_name}); keep one"
            )
        spelled[key_name] = name
        found[key_name] = CrateOverride(key_name, memory, guard, origin)
    return found


def env_setting(key: str, raw: str) -> Setting:
    """The setting an ``LTOGUARD_*`` variable gives; raises SettingsError."""
    var = ENV_VARS[key]
    try:
        checked = _check(key, raw, True, None)
    except _Invalid as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise SettingsError(
            f"{var}={raw!r} is not valid{detail}; accepted: {ACCEPTED[key]}"
        ) from None
    return Setting(checked, f"environment {var}")


@struct(frozen=True)
class MemorySetting:
    """``LTOGUARD_MEMORY`` parsed, once, when the settings are read."""

    text: str  # as the user wrote it, for the bound's description
    size: int  # bytes: a budget for the guarded jobs, or negative: all but that much


def parse_memory_setting(text: str | None) -> MemorySetting | None:
    """None for auto (or unset); raises ValueError naming LTOGUARD_MEMORY and the
    accepted forms on a bad setting."""
    from ltoguard.sizes import parse_size

    if text is None or text.strip().lower() in ("", "auto"):
        return None
    try:
        return MemorySetting(text, parse_size(text))
    except ValueError as exc:
        raise ValueError(f"LTOGUARD_MEMORY={text!r}: {exc}") from None
