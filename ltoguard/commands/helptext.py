"""``ltoguard --help`` and ``ltoguard help settings``: what an installed user has
instead of the README (every setting with its default, where it can be set)."""

from __future__ import annotations

import sys

from ltoguard.configvalues import ACCEPTED, DEFAULTS, ENV_VARS, HELP, KEYS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = """\
usage: ltoguard PROGRAM [ARGS...]         as cargo's rustc wrapper (cargo calls it so)
       ltoguard init [--dry-run]          register ltoguard in this workspace's .cargo/config.toml
       ltoguard init --remove [--dry-run] take that line out again
       ltoguard doctor [--json]           check the set-up: wrapper path, settings, LTO, memory
       ltoguard explain RUSTC-ARGS...     what ltoguard would do with one invocation, and why
       ltoguard status [--json] [--watch] running and waiting guarded jobs, memory
       ltoguard learned [--json]          the per-job memory ltoguard has measured
       ltoguard report [--out FILE]       an HTML timeline of the last build
       ltoguard run [--slots N] -- CMD    run any heavy command under the same gate
       ltoguard help settings             every setting: default, accepted values, meaning
       ltoguard --version | --help

ltoguard runs the memory-heavy LTO compiles of a cargo build a few at a time and
passes every other rustc invocation straight through. Set it up in a workspace:

    ltoguard init        # writes build.rustc-workspace-wrapper = "/abs/path/to/ltoguard"
    ltoguard doctor      # checks it

Settings (environment, or [workspace.metadata.ltoguard] in Cargo.toml, or
~/.config/ltoguard/config.toml; `ltoguard help settings` for the full table):
{settings}"""


def default_text(key: str, short: bool = False) -> str:
    if key == "dir":
        return "per user" if short else "$XDG_RUNTIME_DIR/ltoguard, else $TMPDIR/ltoguard-UID"
    value = DEFAULTS[key]
    if value is None:
        return "none" if key == "wrap" else "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def usage() -> str:
    width = max(len(ENV_VARS[k]) for k in KEYS)
    dwidth = max(len(default_text(k, short=True)) for k in KEYS)
    rows = [f"    {'variable':<{width}}  {'default':<{dwidth}}  meaning"]
    rows += [
        f"    {ENV_VARS[k]:<{width}}  {default_text(k, short=True):<{dwidth}}  {HELP[k]}"
        for k in KEYS
    ]
    return USAGE.format(settings="\n".join(rows) + "\n")


def settings_table() -> str:
    lines = [
        "ltoguard settings, highest first: the environment, the workspace's Cargo.toml",
        "([workspace.metadata.ltoguard], or [package.metadata.ltoguard]), the user file",
        "$XDG_CONFIG_HOME/ltoguard/config.toml (~/.config/ltoguard/config.toml), defaults.",
        "`ltoguard explain` shows each value in force and where it came from. A bad value",
        "is an error; a key this ltoguard does not know is a warning naming the file and",
        "the key (a newer ltoguard may know it). Under cargo, the first compile of a build",
        "that sees the settings says what is wrong with them, once for the build.",
        "",
    ]
    for key in KEYS:
        lines.append(f"{key}  (environment {ENV_VARS[key]}; default {default_text(key)})")
        lines.append(f"    {HELP[key]}")
        lines.append(f"    accepted: {ACCEPTED[key]}")
    lines += [
        "",
        "Per crate, in the files only (crate names as in Cargo.toml):",
        "    [workspace.metadata.ltoguard.crates.NAME]",
        '    memory = "6G"       # its peak estimate, instead of learning it',
        '    guard = "always"    # always | never | auto (default)',
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args in ([], ["usage"]):
        sys.stdout.write(usage())
        return 0
    if args == ["settings"]:
        sys.stdout.write(settings_table())
        return 0
    sys.stderr.write(
        f"ltoguard: error: no help on {' '.join(args)!r}; try `ltoguard help settings`\n"
    )
    return 2
