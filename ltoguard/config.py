"""Settings and where each came from.

Highest first: the environment (``LTOGUARD_*``); the workspace's ``Cargo.toml``
(``[workspace.metadata.ltoguard]``, or ``[package.metadata.ltoguard]`` for a
single-package project); the user file ``$XDG_CONFIG_HOME/ltoguard/config.toml``
(default ``~/.config/ltoguard/config.toml``); the defaults. Per-crate overrides
(``crates.NAME``) come from the files only; a workspace entry for a crate replaces
the user file's entry for it as a whole.

Every value is checked, including ones a higher source overrides: a bad value in
a file is an error that names the file, the key, the value and what is accepted,
never a silently ignored setting. A key this ltoguard does not know is a warning
naming the file and the key: a newer ltoguard (a teammate's) may know it. An empty
or blank ``LTOGUARD_*`` variable counts as unset, except ``LTOGUARD_WRAP=""`` which
means "no inner wrapper" (like cargo's empty ``RUSTC_WRAPPER``).

Not imported on the pass-through path, except by the one call per build that checks
the settings (buildcheck.py): cli.py searches the files' bytes (configfiles.scan,
verdict.files_may_change) and loads settings here only when they can matter.

Layers: configvalues.py (what each key accepts, the checks), configfiles.py (where
the files are, the byte search), manifest.py (finding and parsing the files), this
module (merging them), verdict.py (the decision).
"""

from __future__ import annotations

import os

from ltoguard.configfiles import normalise_crate, user_config_path
from ltoguard.configvalues import (
    DEFAULTS,
    ENV_VARS,
    KEYS,
    CrateOverride,
    MemorySetting,
    Setting,
    SettingsError,
    apply_file,
    env_setting,
    parse_memory_setting,
    toml_value,
)
from ltoguard.manifest import (
    find_workspace_manifest,
    metadata_table,
    read_toml,
    toml_error_type,
    toml_loads,
)
from ltoguard.verdict import Verdict
from ltoguard.verdict import decide as _decide

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# The public face of the settings: commands import these from here.
__all__ = [
    "CrateOverride",
    "Setting",
    "Settings",
    "SettingsError",
    "Verdict",
    "decide",
    "find_workspace_manifest",
    "load",
    "toml_error_type",
    "toml_loads",
    "toml_value",
]


class Settings:
    """The settings in force; ``origins[key]`` says where each value came from."""

    def __init__(
        self,
        values: Mapping[str, Setting],
        crates: Mapping[str, CrateOverride] | None = None,
        manifest: str | None = None,
        user_file: str | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        merged = {key: Setting(DEFAULTS[key], "default") for key in KEYS}
        merged.update(values)
        self.settings = merged
        v = {key: s.value for key, s in merged.items()}
        assert isinstance(v["mode"], str) and isinstance(v["linker"], str)
        assert v["slots"] is None or isinstance(v["slots"], int)
        assert isinstance(v["lend"], bool)
        assert all(v[k] is None or isinstance(v[k], str) for k in ("memory", "wrap", "dir"))
        self.mode: str = v["mode"]
        self.slots: int | None = v["slots"]
        self.memory: str | None = v["memory"]  # type: ignore[assignment]
        # Parsed once here; every memory reading of the guarded job takes this.
        self.memory_parsed: MemorySetting | None = parse_memory_setting(self.memory)
        self.wrap: str | None = v["wrap"]  # type: ignore[assignment]
        self.dir: str | None = v["dir"]  # type: ignore[assignment]
        self.linker: str = v["linker"]
        self.lend: bool = v["lend"]
        self.crates: dict[str, CrateOverride] = dict(crates or {})
        self.origins: dict[str, str] = {key: s.origin for key, s in merged.items()}
        self.manifest = manifest  # the workspace Cargo.toml consulted, if any
        self.user_file = user_file  # the user config path looked at (it may not exist)
        self.warnings = list(warnings)  # unknown keys, each naming its file

    def warn(self) -> None:
        """Say the warnings, each on one line: past cargo's message cache when a
        guarded job says them (messages.note), on stderr otherwise."""
        from ltoguard.messages import channel, warning

        # Where cargo stores the line and shows it again while the crate is fresh, it
        # says when it was true.
        when = " (as of this crate's last compile)" if channel().replayed else ""
        for w in self.warnings:
            warning(w + when)

    def crate(self, name: str | None) -> CrateOverride | None:
        """The override for a crate, by the name cargo passes (``--crate-name``)."""
        if not name:
            return None
        return self.crates.get(normalise_crate(name))

    def items(self) -> list[tuple[str, Setting]]:
        return [(key, self.settings[key]) for key in KEYS]


def load(
    environ: Mapping[str, str] | None = None, cwd: str | None = None, *, warn: bool = True
) -> Settings:
    """The settings in force for a rustc run in ``cwd`` (default: the current
    directory) with ``environ`` (default: os.environ). Raises SettingsError.

    ``warn``: say the warnings (unknown keys) now, for every command that reads the
    settings; the guarded path says them only for a job it guards."""
    env = os.environ if environ is None else environ
    here = cwd or os.getcwd()
    values: dict[str, Setting] = {}
    crates: dict[str, CrateOverride] = {}
    warnings: list[str] = []

    user = user_config_path(env)
    data = read_toml(user, missing_ok=True)
    if data is not None:
        apply_file(data, user, "", "crates", values, crates, warnings)

    # cargo runs rustc in the workspace root but sets CARGO_MANIFEST_DIR to the
    # package's directory: that is where cargo itself starts its root search.
    start = env.get("CARGO_MANIFEST_DIR") or here
    if not os.path.isabs(start):
        start = os.path.join(here, start)
    manifest = find_workspace_manifest(start)
    if manifest is not None:
        data = read_toml(manifest)
        assert data is not None
        table, dotted = metadata_table(data, manifest)
        if table is not None:
            crates_table = f"{dotted}.crates"
            apply_file(table, manifest, f"[{dotted}] ", crates_table, values, crates, warnings)

    for key in KEYS:
        raw = env.get(ENV_VARS[key])
        if raw is None or (not raw.strip() and key != "wrap"):
            continue
        values[key] = env_setting(key, raw)

    settings = Settings(values, crates, manifest, user, warnings)
    if warn:
        settings.warn()
    return settings


def decide(argv: Sequence[str], settings: Settings) -> Verdict:
    """The verdict for one invocation under these settings (verdict.decide's rules)."""
    return _decide(argv, settings.mode, settings.origins["mode"], settings.crate)
