"""What an LTO compile will read, measured before it starts: the cold estimate's inputs.

Fat LTO merges the LLVM bitcode of every crate the binary links, and its memory
grows with that. cargo names only the direct dependencies (``--extern
NAME=PATH``); the rest come from the ``-L dependency=DIR`` folders. Each rlib's
metadata lists the crates it was built against by their file suffix (rustc's
``-C extra-filename``, ``-0123456789abcdef``), so the closure is found by
reading those suffixes out of each metadata blob and looking them up among the
rlibs of the dependency folders. A suffix in the metadata that is not a
dependency costs at most an overestimate (the estimate stays on the safe side).
Of the workspace's own crates, the metadata beyond their object code is counted as
generic code: a binary compiles a library's generic code itself, at its own types.

Only the guarded path imports this, once per LTO job, before it queues: reading
the metadata of a large closure takes tens of milliseconds, against a compile of
tens of seconds. Nothing here raises: inputs that cannot be read give None, and
the job falls back to the default estimate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ltoguard.structs import struct

_SUFFIX = re.compile(rb"-([0-9a-f]{16})")
_RLIB_NAME = re.compile(r"^lib.+-([0-9a-f]{16})\.rlib$")
MAX_CRATES = 2000  # a closure larger than this is read no further (and is not small)
MAX_SOURCE_FILES = 5000  # files looked at under the crate root's folder
MAX_METADATA = 256 * 1024 * 1024  # bytes of metadata read per job, at most
STR_END = b"\xc1"  # rustc's metadata ends every string with it (STR_SENTINEL)


@struct(frozen=True)
class Inputs:
    """The sizes a cold estimate is drawn from (bytes)."""

    deps: int  # the rlibs the compile links, its own dependencies' dependencies included
    crates: int  # how many such rlibs
    source: int  # the .rs files in the crate root's folder and below
    meta: int = 0  # of ``deps``, the crates' metadata (generic code lives there, as MIR)
    generic: int = 0  # of ``meta``, the workspace's generic code (see ``closure``)

    def as_dict(self) -> dict[str, int]:
        return {
            "deps": self.deps,
            "crates": self.crates,
            "source": self.source,
            "meta": self.meta,
            "generic": self.generic,
        }


def _options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the --extern paths, the -L dependency= folders) of a rustc command line."""
    externs: list[str] = []
    dirs: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        value: str | None = None
        if a == "--extern" or a == "-L":
            if i + 1 >= len(argv):
                break
            value = argv[i + 1]
            next(it, None)
        elif a.startswith("--extern="):
            a, value = "--extern", a[len("--extern=") :]
        elif a.startswith("-L") and len(a) > 2:
            a, value = "-L", a[2:]
        if value is None:
            continue
        if a == "--extern":
            _, eq, path = value.partition("=")
            if eq and path.endswith(".rlib"):
                externs.append(path)
        else:
            kind, eq, path = value.partition("=")
            if eq and kind in ("dependency", "all", "crate"):
                dirs.append(path)
    return externs, dirs


def _rlibs_by_suffix(dirs: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            m = _RLIB_NAME.match(name)
            if m:
                found.setdefault(m.group(1), os.path.join(d, name))
    return found


def metadata(rlib: str, limit: int = MAX_METADATA) -> tuple[int, bytes]:
    """The crate's metadata: its size, and up to ``limit`` of its bytes. cargo's
    ``.rmeta`` beside the rlib when there is one (the same bytes), else the
    ``lib.rmeta`` member of the rlib (an ar archive). (0, b"") when unreadable."""
    rmeta = rlib[: -len(".rlib")] + ".rmeta"
    try:
        with open(rmeta, "rb") as f:
            return os.fstat(f.fileno()).st_size, f.read(limit)
    except OSError:
        pass
    try:
        with open(rlib, "rb") as f:
            if f.read(8) != b"!<arch>\n":
                return 0, b""
            while True:
                header = f.read(60)
                if len(header) < 60:
                    return 0, b""
                name = header[:16].rstrip(b" ")
                size = int(header[48:58].strip() or b"0")
                if size < 0:
                    return 0, b""
                if name in (b"lib.rmeta/", b"lib.rmeta"):
                    return size, f.read(min(size, limit))
                f.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, ValueError):
        return 0, b""


def closure(
    externs: Sequence[str], dirs: Sequence[str], local: bytes = b""
) -> dict[str, tuple[int, int, int]]:
    """Every rlib the compile links, with its size, its metadata's, and its generic
    code's: the ``--extern`` ones and, from their metadata, what they were built
    against, found in ``dirs``. Generic code is counted for the workspace's own crates
    (their metadata names ``local``, the workspace folder, as where they were built)
    as the metadata in excess of the crate's object code: a library of generic code
    leaves nearly all of it for the binary to compile (as MIR in its metadata), while
    a crate with more object code than metadata compiled most of its code itself."""
    by_suffix = _rlibs_by_suffix(dirs)
    sizes: dict[str, tuple[int, int, int]] = {}
    todo = list(externs)
    budget = MAX_METADATA
    while todo and len(sizes) < MAX_CRATES:
        path = todo.pop()
        if path in sizes:
            continue
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        meta_size, meta = metadata(path, max(0, budget))
        meta_size = min(size, meta_size)
        own = max(0, meta_size - (size - meta_size)) if local and local in meta else 0
        sizes[path] = (size, meta_size, own)
        budget -= len(meta)
        for m in set(_SUFFIX.findall(meta)):
            dep = by_suffix.get(m.decode())
            if dep is not None and dep not in sizes:
                todo.append(dep)
    return sizes


