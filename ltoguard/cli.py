"""Entry point. Kept tiny: for every non-LTO rustc call cargo makes, this module
decides and exec()s the real compiler, importing nothing beyond os/sys, the
classifier and the settings-file scan (configfiles), so a pass-through call costs
next to nothing."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Subcommand name -> (module, function). A PROGRAM from cargo is an absolute path
# (or a name such as clippy-driver), so these words do not collide with it.
SUBCOMMANDS = {
    "explain": ("ltoguard.commands.explain", "main"),
    "status": ("ltoguard.commands.status", "main"),
    "learned": ("ltoguard.commands.learned", "main"),
    "report": ("ltoguard.commands.report", "main"),
    "init": ("ltoguard.commands.init", "main"),
    "run": ("ltoguard.commands.run", "main"),
    "doctor": ("ltoguard.commands.doctor", "main"),
    "help": ("ltoguard.commands.helptext", "main"),
}


def _subcommand(name: str, args: Sequence[str]) -> int:
    import importlib

    module, func = SUBCOMMANDS[name]
    entry = getattr(importlib.import_module(module), func)
    return int(entry(list(args)))


UNSUPPORTED = (
    "ltoguard: error: ltoguard needs Linux or macOS (flock, fork, POSIX signals); this is {}."
    " Remove it from build.rustc-workspace-wrapper (or RUSTC_WORKSPACE_WRAPPER) here\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if os.name != "posix":
        # Refused up front: the guarded path would die on `import fcntl` mid-build.
        sys.stderr.write(UNSUPPORTED.format(sys.platform))
        return 2
    if not args:
        from ltoguard.commands.helptext import usage

        sys.stderr.write(usage())
        return 2
    first = args[0]
    if first == "--version":
        from ltoguard import __version__

        print(f"ltoguard {__version__}")
        return 0
    if first in ("--help", "-h"):
        return _subcommand("help", [])
    if first in SUBCOMMANDS:
        return _subcommand(first, args[1:])
    if first.startswith("-"):
        sys.stderr.write(f"ltoguard: error: unknown option {first}; see `ltoguard --help`\n")
        return 2

    return _compile(args)


def _compile(args: list[str]) -> int:
    """cargo's call: pass it straight to the compiler unless the verdict may be "guard".

    verdict.py (the rules) is imported only when a setting could change the
    classifier's answer: LTOGUARD_MODE is set, or a settings file mentions ltoguard.
    Most calls need neither, so the pass-through path stays small."""
    from ltoguard.classify import classify
    from ltoguard.configfiles import scan

    env = os.environ
    raw_mode = env.get("LTOGUARD_MODE", "")
    mode = "lto"
    if raw_mode.strip():  # blank counts as unset, as for every LTOGUARD_* setting
        from ltoguard.verdict import check_mode, mode_error

        checked = check_mode(raw_mode)
        if checked is None:
            sys.stderr.write(f"ltoguard: error: {mode_error(raw_mode)}\n")
            return 2
        mode = checked
    decision = classify(args, mode)
    guarded = decision.guarded
    texts = scan(env)
    if texts or any(k.startswith("LTOGUARD_") for k in env):
        from ltoguard.configfiles import first_call_of_build

        if first_call_of_build(env):  # every other call: one failed O_EXCL open
            from ltoguard.buildcheck import say_problems

            say_problems(env)
    if not guarded and texts:
        from ltoguard.verdict import files_may_change

        guarded = files_may_change(args, decision, mode, env, texts)
    if guarded:
        from ltoguard.guard import run_guarded

        return run_guarded(args)
    wrap = env.get("LTOGUARD_WRAP")  # set but empty: no inner wrapper (like RUSTC_WRAPPER="")
    if wrap:
        args = [wrap, *args]
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        # Only a failed exec pays for the hint: cargo's PROGRAM is found. Any other
        # failure (not executable, ENOEXEC) gets exec_program's one line and 127.
        if isinstance(exc, FileNotFoundError) and not wrap and mistyped(args[0]):
            return 2
    from ltoguard.passthrough import exec_program

    return exec_program(args)  # says why it cannot run


def mistyped(word: str) -> bool:
    """Say so if ``word``, which is no program, looks like a subcommand's typo."""
    import difflib

    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1) if "/" not in word else []
    if close:
        sys.stderr.write(f"ltoguard: error: no such command '{word}'; did you mean '{close[0]}'?\n")
    return bool(close)
