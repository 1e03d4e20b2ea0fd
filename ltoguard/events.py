"""The event log: one JSON line per finished guarded invocation.

``events-UID.jsonl`` in the state directory, one file per user so that in a
shared (sticky) directory nobody writes into another user's file, and a reader
can trust a file only if its owner is the uid in its name. Above ``MAX_BYTES``
the file is renamed to ``events-UID.1.jsonl`` (replacing the previous one): the
log stays bounded at about twice that without a daemon or a lock held across
writes.

guard.py imports this module on the guarded path, so it imports only small standard
modules. Writing the log must never cost a build, so ``append_event`` never raises.

Record fields (``jobs.JobRecord.event``, plus ``attempts`` from guard.py; schema
version ``"v": 1``; readers must tolerate any of them missing, as older logs lack
the later ones): kind, crate, types, lto, workspace (older logs may say cwd
instead), pid, queued, admitted, finished, waited, paused_s (seconds its compile
was paused to leave room for older jobs), peak, estimate, estimate_basis, exit,
reruns, requeues, outcome, budget, available_at_admit, samples, mem_source,
physical, build (the cargo run it belongs to), guard_cpu_s and compile_cpu_s (CPU
seconds of the guard process itself and of the compiles it reaped), attempts
([queued, admitted, ended, paused_s, next step] per admission, shorter for one cut
short), pauses ([paused, resumed] times of the last 20 pauses, when it was paused),
and, when the cold estimate read them, inputs and profile.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

MAX_BYTES = 4 * 1024 * 1024
# A reader refuses to slurp more than this from one file: the writer rotates at
# MAX_BYTES, so anything much larger is not ours to trust with our memory.
READ_LIMIT = 64 * 1024 * 1024

# Consecutive jobs belong to one build while the next is queued less than this
# long after the jobs so far have finished (for events that do not name their build).
BUILD_GAP = 60.0
SERIALISED_WAIT = 0.5  # seconds; a job that waited longer was held back by the gate

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def current_name(uid: int) -> str:
    return f"events-{uid}.jsonl"


def rotated_name(uid: int) -> str:
    return f"events-{uid}.1.jsonl"


def _warn(reason: str) -> None:
    try:
        sys.stderr.write(f"ltoguard: warning: cannot write event log: {reason}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _reason(name: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{name} is a symlink"
    return f"{name}: {exc.strerror or exc}"


def _open_append(dir_fd: int, name: str) -> int:
    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def _rotate_if_large(dir_fd: int, uid: int, fd: int) -> int:
    """Rotate a full log, returning the fd to write to (``fd`` itself or a fresh file).

    Under an flock on the open file, and only if the name still points at the
    inode we hold: two writers racing to rotate must not rename a fresh, small
    file over the one just rotated. A writer that appends to the old inode after
    the rename lands in the ``.1`` file: nothing is lost.
    """
    st = os.fstat(fd)
    if st.st_size < MAX_BYTES:
        return fd
    name = current_name(uid)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and now.st_size >= MAX_BYTES:
            os.rename(name, rotated_name(uid), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # someone else rotated it
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return _open_append(dir_fd, name)


def append_event(dir_fd: int, uid: int, event: dict[str, Any]) -> None:
    """Append one record. Never raises: a full disk costs the log, not the build."""
    name = current_name(uid)
    try:
        line = (json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        _warn(f"record is not JSON ({exc})")
        return
    try:
        fd = _open_append(dir_fd, name)
    except OSError as exc:
        _warn(_reason(name, exc))
        return
    try:
        fd = _rotate_if_large(dir_fd, uid, fd)
        # One write() per line: O_APPEND places it atomically at the end, so lines
        # from concurrent jobs do not interleave.
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        _warn(_reason(name, exc))
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def _read_lines(dir_fd: int, name: str, uid: int | None) -> list[dict[str, Any]]:
    try:
        fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError:
        return []  # missing, or a symlink (ELOOP): not ours to read
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return []
        # In a shared directory only `uid` can have written a file it owns.
        if uid is not None and st.st_uid != uid:
            return []
        chunks = []
        left = READ_LIMIT
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    out = []
    for raw in b"".join(chunks).splitlines():
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a torn or foreign line must not hide the rest
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _log_uids(dir_fd: int) -> list[int]:
    uids = set()
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return []
    for n in names:
        if n.startswith("events-") and n.endswith(".jsonl"):
            stem = n[len("events-") : -len(".jsonl")]
            if stem.endswith(".1"):
                stem = stem[:-2]
            if stem.isdigit():
                uids.add(int(stem))
    return sorted(uids)


def read_events(dir_fd: int, uid: int | None = None) -> list[dict[str, Any]]:
    """Every readable record (of ``uid``, or of every user if None), oldest first.

    Tolerant: unreadable files, symlinks, bad lines and non-object lines are
    skipped. Records are sorted by the time they were queued (then finished), so
    logs of several users merge into one timeline.
    """
    out: list[dict[str, Any]] = []
    for u in [uid] if uid is not None else _log_uids(dir_fd):
        out += _read_lines(dir_fd, rotated_name(u), u)
        out += _read_lines(dir_fd, current_name(u), u)
    out.sort(key=lambda e: (start_time(e), num(e, "finished") or 0.0))
    return out


# ---------------------------------------------------------------------------
# Tolerant field access and build grouping, shared by `report` and `learned`.


def num(event: dict[str, Any], key: str) -> float | None:
    v = event.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def text(event: dict[str, Any], key: str, default: str = "") -> str:
    v = event.get(key)
    return v if isinstance(v, str) else default


def start_time(event: dict[str, Any]) -> float:
    for key in ("queued", "admitted", "finished"):
        v = num(event, key)
        if v is not None:
            return v
    return 0.0


def end_time(event: dict[str, Any]) -> float:
    v = num(event, "finished")
    return v if v is not None else start_time(event)


def waited(event: dict[str, Any]) -> float:
    """Seconds the job waited for admission (from the times if the field is missing)."""
    w = num(event, "waited")
    if w is not None:
        return max(0.0, w)
    q, a = num(event, "queued"), num(event, "admitted")
    return max(0.0, a - q) if q is not None and a is not None else 0.0


def in_workspace(event: dict[str, Any], path: str) -> bool:
    """True if the event's workspace (cwd in older logs) is ``path``, inside it, or contains it.

    Both directions: a report asked for from a member's directory finds the
    workspace's jobs, and one asked for at the root finds jobs recorded with a
    member's directory.
    """
    path = path.rstrip("/") or "/"
    for key in ("workspace", "cwd"):
        v = text(event, key).rstrip("/")
        if not v:
            continue
        if v == path or v.startswith(path + "/") or path.startswith(v + "/"):
            return True
    return False


def group_builds(
    events: Iterable[dict[str, Any]], gap: float = BUILD_GAP
) -> list[list[dict[str, Any]]]:
    """Split events (of one workspace) into builds, oldest first.

    A build is one cargo invocation: events that name the same cargo process
    (``build``, its pid and start time) belong together however far apart. Events
    without it (older logs, `ltoguard run` outside cargo) fall back to time: a new
    build starts when a job is queued ``gap`` seconds or more after every job so
    far has finished.
    """
    by_cargo: dict[str, list[dict[str, Any]]] = {}
    loose: list[dict[str, Any]] = []
    for e in events:
        build = text(e, "build")
        if build:
            by_cargo.setdefault(build, []).append(e)
        else:
            loose.append(e)
    builds = list(by_cargo.values()) + _by_time(loose, gap)
    for b in builds:
        b.sort(key=start_time)
    builds.sort(key=lambda b: (start_time(b[0]), end_time(b[-1])))
    return builds


def _by_time(events: list[dict[str, Any]], gap: float) -> list[list[dict[str, Any]]]:
    builds: list[list[dict[str, Any]]] = []
    last_end = 0.0
    for ev in sorted(events, key=start_time):
        if not builds or start_time(ev) - last_end >= gap:
            builds.append([])
            last_end = end_time(ev)
        builds[-1].append(ev)
        last_end = max(last_end, end_time(ev))
    return builds


def kind_of(event: dict[str, Any]) -> str:
    """What the job built: bin, test, cdylib, staticlib (a compile), run or link."""
    kind = text(event, "kind", "?")
    if kind != "rustc":
        return kind
    types = event.get("types")
    names = [t for t in types if isinstance(t, str)] if isinstance(types, list) else []
    if "test" in names:
        return "test"
    return ",".join(names) or "bin"


def summarize(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over some events: jobs, waiting, serialised jobs, reruns, requeues, outcomes."""
    evs = list(events)
    waits = [waited(e) for e in evs]
    outcomes: dict[str, int] = {}
    for e in evs:
        o = text(e, "outcome", "unknown")
        outcomes[o] = outcomes.get(o, 0) + 1
    return {
        "jobs": len(evs),
        "total_wait": sum(waits),
        "serialised": sum(1 for w in waits if w > SERIALISED_WAIT),
        "oom_reruns": int(sum(num(e, "reruns") or 0 for e in evs)),
        "requeues": int(sum(num(e, "requeues") or 0 for e in evs)),
        "outcomes": outcomes,
        "first": min((start_time(e) for e in evs), default=None),
        "last": max((end_time(e) for e in evs), default=None),
    }