def workspace_marker() -> bytes:
    """How a crate built in this folder names it in its metadata: the folder as a whole
    string (rustc ends each string with 0xC1), which cargo runs rustc in for the
    workspace's members and not for a registry's or git checkout's crates (those run in
    their own folders; their build scripts' output under the workspace's target folder
    is named only as longer paths). b"" where that says nothing."""
    try:
        cwd = os.getcwd()
    except OSError:
        return b""
    return os.fsencode(cwd) + STR_END if cwd != os.sep else b""


def source_size(crate_root: str | None) -> int:
    """Bytes of Rust source the crate root's module tree may span: its folder and
    below (``src/main.rs`` -> ``src/``), without other binaries' roots (``src/bin``,
    a folder whose files are each a crate of their own) and without ``lib.rs`` beside
    a ``main.rs`` (that crate is an rlib, counted as such). For ``src/bin/x.rs``:
    that file and a folder ``src/bin/x/``. A rough figure: its weight is small."""
    if not crate_root:
        return 0
    root = os.path.abspath(crate_root)
    top = os.path.dirname(root)
    if os.path.basename(top) == "bin":
        return _file_size(root) + _tree_size(os.path.splitext(root)[0], skip=())
    skip = ("bin",)
    total = _tree_size(top, skip=skip)
    if os.path.basename(root) == "main.rs":
        total -= _file_size(os.path.join(top, "lib.rs"))
    return max(0, total)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _tree_size(top: str, *, skip: tuple[str, ...]) -> int:
    total = visited = 0
    for dirpath, dirnames, filenames in os.walk(top):
        keep = [d for d in dirnames if not d.startswith(".") and d != "target"]
        if dirpath == top:
            keep = [d for d in keep if d not in skip]
        dirnames[:] = keep
        for name in filenames:
            visited += 1
            if visited > MAX_SOURCE_FILES:
                return total
            if name.endswith(".rs"):
                total += _file_size(os.path.join(dirpath, name))
    return total


def read_inputs(argv: Sequence[str], crate_root: str | None) -> Inputs | None:
    """The inputs of this rustc command line, or None when it names none (no rlib and
    no source to read: nothing to estimate from)."""
    try:
        externs, dirs = _options(argv)
        rlibs = closure(externs, dirs, workspace_marker())
        source = source_size(crate_root)
    except (OSError, ValueError, RecursionError):
        return None
    if not rlibs and not source:
        return None
    deps = sum(size for size, _, _ in rlibs.values())
    meta = sum(m for _, m, _ in rlibs.values())
    generic = sum(g for _, _, g in rlibs.values())
    return Inputs(deps, len(rlibs), source, meta, generic)


# The cold estimate: a compile's peak anonymous memory as a line in the object code it
# links (a registry crate's metadata is generic code as MIR, little of which reaches
# the binary); the constants sit above the fitted ones (scripts/calibrate_cold.py),
# so it errs high.
BASE = 120 * 1024 * 1024  # the compiler and std's bitcode
PER_CODE_BYTE = 26.0  # per byte of the linked rlibs' object code / bitcode
PER_SOURCE_BYTE = 100.0  # a guess: the fitted crates had too little source of their own to weigh
# By debug level: the linked bitcode already carries its debug info, so it counts once;
# own source gets its debug info in this compile (docs/benchmarks.md, "The cold
# estimate by debug level").
CODE_DEBUG_FACTOR = (1.0, 1.0, 1.5)
SOURCE_DEBUG_FACTOR = (1.0, 2.0, 2.0)
# The line siblings' misses scale: its shape, not its level, counts there, and the whole
# line doubled fits the real 100-bin trace's shape (same section).
LINE_DEBUG_FACTOR = 2.0
_NO_DEBUG = frozenset(("", "0", "none", "false"))
_SOME_DEBUG = frozenset(("1", "limited", "line-tables-only", "line-directives-only"))


def debug_level(debuginfo: str) -> int:
    """0 without debug info; 1 for limited info or line tables only; 2 for full (rustc's
    ``-C debuginfo`` values: 0/none, 1/limited, line-tables-only, line-directives-only,
    2/full; any other, such as one a later rustc adds, counts as full)."""
    return 0 if debuginfo in _NO_DEBUG else 1 if debuginfo in _SOME_DEBUG else 2


def debug_on(debuginfo: str) -> bool:
    return debug_level(debuginfo) > 0


def predict(inputs: dict[str, int], *, debuginfo: str = "") -> int:
    """The cold estimate (bytes) of an LTO compile with these inputs and profile, with
    no sibling finished yet: thin LTO is not measured and is taken as fat."""
    level = debug_level(debuginfo)
    code, source = _terms(inputs)
    return int(BASE + code * CODE_DEBUG_FACTOR[level] + source * SOURCE_DEBUG_FACTOR[level])


def line(inputs: dict[str, int], *, debuginfo: str = "") -> int:
    """The line finished siblings' peaks scale (``estimates.History.estimate``)."""
    code, source = _terms(inputs)
    grows = code + source
    if debug_on(debuginfo):
        grows *= LINE_DEBUG_FACTOR
    return int(BASE + grows)


def _terms(inputs: dict[str, int]) -> tuple[float, float]:
    """What the linked object code and the crate's own source add, without debug info."""
    # The workspace's generic code ("generic") is recorded, not weighed: a term fitted
    # on generated generic-heavy bins would count most real crates' metadata as
    # generic too and overrate them several times (docs/design.md, the cold estimate).
    code = max(0, inputs.get("deps", 0) - inputs.get("meta", 0))
    return PER_CODE_BYTE * code, PER_SOURCE_BYTE * inputs.get("source", 0)
