"""``ltoguard init --remove``: take out the wrapper line that ``ltoguard init`` added.

Only a ``[build]`` wrapper key whose value names ltoguard is removed, by deleting
its line: comments and every other byte stay. As for adding, the edit is checked
by parsing the result: it must equal the old document less that one key.
"""

from __future__ import annotations

import os

from ltoguard.commands.init import (
    InitError,
    _diff,
    _key_line,
    _loads,
    _read,
    _toml_string,
    _write,
    config_path,
)
from ltoguard.commands.report import REPORT_NAME

KEYS = ("rustc-workspace-wrapper", "rustc-wrapper")

# What stays behind, in one line: the history's location is `learned`'s to say.
STAYS = (
    "what ltoguard learned stays in its cache (`ltoguard learned` shows where) and any "
    f"{REPORT_NAME} stays in the target directory"
)
# The workspace wrapper's path is in every member's -C metadata (RUSTC_WRAPPER is not).
REBUILD = (
    "the next build recompiles every workspace member once (cargo hashes the "
    "wrapper's path into their metadata); "
)


def names_ltoguard(value: object) -> bool:
    return isinstance(value, str) and os.path.basename(value).startswith("ltoguard")


def _without_empty_build(doc: dict[str, object]) -> dict[str, object]:
    # A [build] header left with nothing under it is the same configuration to cargo.
    if doc.get("build") == {}:
        return {k: v for k, v in doc.items() if k != "build"}
    return doc


def _drop_line(text: str, key: str, expected: dict[str, object], path: str) -> str:
    """``text`` without the line that sets ``build.<key>``; raises InitError."""
    for m in _key_line(key).finditer(text):
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        candidate = text[:start] + (text[end + 1 :] if end >= 0 else "")
        try:
            if _without_empty_build(_loads(candidate, path)) == expected:
                return candidate
        except InitError:
            continue
    raise InitError(
        f"cannot remove [build] {key} from {path} without rewriting it; remove it by hand"
    )


def plan_removal(text: str, path: str) -> tuple[str, list[str]]:
    """(new text, the settings removed, as written) for ``text``. Raises InitError."""
    doc = _loads(text, path)
    build = doc.get("build")
    if not isinstance(build, dict):
        return text, []
    removed = []
    for key in KEYS:
        value = build.get(key)
        if not names_ltoguard(value):
            continue
        assert isinstance(value, str)
        rest = {k: v for k, v in build.items() if k != key}
        expected = _without_empty_build({**_loads(text, path), "build": rest})
        text = _drop_line(text, key, expected, path)
        build = rest
        removed.append(f"{key} = {_toml_string(value)}")
    return text, removed


def remove(cwd: str, dry_run: bool) -> tuple[bool, str]:
    """Do the removal; returns (whether the wrapper was registered, message). Raises InitError."""
    from ltoguard.config import find_workspace_manifest

    manifest = find_workspace_manifest(cwd)
    if manifest is None:
        raise InitError(
            f"no Cargo.toml in {cwd} or any parent directory; run it inside a cargo project"
        )
    path, _two = config_path(os.path.dirname(manifest))
    text = _read(path)
    if text is None:
        return False, f"nothing to remove: no {path}\n"
    new, removed = plan_removal(text, path)
    if not removed:
        return False, f"nothing to remove: no [build] wrapper naming ltoguard in {path}\n"
    what = " and ".join(f"[build] {r}" for r in removed)
    # What init created and nothing more: the file goes, as it came.
    delete = new.strip() in ("", "[build]")
    done = f"removed {path} (it held only {what})" if delete else f"removed {what} from {path}"
    if dry_run:
        return True, f"dry run, nothing written; would have {done}\n" + _diff(
            path, text, "" if delete else new
        )
    if delete:
        os.unlink(path)
    else:
        _write(path, new)
    rebuild = REBUILD if any(r.startswith(KEYS[0]) for r in removed) else ""
    return True, f"{done}\nnote: {rebuild}{STAYS}\n"
