"""Where the memory history lives, and the one way a guarded job reads and adds to it.

What ltoguard learned is kept per user in the cache directory,
``$XDG_CACHE_HOME/ltoguard`` (default ``~/.cache/ltoguard``): it outlives a reboot,
and CI caches it the way it caches ``~/.cache/sccache``. The state directory keeps
only what must not outlive a boot (locks, queue, records, the event log).

Older versions kept the history in the state directory and a copy in the cargo
target directory. Both are still read, under the cache directory's, and what they
hold is written into it with the next peak, so an upgrade loses nothing; the
target copy is no longer written (see ``TARGET_HISTORY``).

A cache directory that cannot be used (HOME unset or read-only, as in some CI
containers) costs one warning per state directory's life (once per boot or CI
run, not once per job; a save that fails later warns on each job it fails), and
the state directory keeps the history as before.
Nothing here fails a build: the history only sharpens estimates.

Each job loads the file, adds its peak and replaces the whole (estimates.History.save
is atomic), under a flock of the directory it writes (locks.briefly_locked): two
jobs that ended together lost one peak before. A holder that does not let go
within RECORD_LOCK_S is not waited for: the write goes on unlocked and may cost
one sample, never the build.
"""

from __future__ import annotations

import os
import stat

from ltoguard.curves import Curve
from ltoguard.estimates import DEFAULT_ESTIMATE, Basis, History
from ltoguard.locks import briefly_locked
from ltoguard.messages import warning
from ltoguard.statedir import read_small_file, write_private_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    # The state directory now: its path and fd (None when it does not exist yet).
    # A callable, because a build may make the state directory again mid-job.
    StateDir = Callable[[], tuple[str, "int | None"]]

CACHE_NAME = "ltoguard"
# Older versions' copy in the cargo target directory: read, no longer written.
# Swatinem/rust-cache deletes it before saving, `cargo clean` too, and the cache
# directory serves every other CI cache with one more path and no second write.
TARGET_HISTORY = "ltoguard-history.json"
# How long a job waits for another's write of the history (a load and an fsync'd
# save, unless that one is stopped) before it writes unlocked: a lost peak costs
# less than a held build.
RECORD_LOCK_S = 2.0


def history_file(uid: int) -> str:
    """The per-user file name: the cache or state directory may be shared between users."""
    return f"memory-history-{uid}.json"


def cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """``$XDG_CACHE_HOME/ltoguard``, else ``$HOME/.cache/ltoguard``; None without either."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says a relative one is ignored
        return os.path.join(xdg, CACHE_NAME)
    home = env.get("HOME", "")
    return os.path.join(home, ".cache", CACHE_NAME) if os.path.isabs(home) else None


class CacheDirError(Exception):
    """The cache directory cannot be used; the message says why."""


def _check(path: str, st: os.stat_result) -> None:
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirError("not a directory")
    if st.st_uid not in (uid, 0):
        raise CacheDirError(f"it belongs to uid {st.st_uid}, not to you (uid {uid})")
    # As for the state directory: others may write in it only if they cannot
    # replace our files (the sticky bit).
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise CacheDirError(f"it is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheDirError("it is not writable")


def open_cache_dir(path: str) -> int:
    """Create the cache directory (0700, its parent too: the XDG spec asks so, but never
    the home itself) and open it; raises CacheDirError naming why it cannot be used."""
    for d in (os.path.dirname(path), path):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except (OSError, ValueError) as exc:
            raise CacheDirError(_why(exc)) from None
    try:
        # A symlinked cache directory (onto a bigger disk) is followed: the owner
        # check is what counts, and the file in it is opened O_NOFOLLOW.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CacheDirError(_why(exc)) from None
    try:
        _check(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def cache_dir_problem(path: str | None) -> str | None:
    """Why a build could not use the cache directory, found without creating it."""
    if path is None:
        return "neither XDG_CACHE_HOME nor HOME is set to an absolute path"
    try:
        if os.path.lexists(path):
            _check(path, os.stat(path))
            return None
        # open_cache_dir makes the directory and its parent, never more.
        base = os.path.dirname(path)
        if not os.path.isdir(base):
            base = os.path.dirname(base)
            if not os.path.isdir(base):
                return f"{base} does not exist"
        if not os.access(base, os.W_OK | os.X_OK):
            return f"{base} is not writable"
    except CacheDirError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return _why(exc)
    return None


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _target_fd(target: str) -> int | None:
    """The target directory, opened to read an older version's copy if it is ours (a
    symlinked target is followed: the owner check is what counts)."""
    if not target:
        return None
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        return None
    return fd


class HistoryStore:
    """This user's history: written in one place (the cache directory, else the state
    directory), read from there over the files older versions wrote."""

    def __init__(
        self,
        state: StateDir,
        *,
        cache: str | None,
        cache_fd: int | None,
        problem: str | None = None,
        target: str = "",
        wanted: str | None = None,
    ) -> None:
        self._state = state
        self.cache = cache  # None: the state directory stands in (``problem`` says why)
        self.wanted = cache or wanted  # the cache directory, used or not
        self._cache_fd = cache_fd  # None with a cache: not made yet (a command only looks)
        self.problem = problem
        self.target = target
        self.name = history_file(os.geteuid())

    @classmethod
    def for_job(
        cls, state: StateDir, target: str = "", environ: Mapping[str, str] | None = None
    ) -> HistoryStore:
        """The store of a guarded job: the cache directory is made if needed; if it
        cannot be, one warning, and the state directory keeps the history."""
        path = cache_dir(environ)
        try:
            if path is None:
                raise CacheDirError(cache_dir_problem(None))
            fd = open_cache_dir(path)
        except CacheDirError as exc:
            store = cls(
                state, cache=None, cache_fd=None, problem=str(exc), target=target, wanted=path
            )
            if not store._told_before():
                warning(store.fallback_line())
            return store
        return cls(state, cache=path, cache_fd=fd, target=target)

    @classmethod
    def for_reading(
        cls, state: StateDir, target: str = "", environ: Mapping[str, str] | None = None
    ) -> HistoryStore:
        """The store as a build would use it, for commands that only look: nothing is
        created and nothing said."""
        path = cache_dir(environ)
        problem = cache_dir_problem(path)
        if problem is not None:
            return cls(
                state, cache=None, cache_fd=None, problem=problem, target=target, wanted=path
            )
        fd = None
        if path is not None and os.path.isdir(path):
            try:
                fd = open_cache_dir(path)
            except CacheDirError as exc:
                problem = str(exc)
                return cls(
                    state, cache=None, cache_fd=None, problem=problem, target=target, wanted=path
                )
        return cls(state, cache=path, cache_fd=fd, target=target)

    def close(self) -> None:
        if self._cache_fd is not None:
            os.close(self._cache_fd)
            self._cache_fd = None

    def _told_before(self) -> bool:
        """Has a job said this already in the state directory's life? Notes it if not."""
        _, fd = self._state()
        if fd is None:
            return False
        name, said = f"{self.name}.fallback", (self.wanted or "").encode()
        try:
            data, st = read_small_file(fd, name)
            if data == said and st.st_uid == os.geteuid():
                return True
        except OSError:
            pass
        try:
            write_private_file(fd, name, said, mode=0o600)
        except OSError:
            pass  # said again next time: better than never
        return False

    def fallback_line(self) -> str:
        state_path, _ = self._state()
        where = self.wanted or "$HOME/.cache/ltoguard"
        return (
            f"cannot keep the memory history in {where}: {self.problem}; keeping it in the"
            f" state directory {state_path} instead (set XDG_CACHE_HOME to a writable"
            " directory to keep it across reboots)"
        )

    # -- where

    def written(self) -> str:
        """The file a peak is recorded in."""
        base = self.cache if self.cache is not None else self._state()[0]
        return os.path.join(base, self.name)

    def read_from(self) -> list[str]:
        """The files read: the written one, then older versions' files that exist."""
        out = [self.written()]
        state_path, state_fd = self._state()
        if self.cache is not None and state_fd is not None and _exists(self.name, state_fd):
            out.append(os.path.join(state_path, self.name))
        fd = _target_fd(self.target)
        if fd is not None:
            try:
                if _exists(TARGET_HISTORY, fd):
                    out.append(os.path.join(self.target, TARGET_HISTORY))
            finally:
                os.close(fd)
        return out

    def describe(self) -> str:
        """One line: where the history is read and written."""
        return where_line(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """For JSON outputs."""
        return {
            "written": self.written(),
            "read": self.read_from(),
            "cache_dir": self.wanted,
            "cache_dir_problem": self.problem,
        }

    # -- what

    def load(self, toolchain: str = "", *, quiet: bool = True) -> History:
        """Everything learned: this store's file over the older ones (for a job in
        several, the entry measured with ``toolchain`` wins, else the newer file's).
        Unusable files count as empty, with one warning each unless ``quiet``."""
        state_path, state_fd = self._state()
        older = History()
        fd = _target_fd(self.target)
        if fd is not None:
            try:
                label = os.path.join(self.target, TARGET_HISTORY)
                older = History.load(TARGET_HISTORY, dir_fd=fd, quiet=quiet, label=label)
            finally:
                os.close(fd)
        label = os.path.join(state_path, self.name)
        state = History()
        if state_fd is not None:
            state = History.load(self.name, dir_fd=state_fd, quiet=quiet, label=label)
        if self.cache is None:
            return state.merged_under(older, toolchain)
        older = state.merged_under(older, toolchain)
        if self._cache_fd is None:
            return older
        label = os.path.join(self.cache, self.name)
        own = History.load(self.name, dir_fd=self._cache_fd, quiet=quiet, label=label)
        return own.merged_under(older, toolchain)

    def record(
        self,
        key: str,
        group: str,
        peak_bytes: int,
        toolchain: str = "",
        inputs: dict[str, int] | None = None,
        curve: Curve | None = None,
    ) -> None:
        """Load, record and save at once, under a brief lock of the directory written.
        Never raises on I/O: a history that cannot be written costs precision, not the
        build. The file it could not write in the cache directory goes to the state
        directory instead."""
        if peak_bytes <= 0:
            return  # a job whose memory could not be sampled says nothing
        # Two jobs ending together would each save their own load: one peak lost.
        lock_dir = self._cache_fd if self._cache_fd is not None else self._state()[1]
        with briefly_locked(lock_dir, RECORD_LOCK_S):
            history = self.load(toolchain)  # quiet: this job warned when it first read
            history.record(key, group, peak_bytes, toolchain, inputs, curve)
            state_path, state_fd = self._state()
            if self._cache_fd is not None:
                try:
                    history.save(self.name, dir_fd=self._cache_fd)
                    return
                except OSError as exc:
                    self.problem = _why(exc)
                    warning(self.fallback_line())
                    self.close()
                    self.cache = None
            try:
                if state_fd is None:
                    raise FileNotFoundError(2, "the state directory does not exist")
                if lock_dir == state_fd:
                    history.save(self.name, dir_fd=state_fd)
                else:  # the cache directory failed: the state directory's writers' lock
                    with briefly_locked(state_fd, RECORD_LOCK_S):
                        history.save(self.name, dir_fd=state_fd)
            except OSError as exc:
                path = os.path.join(state_path, self.name)
                warning(f"cannot write memory history {path}: {_why(exc)}")

    def lookup(
        self,
        key: str,
        group: str,
        *,
        toolchain: str = "",
        inputs: dict[str, int] | None = None,
        predict: Callable[[dict[str, int]], int] | None = None,
        line: Callable[[dict[str, int]], int] | None = None,
        quiet: bool = True,
    ) -> tuple[int, Basis, Curve | None]:
        """The estimate, its basis and the memory curve the job is admitted with
        (History.curve_for), from one read of the history."""
        history = self.load(toolchain, quiet=quiet)
        estimate, basis = history.estimate(
            key, group, DEFAULT_ESTIMATE, toolchain=toolchain, inputs=inputs, predict=predict,
            line=line,
        )  # fmt: skip
        return estimate, basis, history.curve_for(key, group, estimate, basis, toolchain)


def where_line(where: Mapping[str, Any]) -> str:
    """``HistoryStore.as_dict()`` in one line, for doctor, explain and learned."""
    written, *older = where["read"]
    line = f"read from and written to {written}"
    if older:
        line += f"; also read from {', '.join(older)} (older versions kept it there)"
    if where["cache_dir_problem"]:
        cache = where["cache_dir"] or "$HOME/.cache/ltoguard"
        line += f" ({cache} cannot be used: {where['cache_dir_problem']})"
    return line


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True
