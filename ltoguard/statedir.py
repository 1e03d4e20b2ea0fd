"""The state directory: where slot locks, the queue, holder records and the event log live
(what must not outlive a boot; the memory history is kept in the cache directory,
history.py, and here only where that cannot be used).

It is opened once as a directory fd and every file in it is opened relative to that
fd with O_NOFOLLOW, so a symlink planted in the directory (or the directory swapped
for another after the checks) cannot redirect a write.
"""

from __future__ import annotations

import errno
import os
import stat


class StateDirError(Exception):
    """The state directory cannot be used; the message names what to fix."""


def default_path() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "ltoguard")
    # Imported here: a job under LTOGUARD_DIR or XDG_RUNTIME_DIR does not pay for it.
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"ltoguard-{os.geteuid()}")


def check_dir_stat(path: str, st: os.stat_result, uid: int) -> None:
    """Refuse a directory another user could tamper with.

    Allowed: ours and writable only by us; ours or root's with the sticky bit
    (a shared directory an administrator prepared: with the sticky bit nobody can
    delete or rename another user's files in it).
    """
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(
            f"state directory {path} is a symlink; point LTOGUARD_DIR at a real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(
            f"state directory {path} is not a directory; set LTOGUARD_DIR to a directory"
        )
    if st.st_uid not in (uid, 0):
        raise StateDirError(
            f"state directory {path} belongs to uid {st.st_uid}, not to you (uid {uid}) or root;"
            " remove it or set LTOGUARD_DIR to a directory you own"
        )
    shared_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if shared_write and not st.st_mode & stat.S_ISVTX:
        raise StateDirError(
            f"state directory {path} is writable by other users without the sticky bit"
            f" (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod o-w,g-w {path}`"
            f" or, for a directory shared between users, `chmod +t {path}`"
        )
    if st.st_uid == 0 and uid != 0 and not shared_write:
        # Root's private directory: we could not create our files in it anyway.
        raise StateDirError(
            f"state directory {path} belongs to root and is not writable by you;"
            f" an administrator can share it with `chmod 1777 {path}`"
        )


def check_state_dir(path: str | None = None) -> str:
    """What a build would say of the state directory, without creating it: raises
    StateDirError with the same message `open_state_dir` would; returns the path.
    A directory that does not exist yet is fine if a build could create it."""
    explicit = bool(path)
    path = os.path.abspath(path or default_path())
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(path)):
            what = "LTOGUARD_DIR" if explicit else "the default state directory"
            raise StateDirError(
                f"cannot create {what} {path}: its parent directory does not exist"
            ) from None
        return path
    except OSError as exc:
        raise StateDirError(f"cannot inspect state directory {path}: {exc.strerror}") from None
    check_dir_stat(path, st, os.geteuid())
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(
            f"state directory {path} is not writable; fix its permissions or set LTOGUARD_DIR"
        )
    return path


def open_state_dir(path: str | None = None) -> tuple[str, int]:
    """Create (0700) or validate the state directory and return (path, dir_fd)."""
    explicit = bool(path)
    path = path or default_path()
    path = os.path.abspath(path)
    uid = os.geteuid()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        what = "LTOGUARD_DIR" if explicit else "the default state directory"
        raise StateDirError(
            f"cannot create {what} {path}: its parent directory does not exist"
        ) from None
    except OSError as exc:
        raise StateDirError(
            f"cannot create state directory {path}: {exc.strerror}; set LTOGUARD_DIR to a writable directory"
        ) from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise StateDirError(f"cannot inspect state directory {path}: {exc.strerror}") from None
    check_dir_stat(path, st, uid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateDirError(f"cannot open state directory {path}: {exc.strerror}") from None
    # The directory we opened must be the one we checked (no swap in between).
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise StateDirError(f"state directory {path} changed while it was being opened; try again")
    if not os.access(path, os.W_OK | os.X_OK):
        os.close(fd)
        raise StateDirError(
            f"state directory {path} is not writable; fix its permissions or set LTOGUARD_DIR"
        )
    return path, fd


def open_shared_file(dir_fd: int, name: str, *, mode: int = 0o644) -> int:
    """Open (creating if needed) a lock file that every user of the directory shares.

    Read-only is enough for flock. Opening an existing file without O_CREAT first
    matters: with fs.protected_regular, O_CREAT on another user's file in a sticky
    directory fails even when the file exists.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for _ in range(5):
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
            except FileExistsError:
                continue
            os.fchmod(fd, mode)  # umask must not make it unreadable for other users
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateDirError(
                    f"{name} in the state directory is a symlink, which ltoguard never follows;"
                    " remove it"
                ) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise StateDirError(f"{name} in the state directory is not a regular file; remove it")
        return fd
    raise StateDirError(
        f"{name} in the state directory keeps disappearing; is something deleting it?"
    )


def write_private_file(
    dir_fd: int | None, name: str, data: bytes, *, mode: int = 0o644, durable: bool = False
) -> None:
    """Atomically replace our own file `name` (relative to `dir_fd`, or a path).

    Written to a temp file and renamed: the rename replaces a symlink at `name`
    itself and never writes through one; readers never see half a file. `durable`
    fsyncs before the rename (the memory history: worth keeping across a crash).
    """
    head, base = os.path.split(name)
    tmp = os.path.join(head, f".tmp-{os.getpid()}-{os.urandom(4).hex()}-{base}")
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
    try:
        try:
            os.fchmod(fd, mode)  # not narrowed by the umask: others read records
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(dir_fd, tmp)
        raise


def read_small_file(dir_fd: int, name: str, limit: int = 1 << 16) -> tuple[bytes, os.stat_result]:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{name} is not a regular file")
        return os.read(fd, limit), st
    finally:
        os.close(fd)


def unlink_quietly(dir_fd: int | None, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
