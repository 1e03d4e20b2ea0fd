"""``ltoguard init``: register ltoguard in the workspace's ``.cargo/config.toml``.

The file is edited as text: one line is inserted or one value replaced, so the
user's comments, order and formatting stay byte for byte. Every edit is checked
by parsing the result: it must equal the old document plus the one key, or
nothing is written.
"""

from __future__ import annotations

import os
import re
import sys

from ltoguard.commands.common import EXIT_OK, error, warning

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence

CREATED, ADDED, UPDATED, ALREADY = "created", "added", "updated", "already set"


class InitError(Exception):
    """init cannot proceed; the one-line message says what to fix."""


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="ltoguard init",
        description=(
            "Add ltoguard as cargo's rustc wrapper to .cargo/config.toml in the root of "
            "the current workspace (created if absent; an existing file keeps everything "
            "in it). Running it again changes nothing."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="print the change and write nothing")
    parser.add_argument(
        "--remove",
        action="store_true",
        help="remove the wrapper line init added (only one that names ltoguard)",
    )
    parser.add_argument(
        "--wrapper-path",
        metavar="PATH",
        help="the absolute path cargo should run (default: the path this ltoguard was "
        "started as, e.g. ~/.local/bin/ltoguard after scripts/install.sh)",
    )
    parser.add_argument(
        "--rustc-wrapper",
        action="store_true",
        help="set build.rustc-wrapper (wraps every crate, dependencies too) instead of "
        "build.rustc-workspace-wrapper (workspace members only)",
    )
    return parser


def default_wrapper_path() -> str:
    """The absolute path this ltoguard was started as (not resolved: install.sh's
    symlink is the stable path cargo should hash), else the one on PATH, else the
    console script beside this Python (``python -m ltoguard init`` in a venv).
    Never a bare name: cargo would fail wherever PATH lacks it (CI, IDEs)."""
    import shutil

    me = sys.argv[0] if sys.argv else ""
    if os.sep in me and os.path.basename(me) == "ltoguard" and os.access(me, os.X_OK):
        return os.path.abspath(me)
    found = shutil.which("ltoguard")
    if found:
        return os.path.abspath(found)
    beside = os.path.join(os.path.dirname(sys.executable), "ltoguard")
    if os.access(beside, os.X_OK):
        return beside
    raise InitError(
        "cannot tell where this ltoguard is installed; pass its absolute path with"
        " --wrapper-path (scripts/install.sh prints it)"
    )


def config_path(root: str) -> tuple[str, str | None]:
    """The cargo config file of a workspace root, and a warning if two exist.

    cargo reads the legacy ``.cargo/config`` when it exists, even beside a
    ``config.toml`` (it warns then), so that is the one to edit.
    """
    legacy = os.path.join(root, ".cargo", "config")
    modern = legacy + ".toml"
    if os.path.exists(legacy):
        warning = None
        if os.path.exists(modern) and not os.path.samefile(legacy, modern):
            warning = f"both {legacy} and {modern} exist; cargo reads {legacy}, so that is edited"
        return legacy, warning
    return modern, None


def _toml_string(value: str) -> str:
    import json

    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def _loads(text: str, path: str) -> dict[str, object]:
    from ltoguard.config import toml_error_type, toml_loads

    try:
        return toml_loads(text)
    except toml_error_type() as exc:
        raise InitError(
            f"{path} is not valid TOML ({exc}); fix it, then run ltoguard init again"
        ) from None


# Line ends are matched as (?=\r?$) so that CRLF files keep their \r.
_HEADER = re.compile(
    r"""^[ \t]*\[[ \t]*(?:build|"build"|'build')[ \t]*\][ \t]*(?:#[^\r\n]*)?(?=\r?$)""", re.M
)


