"""Settings from the environment (LTOGUARD_*). Config files come in issue #5."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

MODES = ("lto", "link", "off")


class SettingsError(Exception):
    """A setting has a bad value; the message names the setting, the value and what is accepted."""


def mode(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get("LTOGUARD_MODE", "").strip().lower() or "lto"
    if value not in MODES:
        raise SettingsError(
            f"LTOGUARD_MODE={env.get('LTOGUARD_MODE')!r} is not valid; accepted: lto (default), link, off"
        )
    return value


def slots(environ: Mapping[str, str] | None = None) -> int | None:
    """The slot limit, or None for `auto` (memory decides)."""
    env = os.environ if environ is None else environ
    raw = env.get("LTOGUARD_SLOTS", "").strip()
    if raw == "" or raw.lower() == "auto":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1 or n > 1024:
        raise SettingsError(
            f"LTOGUARD_SLOTS={raw!r} is not valid; accepted: auto or a whole number from 1 to 1024"
        )
    return n


def state_dir(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("LTOGUARD_DIR") or None
