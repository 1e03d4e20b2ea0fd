"""The one place a guard/pass verdict comes from.

The classifier (classify.py) says what an invocation is; this module applies the
settings that can turn that around: the mode (``lto``, ``link``, ``off``) and a
crate's ``guard = "always" | "never"`` override. Both paths use it:

- the pass-through path (cli.py, for every crate cargo compiles) reads the mode
  from the environment and, when a settings file mentions ltoguard, asks
  `files_may_change` whether it could change a "pass"; only then are the settings
  loaded (config.py);
- the guarded path and ``ltoguard explain`` call `decide` with loaded settings.

Imports only ``os`` and the classifier, like the rest of the pass-through path.
"""

from __future__ import annotations

from ltoguard.classify import MODES, Decision, classify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Protocol

    class CrateOverride(Protocol):
        """What the rules read of a per-crate override (configvalues.CrateOverride);
        a protocol, so this module depends on no settings module."""

        name: str
        memory: int | None
        guard: str
        origin: str


MODE_ACCEPTED = "lto (default), link or off"
MODE_VAR = "LTOGUARD_MODE"
WRAP_VAR = "LTOGUARD_WRAP"


def check_mode(value: str) -> str | None:
    """The mode a value names (case and spaces ignored), or None if it names none."""
    mode = value.strip().lower()
    return mode if mode in MODES else None


def mode_error(raw: str) -> str:
    """The one-line message for a bad LTOGUARD_MODE (config.py words file values alike)."""
    return f"{MODE_VAR}={raw!r} is not valid; accepted: {MODE_ACCEPTED}"


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


def decide(
    argv: Sequence[str],
    mode: str,
    mode_origin: str,
    override_for: Callable[[str | None], CrateOverride | None],
) -> Verdict:
    """``mode = "off"`` passes everything (the off switch wins over overrides);
    ``guard = "never"`` passes the crate; ``guard = "always"`` guards every final
    link of the crate, with or without LTO (what mode "link" does for all crates)."""
    if mode == "off":
        # Classified anyway so that explain can still show the crate.
        d = classify(argv, "lto")
        return Verdict(False, f"mode = off ({mode_origin})", d, override_for(d.crate_name), "lto")
    d = classify(argv, mode)
    override = override_for(d.crate_name)
    if override is None or override.guard == "auto":
        return Verdict(d.guarded, d.reason, d, override, mode)
    said = f'guard = "{override.guard}" in {override.origin}'
    if override.guard == "never":
        if not d.guarded:
            return Verdict(False, d.reason, d, override, mode)
        return Verdict(False, f"{said} (otherwise: {d.reason})", d, override, mode)
    if d.guarded:
        return Verdict(True, d.reason, d, override, mode)
    if not classify(argv, "link").guarded:
        return Verdict(False, f"{d.reason} ({said}, but this is no final link)", d, override, mode)
    what = "test harness" if d.is_test else ",".join(d.crate_types) or "bin"
    return Verdict(True, f"{what} links a final artifact and {said}", d, override, mode)


def files_may_change(
    argv: Sequence[str],
    passed: Decision,
    mode: str,
    env: Mapping[str, str],
    texts: list[bytes],
) -> bool:
    """Could a settings file change this "pass" (classified in the environment's
    ``mode``), or name an inner wrapper? False means: exec the compiler now.

    Two cases, each found by a byte search of ``texts`` (configfiles.scan: the
    files read once, no TOML parse): an inner wrapper set in a file, or, for a
    final link, a file-set mode or a per-crate ``guard = "always"``.
    """
    from ltoguard.configfiles import may_override, may_set

    if not texts:
        return False
    if env.get(WRAP_VAR) is None and may_set(texts, "wrap"):
        return True
    if mode == "off" or not classify(argv, "link").guarded:
        return False
    # A blank LTOGUARD_MODE is unset (cli.py, config.py): a file's mode then counts.
    mode_from_env = bool(env.get(MODE_VAR, "").strip())
    return (not mode_from_env and may_set(texts, "mode")) or may_override(texts, passed.crate_name)