def _key_line(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(
        rf"""^([ \t]*(?:(?:build|"build"|'build')[ \t]*\.[ \t]*)?(?:{k}|"{k}"|'{k}')[ \t]*=[ \t]*)"""
        r"""("(?:[^"\\\r\n]|\\.)*"|'[^'\r\n]*'|[^#\s][^#\r\n]*?)([ \t]*(?:#[^\r\n]*)?)(?=\r?$)""",
        re.M,
    )


def _candidates(text: str, key: str, value: str, nl: str) -> Iterator[str]:
    """Possible edited texts, most natural first; the caller keeps the first that parses right."""
    quoted = _toml_string(value)
    line = f"{key} = {quoted}"
    # An existing key: replace its value, keep the indentation and the comment.
    for m in _key_line(key).finditer(text):
        yield text[: m.start(2)] + quoted + text[m.end(2) :]
    # A [build] table: the key goes right under the header.
    for m in _HEADER.finditer(text):
        end = m.end()
        yield text[:end] + nl + line + text[end:]
    # `build.jobs = 4` style dotted keys in the root table: one more beside them.
    for m in re.finditer(r"^[ \t]*build[ \t]*\.[^\r\n]*", text, re.M):
        yield text[: m.end()] + nl + "build." + line + text[m.end() :]
    # No [build] table yet: a new one at the end.
    tail = text
    if tail and not tail.endswith(nl):
        tail += nl
    if tail and not tail.endswith(nl + nl) and tail != nl:
        tail += nl
    yield f"{tail}[build]{nl}{line}{nl}"


def plan(text: str | None, key: str, value: str, path: str) -> tuple[str, str, object]:
    """(action, new text, old value) for setting ``build.<key> = value`` in ``text``
    (None: no file yet). Raises InitError."""
    if text is None:
        return CREATED, f"[build]\n{key} = {_toml_string(value)}\n", None
    old = _loads(text, path)
    build = old.get("build", {})
    if not isinstance(build, dict):
        raise InitError(f"{path}: build = {build!r} is not a table; cargo expects [build]")
    previous = build.get(key)
    if previous == value:
        return ALREADY, text, previous
    import copy

    expected = copy.deepcopy(old)
    new_build = expected.setdefault("build", {})
    assert isinstance(new_build, dict)
    new_build[key] = value
    nl = "\r\n" if "\r\n" in text else "\n"
    from ltoguard.config import toml_error_type, toml_loads

    error = toml_error_type()
    for candidate in _candidates(text, key, value, nl):
        try:
            if toml_loads(candidate) == expected:
                return (ADDED if key not in build else UPDATED), candidate, previous
        except error:
            continue
    raise InitError(
        f"cannot add {key} to {path} without rewriting it (is [build] an inline table?); "
        f"add `{key} = {_toml_string(value)}` under [build] by hand"
    )


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InitError(f"{path} is a directory; cargo expects a file there") from None
    except OSError as exc:
        raise InitError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InitError(f"{path} is not UTF-8; TOML files must be UTF-8") from None


def _write(path: str, text: str) -> None:
    import tempfile

    # Through a symlink (`config` -> `config.toml` is a common setup) to its target.
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        # Atomic: an interrupted init leaves the old file or the new, never half.
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _diff(path: str, old: str | None, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else path,
        tofile=path,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _warn_double(text: str | None, key: str, path: str) -> None:
    # Both keys naming ltoguard make cargo run `ltoguard ltoguard rustc ...`.
    if text is None:
        return
    other = "rustc-wrapper" if key == "rustc-workspace-wrapper" else "rustc-workspace-wrapper"
    build = _loads(text, path).get("build")
    value = build.get(other) if isinstance(build, dict) else None
    if isinstance(value, str) and os.path.basename(value).startswith("ltoguard"):
        warning(
            f"[build] {other} = {_toml_string(value)} in {path} is ltoguard too; "
            "remove one of the two, or cargo runs ltoguard twice per crate"
        )


def run(cwd: str, key: str, value: str, dry_run: bool) -> tuple[str, str, str]:
    """Do the edit; returns (action, config path, message). Raises InitError."""
    from ltoguard.config import find_workspace_manifest

    manifest = find_workspace_manifest(cwd)
    if manifest is None:
        raise InitError(
            f"no Cargo.toml in {cwd} or any parent directory; run ltoguard init inside a cargo project"
        )
    path, two_files = config_path(os.path.dirname(manifest))
    if two_files:
        warning(two_files)
    text = _read(path)
    action, new, previous = plan(text, key, value, path)
    _warn_double(text, key, path)
    setting = f"{key} = {_toml_string(value)}"
    if action == CREATED:
        message = f"created {path} with [build] {setting}"
    elif action == ADDED:
        message = f"added {setting} to [build] in {path}"
    elif action == UPDATED:
        from ltoguard.config import toml_value

        message = (
            f"updated [build] {key} in {path}: {toml_value(previous)} -> {_toml_string(value)}"
        )
    else:
        message = f"already set: [build] {setting} in {path}"
    if dry_run:
        if action != ALREADY:
            message = f"dry run, nothing written; would have {message}\n" + _diff(path, text, new)
    elif action != ALREADY:
        _write(path, new)
    return action, path, message


def main(argv: Sequence[str] | None = None) -> int:
    opts = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if opts.remove:
        return _remove(opts.dry_run)
    key = "rustc-wrapper" if opts.rustc_wrapper else "rustc-workspace-wrapper"
    try:
        value = opts.wrapper_path or default_wrapper_path()
        action, _, message = run(os.getcwd(), key, value, opts.dry_run)
    except InitError as exc:
        return error(str(exc))
    except OSError as exc:
        return error(f"cannot write {exc.filename}: {exc.strerror}")
    sys.stdout.write(message.rstrip("\n") + "\n")
    env_var = "RUSTC_WRAPPER" if opts.rustc_wrapper else "RUSTC_WORKSPACE_WRAPPER"
    if os.environ.get(env_var) is not None:
        warning(f"{env_var} is set in this environment; cargo uses it instead of the file")
    if action != ALREADY and not opts.dry_run and not opts.rustc_wrapper:
        # cargo hashes the workspace wrapper's path into the members' -C metadata.
        sys.stdout.write(
            "note: the next build recompiles every workspace member once "
            "(cargo hashes the wrapper's path into their metadata)\n"
        )
    return EXIT_OK


def _remove(dry_run: bool) -> int:
    from ltoguard.commands.init_remove import names_ltoguard, remove

    try:
        _, message = remove(os.getcwd(), dry_run)
    except InitError as exc:
        return error(str(exc))
    except OSError as exc:
        return error(f"cannot write {exc.filename}: {exc.strerror}")
    sys.stdout.write(message)
    for var in ("RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER"):
        if names_ltoguard(os.environ.get(var)):
            warning(f"{var} names ltoguard in this environment; cargo still runs it")
    return EXIT_OK
