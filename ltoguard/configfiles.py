"""Where settings files are, read as bytes: the quick checks of the pass-through path.

cli.py runs for every crate cargo compiles. Before it execs rustc it asks whether a
settings file could change the decision (an inner wrapper, a file-set mode, a
per-crate override). That question costs one read of each candidate file and a
byte search, done once per call; TOML is parsed (config.py) only when it says yes.
It also tells the first call of a cargo build that sees any settings, which checks
them for the whole build (buildcheck.py): every other call pays one failed open.
Imports only ``os``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

USER_FILE = os.path.join("ltoguard", "config.toml")
# A settings file or Cargo.toml larger than this is refused when parsed (manifest.py);
# the byte search here reads only its first ~4 MiB.
MAX_FILE = 4 << 20


def normalise_crate(name: str) -> str:
    # cargo turns a package's hyphens into underscores for --crate-name.
    return name.replace("-", "_")


def user_config_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return os.path.join(base, USER_FILE)


def read_bytes(path: str) -> bytes | None:
    # os.open/os.read rather than open(): a third of the cost on this path.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        chunks = []
        total = 0
        while total <= MAX_FILE:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            total += len(b)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def ancestors(start: str) -> Iterator[str]:
    d = os.path.abspath(start)
    while True:
        yield d
        parent = os.path.dirname(d)
        if parent == d:
            return
        d = parent


def scan(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> list[bytes]:
    """The raw bytes of every file config.load() could read settings from, or a
    superset: the user file and each ``Cargo.toml`` from the start directory up that
    mentions ltoguard (any could be the workspace root). Empty: no file matters."""
    env = os.environ if environ is None else environ
    texts = []
    data = read_bytes(user_config_path(env))
    if data is not None:
        texts.append(data)
    start = env.get("CARGO_MANIFEST_DIR") or cwd or os.getcwd()
    for d in ancestors(start):
        data = read_bytes(os.path.join(d, "Cargo.toml"))
        if data is not None and b"ltoguard" in data:
            texts.append(data)
    return texts


def may_set(texts: list[bytes], key: str) -> bool:
    """False when none of the files can set ``key`` (e.g. "mode")."""
    needle = key.encode()
    return any(needle in data for data in texts)


def may_override(texts: list[bytes], crate_name: str | None) -> bool:
    """False when none of the files can hold an override for this crate."""
    if not crate_name:
        return False
    needle = normalise_crate(crate_name).encode("utf-8", "surrogateescape")
    # Hyphens folded on both sides so `[crates.my-crate]` matches `my_crate`.
    return any(needle in data.replace(b"-", b"_") for data in texts)


# ---------------------------------------------------------------------------
# once per build: the first call that sees settings checks them (buildcheck.py)

MARK = ".checked-"  # + cargo's pid and start time: one file per build


def cargo_build() -> str:
    """ "PID-STARTTIME" of our parent if it is cargo, else "" (run by hand, or by sccache)."""
    from ltoguard.procstat import cargo_run

    return cargo_run(os.getppid(), levels=1)


def mark_dir(env: Mapping[str, str]) -> str:
    """Where the marks go: the state directory as the environment names it, else
    statedir.default_path's choice without its tempfile import, which would cost
    every call (a settings file's `dir` is not read here; the mark only has to be
    the same for every call of a build)."""
    explicit = env.get("LTOGUARD_DIR", "").strip()
    if explicit:
        return os.path.abspath(explicit)
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "ltoguard")
    return os.path.join(env.get("TMPDIR") or "/tmp", f"ltoguard-{os.geteuid()}")


def first_call(directory: str, build: str) -> bool:
    """True for exactly one call per build: the one that made the mark."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    path = os.path.join(directory, MARK + build)
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        return False
    except FileNotFoundError:
        try:
            os.mkdir(directory, 0o700)  # a fresh boot: as a build would make it
            os.close(os.open(path, flags, 0o600))
        except OSError:
            return False  # the guarded path says what is wrong with it
    except OSError:
        return False
    _forget_old(directory, build)
    return True


def _forget_old(directory: str, build: str) -> None:
    # One mark per build: those of cargo processes gone are removed by the next build.
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(MARK) or name == MARK + build:
            continue
        pid = name[len(MARK) :].partition("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def first_call_of_build(env: Mapping[str, str]) -> bool:
    """Is this the first call of its cargo build to see settings? False outside cargo."""
    build = cargo_build()
    return bool(build) and first_call(mark_dir(env), build)
