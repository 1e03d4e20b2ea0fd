"""``ltoguard explain RUSTC-ARGS...``: what ltoguard would do with one invocation, and why.

Prints the decision, the crate, any per-crate override and every setting in force
with where it came from (like ``cargo config get --show-origin``). The arguments
can be pasted from ``cargo build -v``: a leading ``NAME=value`` list (cargo shows
the environment it sets) is applied to the environment used to find the
settings, and a single argument holding a whole command line is split.
"""

from __future__ import annotations

import os
import sys

from ltoguard.commands.common import EXIT_CONFIG, EXIT_OK, error

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

    from ltoguard.config import Settings, Verdict

USAGE = "ltoguard explain [--json] RUSTC-ARGS..."
DESCRIPTION = (
    "Show whether ltoguard would guard one rustc invocation, why, and the settings in "
    "force with where each came from. RUSTC-ARGS may start with the rustc path or "
    "directly with its arguments; ltoguard's own options must come first."
)


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="ltoguard explain", usage=USAGE, description=DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="print the same as one JSON object")
    parser.add_argument("rustc_args", nargs="*", metavar="RUSTC-ARGS", help="the invocation")
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """ltoguard's options, then the rustc argv: argparse must not see rustc's
    options (rustc has a --json too)."""
    own: list[str] = []
    i = 0
    while i < len(argv) and argv[i] in ("--json", "-h", "--help", "--"):
        i += 1
        if argv[i - 1] == "--":
            break
        own.append(argv[i - 1])
    return own, list(argv[i:])


def _is_assignment(tok: str) -> bool:
    name, eq, _ = tok.partition("=")
    return bool(eq) and name.replace("_", "a").isalnum() and not name[0].isdigit()


def rustc_argv(args: Sequence[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv to classify (program first) and the environment to load settings with."""
    env = dict(environ)
    words = list(args)
    if len(words) == 1 and " " in words[0] and not os.path.exists(words[0]):
        import shlex

        try:
            words = shlex.split(words[0])
        except ValueError:
            pass
    while words and _is_assignment(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words and (words[0].startswith(("-", "@")) or words[0].endswith(".rs")):
        words.insert(0, "rustc")
    return words, env


def _state_dir(settings: Settings) -> str:
    from ltoguard.statedir import default_path

    return settings.dir or default_path()


def _value(key: str, value: object, settings: Settings) -> str:
    if value is None:
        if key == "dir":
            return f"default ({_state_dir(settings)})"
        return {"slots": "auto", "memory": "auto", "wrap": "none"}.get(key, "unset")
    from ltoguard.config import toml_value

    return toml_value(value)  # as it would be written in a settings file


def _history(settings: Settings, argv: Sequence[str]) -> dict[str, object]:
    """Where this job's history would be read and written (nothing is created)."""
    from ltoguard.history import HistoryStore
    from ltoguard.jobs import target_dir

    path = _state_dir(settings)
    try:
        fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        fd = None
    store = HistoryStore.for_reading(lambda: (path, fd), target_dir(argv))
    try:
        return store.as_dict()
    finally:
        store.close()
        if fd is not None:
            os.close(fd)


def report(verdict: Verdict, settings: Settings, argv: Sequence[str]) -> dict[str, object]:
    """The explanation as a JSON-ready object (the ``--json`` schema)."""
    from ltoguard.classify import describe

    d = verdict.decision
    ov = verdict.override
    return {
        "argv": list(argv),
        "decision": "guard" if verdict.guarded else "pass",
        "reason": verdict.reason,
        "classifier": {"decision": d.action, "reason": d.reason, "mode": verdict.mode},
        "crate": {
            "name": d.crate_name,
            "types": list(d.crate_types),
            "lto": d.lto or None,
            "test": d.is_test,
            "linker_plugin_lto": d.linker_plugin_lto,
            "target": d.target,
            "description": describe(d),
        },
        "override": None
        if ov is None
        else {"crate": ov.name, "memory": ov.memory, "guard": ov.guard, "origin": ov.origin},
        "settings": {
            key: {"value": setting.value, "origin": setting.origin}
            for key, setting in settings.items()
        },
        "files": {
            "workspace": settings.manifest,
            "user": settings.user_file,
            "user_exists": settings.user_file is not None and os.path.exists(settings.user_file),
            "state_dir": _state_dir(settings),
            "history": _history(settings, argv),
        },
    }


def render(verdict: Verdict, settings: Settings, argv: Sequence[str] = ()) -> str:
    from ltoguard.classify import describe

    d = verdict.decision
    lines = [
        f"decision: {'GUARD' if verdict.guarded else 'PASS'} \u2014 {verdict.reason}",
        f"job:      {describe(d)}",
    ]
    ov = verdict.override
    if ov is not None:
        parts = [f'guard = "{ov.guard}"']
        if ov.memory is not None:
            from ltoguard.sizes import format_size

            parts.append(f"memory = {format_size(ov.memory)}")
        lines.append(f"override: {', '.join(parts)}  # {ov.origin}")
    lines.append("settings:")
    shown = [(key, _value(key, s.value, settings), s.origin) for key, s in settings.items()]
    kw = max(len(k) for k, _, _ in shown)
    vw = max(len(v) for _, v, _ in shown)
    lines += [f"  {k:<{kw}} = {v:<{vw}}  # {o}" for k, v, o in shown]
    user = settings.user_file
    if user is not None and not os.path.exists(user):
        user += " (not present)"
    lines.append("files:")
    lines.append(f"  workspace = {settings.manifest or 'none found'}")
    lines.append(f"  user      = {user}")
    from ltoguard.history import where_line

    lines.append(f"  history   = {where_line(_history(settings, argv))}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    own, rest = _split(sys.argv[1:] if argv is None else argv)
    opts = _parser().parse_args(own)
    if not rest:
        error("no rustc arguments given")
        sys.stderr.write(f"usage: {USAGE}\n")
        return EXIT_CONFIG
    from ltoguard.config import SettingsError, decide, load

    words, env = rustc_argv(rest, os.environ)
    try:
        settings = load(env)
    except SettingsError as exc:
        return error(str(exc))
    verdict = decide(words, settings)
    if opts.json:
        import json

        sys.stdout.write(json.dumps(report(verdict, settings, words), indent=2) + "\n")
    else:
        sys.stdout.write(render(verdict, settings, words))
    from ltoguard.commands.common import check_state
    from ltoguard.statedir import StateDirError

    try:
        check_state(settings.dir)  # what a guarded compile would refuse
    except StateDirError as exc:
        return error(str(exc))
    return EXIT_OK
