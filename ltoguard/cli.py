"""Entry point. Kept tiny: for every non-LTO rustc call cargo makes, this module
decides and exec()s the real compiler, importing nothing beyond os/sys and the
classifier (issue #2: <= 12 ms overhead per call)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = """\
usage: ltoguard PROGRAM [ARGS...]        as cargo's rustc wrapper
       ltoguard explain RUSTC-ARGS...    what ltoguard would do with one invocation, and why
       ltoguard status [--json] [--watch] running and waiting guarded jobs, memory
       ltoguard learned [--json]         the per-job memory ltoguard has measured
       ltoguard report [--out FILE]      an HTML timeline of the last build
       ltoguard init [--dry-run]         add ltoguard to this workspace's .cargo/config.toml
       ltoguard run [--slots N] -- CMD   run any heavy command under the same gate
       ltoguard --version | --help

ltoguard runs the memory-heavy LTO compiles of a cargo build a few at a time and
passes every other rustc invocation straight through. Register it in
.cargo/config.toml:

    [build]
    rustc-workspace-wrapper = "ltoguard"

Settings (environment): LTOGUARD_MODE=lto|link|off, LTOGUARD_SLOTS=N|auto,
LTOGUARD_DIR=PATH. See the README for details.
"""


# Subcommand name -> (module, function). A PROGRAM from cargo is an absolute path
# (or a name such as clippy-driver), so these words do not collide with it.
SUBCOMMANDS = {
    "explain": ("ltoguard.commands.explain", "main"),
    "status": ("ltoguard.commands.status", "main"),
    "learned": ("ltoguard.commands.learned", "main"),
    "report": ("ltoguard.commands.report", "main"),
    "init": ("ltoguard.commands.init", "main"),
    "run": ("ltoguard.commands.run", "main"),
}


def _subcommand(name: str, args: Sequence[str]) -> int:
    import importlib

    module, func = SUBCOMMANDS[name]
    entry = getattr(importlib.import_module(module), func)
    return int(entry(list(args)))


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        sys.stderr.write(USAGE)
        return 2
    first = args[0]
    if first == "--version":
        from ltoguard import __version__

        print(f"ltoguard {__version__}")
        return 0
    if first in ("--help", "-h", "help"):
        sys.stdout.write(USAGE)
        return 0
    if first in SUBCOMMANDS:
        return _subcommand(first, args[1:])
    if first.startswith("-"):
        sys.stderr.write(f"ltoguard: error: unknown option {first}; see `ltoguard --help`\n")
        return 2

    from ltoguard.passthrough import exec_program

    env = os.environ
    raw_mode = env.get("LTOGUARD_MODE", "")
    mode = raw_mode.strip().lower() or "lto"
    wrap = env.get("LTOGUARD_WRAP")  # set but empty: no inner wrapper (like RUSTC_WRAPPER="")
    from ltoguard.classify import MODES, classify

    if mode not in MODES:
        sys.stderr.write(
            f"ltoguard: error: LTOGUARD_MODE={raw_mode!r} is not valid; accepted: lto (default), link, off\n"
        )
        return 2

    decision = classify(args, mode)
    if decision.guarded:
        from ltoguard.guard import run_guarded

        return run_guarded(args)
    # Settings files can only matter here in two cases, each found by a byte search
    # of the files, read once (no TOML parse): an inner wrapper set in a file, or,
    # for a final link, a file-set mode or a per-crate `guard = "always"`.
    from ltoguard.configfiles import may_override, may_set, scan

    texts = scan()
    need = False
    if texts:
        need = wrap is None and may_set(texts, "wrap")
        if not need and mode != "off" and classify(args, "link").guarded:
            need = (not raw_mode and may_set(texts, "mode")) or may_override(
                texts, decision.crate_name
            )
    if not need:
        return exec_program([wrap, *args] if wrap else args)
    from ltoguard.guard import run_guarded

    return run_guarded(args)
