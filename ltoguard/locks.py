"""The flock locks of the state directory: the mutex, the slots, and probes of them;
and the brief lock of a directory a file is rewritten in (`briefly_locked`: the
memory history's, in the cache or the state directory), which is advice only.

Locks are flock-style, so the kernel drops them when a holder dies, and lock files
are never unlinked (a new file beside the old one's holders would split them into
two locks). A filesystem without flock is an error that names LTOGUARD_DIR:
ltoguard never falls back to running unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from ltoguard.statedir import StateDirError, open_shared_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

MUTEX = "mutex.lock"

_NO_LOCKS = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}


def no_locks_error(path: str, exc: OSError) -> StateDirError:
    return StateDirError(
        f"the filesystem of {path} does not support file locks ({exc.strerror});"
        " set LTOGUARD_DIR to a directory on a local filesystem"
    )


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Non-blocking flock, exclusive (a job's slot) or shared (probes). Any error but
    "held" is raised (ENOSYS and the like on a filesystem without flock), and the
    callers turn it into an error: never run unguarded.

    fcntl directly: filelock's UnixFileLock is this same call, and importing filelock
    would be a large share of what an admitted job costs in CPU and memory."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def briefly_locked(dir_fd: int | None, seconds: float) -> Iterator[None]:
    """Hold an exclusive flock on the directory `dir_fd` (through an fd of its own)
    for a short read-modify-write of a file in it, such as the memory history. Polls
    for up to `seconds`, then goes on unlocked, as it does where the filesystem has
    no locks: the holder might be stopped (SIGSTOP, a debugger), and the build must
    not wait on it."""
    fd = None
    try:
        if dir_fd is not None:
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
                deadline = time.monotonic() + seconds
                while not try_lock(fd) and time.monotonic() < deadline:
                    time.sleep(0.005)
            except OSError:
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # lets the lock go (a signal raised while polling included)


def lock_mutex(dir_fd: int, path: str) -> int:
    """Block until the state directory's mutex is ours; close the fd to let it go."""
    fd = open_shared_file(dir_fd, MUTEX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _NO_LOCKS:
            raise no_locks_error(path, exc) from None
        raise
    except BaseException:
        os.close(fd)
        raise
    return fd


def all_held(fds: list[int]) -> bool:
    """Whether every one of these slot locks is still held by someone.

    A free one is locked (shared) for an instant and let go at once: to anyone
    probing in that instant the slot looks held, which can only delay them."""
    for fd in fds:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    return True


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def exclusively_held(dir_fd: int, name: str) -> bool | None:
    """Whether someone holds `name` locked (a live waiter's ticket): None if it vanished."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        return not try_lock(fd, shared=True)
    finally:
        os.close(fd)


def wait_until_free(dir_fd: int, name: str) -> None:
    """Block until nobody holds `name` exclusively (or it is gone): a waiter's wait
    for the one ahead of it, which wakes it the moment that one is admitted or dies."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


# -- slots -------------------------------------------------------------------------


def slot_name(k: int) -> str:
    return f"slot-{k}.lock"


def slot_indices(names: list[str]) -> list[int]:
    out = []
    for n in names:
        if n.startswith("slot-") and n.endswith(".lock"):
            try:
                k = int(n[5:-5])
            except ValueError:
                continue
            if 0 <= k < 100000 and n == slot_name(k):
                out.append(k)
    return sorted(out)


def probe_slots(dir_fd: int, path: str, names: list[str]) -> tuple[list[int], list[int]]:
    """Return (held, free): a slot is held while a job holds it exclusively. The probe
    is a shared lock, let go at once; another shared lock on it is only a waiting
    head's probe (all_held), which must not count as a job."""
    held: list[int] = []
    free: list[int] = []
    for k in slot_indices(names):
        try:
            fd = open_shared_file(dir_fd, slot_name(k))
        except (OSError, StateDirError):
            continue
        try:
            (free if try_lock(fd, shared=True) else held).append(k)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                raise no_locks_error(path, exc) from None
            raise
        finally:
            os.close(fd)
    return held, free


def open_slots(dir_fd: int, indices: list[int]) -> list[int]:
    """Unlocked fds of these slots, for all_held; [] if any cannot be opened."""
    fds: list[int] = []
    for k in indices:
        try:
            fds.append(open_shared_file(dir_fd, slot_name(k)))
        except (OSError, StateDirError):
            close_all(fds)
            return []  # no shortcut: decide in full every poll
    return fds


def take_new_slot(dir_fd: int, held: list[int]) -> tuple[int, int]:
    """Lock the lowest slot not in `held`, creating its file if need be: (index, fd).
    Called under the mutex, so no other job takes a slot meanwhile; a slot that a
    waiting head's probe holds shared for an instant is skipped for the next one."""
    used = set(held)
    k = 0
    while True:
        while k in used:
            k += 1
        fd = open_shared_file(dir_fd, slot_name(k))
        if try_lock(fd):
            return k, fd
        # Held by someone we did not see (created after our listing): skip it.
        os.close(fd)
        used.add(k)
