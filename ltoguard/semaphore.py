"""A crash-safe, cross-process, FIFO counted semaphore built on flock.

Layout of the state directory (flat, so a shared sticky directory needs no
sub-directories whose permissions could go wrong):

- ``mutex.lock``: held (LOCK_EX) for the few milliseconds an admission decision
  takes, so two waiters never spend the same slot or the same free memory.
- ``slot-K.lock``: a running guarded job holds LOCK_EX on slot K for as long as its
  compile runs. The fd is inherited by rustc and its linker children, so the slot
  stands for the compile, not for the wrapper: if only ltoguard dies, the orphan
  keeps the slot until it ends. The kernel drops it when the last holder dies.
  Lock files are never unlinked (unlinking a held lock file splits waiters across
  inodes). The waiting head probes held slots with LOCK_SH for an instant
  (`_all_held`); a shared lock is never a running job.
- ``q-SEQ-UID-PID.json``: a waiter's ticket, LOCK_EX by its owner while it waits.
  SEQ is CLOCK_MONOTONIC (system-wide) read under the mutex, so tickets sort in
  arrival order. A waiter that is not at the head blocks (LOCK_SH) on the ticket
  just ahead of it: no polling, and it wakes the moment that waiter is admitted,
  leaves or dies. Only the head polls.
- ``run-UID-PID.json``: the record a holder publishes (crate, pid, start...).
  Records are data for display and memory estimates; the slot locks are the truth.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import time

from ltoguard import process
from ltoguard.statedir import (
    StateDirError,
    open_shared_file,
    read_small_file,
    write_private_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Union

    Info = Union[dict[str, Any], Callable[[], dict[str, Any]]]

MUTEX = "mutex.lock"
HEAD_POLL = 0.05  # seconds; a freed slot is noticed within this (issue #2: < 100 ms)
# A head told "no" re-decides at once when a slot it saw held is freed, else at
# least this often (memory moves, a ticket may have re-entered ahead). Between
# decisions it only probes those slots: a flock call each, instead of the mutex,
# a directory listing and every record (issue #2: a waiter uses <= 1% CPU).
FULL_RECHECK = 0.5

_NO_LOCKS = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}


def _no_locks_error(path: str, exc: OSError) -> StateDirError:
    return StateDirError(
        f"the filesystem of {path} does not support file locks ({exc.strerror});"
        " set LTOGUARD_DIR to a directory on a local filesystem"
    )


class StateDirGone(StateDirError):
    """The state directory was removed while we used it (e.g. `rm -rf /tmp/...` mid-build)."""


def printable(value: object, limit: int = 64) -> str:
    """A record's text as one safe line: records may come from other users (shared dir)."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return text + ("..." if len(value) > limit else "")


def _all_held(fds: list[int]) -> bool:
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


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Non-blocking flock. Exclusive locks (slots, the mutex's peers) go through
    filelock's descriptor API, the same primitive as its UnixFileLock; it raises on
    a filesystem without flock (ENOSYS) instead of falling back to a soft lock, and
    the callers turn that into an error: never run unguarded. filelock has no
    shared mode, so ticket probes (LOCK_SH) use fcntl directly."""
    if not shared:
        from filelock import lock_descriptor

        return bool(lock_descriptor(fd, blocking=False))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _fields(info: Info) -> dict[str, Any]:
    """A ticket's fields: a dict, or read from the caller's record each time, so the
    run record written at admission holds what the policy decided on (its estimate)."""
    return info() if callable(info) else info


def slot_name(k: int) -> str:
    return f"slot-{k}.lock"


class Ticket:
    __slots__ = ("fd", "name", "seq")

    def __init__(self, fd: int, name: str, seq: int) -> None:
        self.fd = fd
        self.name = name
        self.seq = seq


class Slot:
    """A held slot: the lock fd (to be inherited by the child), our record, our queue position."""

    __slots__ = ("fd", "index", "record_name", "info", "seq", "sigmask")

    def __init__(
        self, fd: int, index: int, record_name: str, info: dict[str, Any], seq: int = 0
    ) -> None:
        self.fd = fd
        self.index = index
        self.record_name = record_name
        self.info = info
        self.seq = seq
        self.sigmask: set[int | signal.Signals] | None = None  # see Semaphore.acquire


class Holder:
    """A running guarded job as another process sees it."""

    __slots__ = ("slot", "record")

    def __init__(self, slot: int, record: dict[str, Any] | None) -> None:
        self.slot = slot
        self.record = record

    def describe(self, now: float) -> str:
        rec = self.record
        if rec is None:
            return f"slot {self.slot} (no record)"
        crate = printable(rec.get("crate")) or "?"
        started = rec.get("started")
        age = f", {now - started:.0f}s" if isinstance(started, (int, float)) else ""
        pid = rec.get("pid")
        return f"{crate} (pid {pid if isinstance(pid, int) else '?'}{age})"


class Snapshot:
    """What an admission decision sees, taken under the mutex."""

    __slots__ = ("holders", "free_slots", "waiters_ahead")

    def __init__(self, holders: list[Holder], free_slots: list[int], waiters_ahead: int) -> None:
        self.holders = holders
        self.free_slots = free_slots
        self.waiters_ahead = waiters_ahead

    @property
    def running(self) -> int:
        return len(self.holders)


def slot_limit_policy(limit: int) -> Callable[[Snapshot], tuple[bool, str]]:
    def admit(snap: Snapshot) -> tuple[bool, str]:
        if snap.running < limit:
            return True, f"{snap.running} of {limit} slots in use"
        plural = "slot" if limit == 1 else "slots"
        return False, f"all {limit} {plural} in use"

    return admit


class Semaphore:
    def __init__(self, path: str, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.uid = os.geteuid()
        self.pid = os.getpid()

    # -- the mutex ---------------------------------------------------------------

    def _lock_mutex(self) -> int:
        fd = open_shared_file(self.dir_fd, MUTEX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                raise _no_locks_error(self.path, exc) from None
            raise
        except BaseException:
            os.close(fd)
            raise
        return fd

    class _Mutex:
        def __init__(self, sem: Semaphore) -> None:
            self.sem = sem
            self.fd = -1

        def __enter__(self) -> None:
            self.fd = self.sem._lock_mutex()

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

    def mutex(self) -> Semaphore._Mutex:
        return Semaphore._Mutex(self)

    # -- listing -----------------------------------------------------------------

    def _names(self) -> list[str]:
        return os.listdir(self.dir_fd)

    def _slot_indices(self, names: list[str]) -> list[int]:
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

    def _probe_slots(
        self, names: list[str], keep: int | None = None
    ) -> tuple[list[int], list[int], dict[int, int]]:
        """Return (held, free, kept) where kept maps free slot index -> locked fd (at most `keep` kept)."""
        held: list[int] = []
        free: list[int] = []
        kept: dict[int, int] = {}
        for k in self._slot_indices(names):
            try:
                fd = open_shared_file(self.dir_fd, slot_name(k))
            except (OSError, StateDirError):
                continue
            try:
                got = try_lock(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _NO_LOCKS:
                    raise _no_locks_error(self.path, exc) from None
                raise
            if not got:
                # A holder locks its slot exclusively; a shared lock is only a
                # waiting head's probe (_all_held), which must not count as a job.
                if try_lock(fd, shared=True):
                    free.append(k)
                else:
                    held.append(k)
                os.close(fd)
            else:
                free.append(k)
                if keep is not None and len(kept) < keep:
                    kept[k] = fd
                else:
                    os.close(fd)
        return held, free, kept

    def read_records(self, names: list[str] | None = None) -> dict[int, dict[str, Any]]:
        """Valid-looking records by slot index. Forged or stale ones are dropped."""
        if names is None:
            names = self._names()
        by_slot: dict[int, dict[str, Any]] = {}
        for n in names:
            if not (n.startswith("run-") and n.endswith(".json")):
                continue
            parts = n[4:-5].split("-")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                continue
            uid, pid = int(parts[0]), int(parts[1])
            try:
                data, st = read_small_file(self.dir_fd, n)
                rec = json.loads(data)
            except (OSError, ValueError, RecursionError):
                continue
            # A record claims to be uid's: only uid can have written it.
            if not isinstance(rec, dict) or st.st_uid != uid or rec.get("pid") != pid:
                continue
            slot = rec.get("slot")
            if not isinstance(slot, int):
                continue
            prev = by_slot.get(slot)
            started = rec.get("started")
            if not isinstance(started, (int, float)):
                continue
            if prev is None or started > prev["started"]:
                by_slot[slot] = rec
        return by_slot

    def tickets(self, names: list[str] | None = None) -> list[tuple[int, str]]:
        if names is None:
            names = self._names()
        out = []
        for n in names:
            if n.startswith("q-") and n.endswith(".json"):
                parts = n[2:-5].split("-")
                if len(parts) == 3 and all(p.isdigit() for p in parts):
                    out.append((int(parts[0]), n))
        out.sort()
        return out

    def _ticket_alive(self, name: str) -> bool | None:
        """True if a live waiter holds it, False if dead, None if it vanished."""
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.dir_fd
            )
        except OSError:
            return None
        try:
            return not try_lock(fd, shared=True)
        finally:
            os.close(fd)

    def _live_tickets_before(self, mine: Ticket, names: list[str]) -> list[str]:
        live = []
        for seq, name in self.tickets(names):
            if (seq, name) >= (mine.seq, mine.name):
                break
            alive = self._ticket_alive(name)
            if alive:
                live.append(name)
            elif alive is False and name.split("-")[2] == str(self.uid):
                # Our own user's dead waiter (kill -9): tidy up. Safe under the mutex.
                self._unlink(name)
        return live

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.dir_fd)
        except OSError:
            pass

    # -- snapshot ------------------------------------------------------------------

    def snapshot(self, names: list[str] | None = None) -> Snapshot:
        """Running holders and free slots; call with the mutex held for a consistent view."""
        if names is None:
            names = self._names()
        held, free, _ = self._probe_slots(names)
        records = self.read_records(names)
        holders = [Holder(k, records.get(k)) for k in held]
        return Snapshot(holders, free, 0)

    # -- acquire / release ---------------------------------------------------------

    def _enqueue(self, info: Info, seq: int | None) -> Ticket:
        if seq is None:
            seq = time.monotonic_ns()
        name = f"q-{seq:020d}-{self.uid}-{self.pid}.json"
        fd = os.open(
            name,
            os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=self.dir_fd,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, 0o644)
            try:
                os.write(fd, json.dumps(_fields(info)).encode())
            except OSError:
                pass  # a full disk: the ticket's content is for display; its lock is what counts
        except BaseException:
            os.close(fd)
            self._unlink(name)
            raise
        return Ticket(fd, name, seq)

    def _drop_ticket(self, t: Ticket) -> None:
        # Unlink first, then close: a successor blocked on our lock wakes on close
        # and rescans a queue that no longer lists us.
        self._unlink(t.name)
        os.close(t.fd)

    def acquire(
        self,
        info: Info,
        admit: Callable[[Snapshot], tuple[bool, str]],
        on_wait: Callable[[Snapshot, str], None] | None = None,
        *,
        seq: int | None = None,
        poll: float = HEAD_POLL,
        gate: Callable[[bool], bool] | None = None,
        hold_signals: bool = False,
    ) -> Slot:
        """Wait in FIFO order until `admit` says yes, then hold a slot.

        `seq` re-enters the queue at an earlier position (a job stopped to save memory
        goes back to the head). `gate(is_head)` runs before every admission attempt;
        returning False defers it (the jobserver lease uses it to lend its token while
        queued and take it back at the head).

        A waiter is interrupted by a signal whose handler raises. Such signals are
        held back (blocked) while a ticket or a slot changes hands, so an interruption
        never leaves a ticket or a record behind. With `hold_signals` they are still
        blocked when the slot is returned; `slot.sigmask` is the mask to restore once
        the caller has the slot in hand.
        """
        mask: set[int | signal.Signals] | None = None
        ticket: Ticket | None = None
        got: Slot | None = None
        probes: list[int] = []  # the slots held at the last "no", to notice one freed
        try:
            with self.mutex():  # not blocked while waiting for it: Ctrl-C still works
                mask = process.hold_signals()
                ticket = self._enqueue(info, seq)
            process.restore_signals(mask)  # a signal held back meanwhile raises here
            got = self._wait_in_line(ticket, info, admit, on_wait, poll, gate, mask, probes)
        except BaseException as exc:
            if ticket is not None:
                self._drop_ticket(ticket)
            if mask is not None:
                process.restore_signals(mask)
            if isinstance(exc, OSError):
                self._raise_if_gone(exc)
            raise
        finally:
            _close_all(probes)
        assert mask is not None
        if hold_signals:
            got.sigmask = mask
        else:
            try:
                process.restore_signals(mask)
            except BaseException:
                self.release(got)
                raise
        return got

    def _wait_in_line(
        self,
        ticket: Ticket,
        info: Info,
        admit: Callable[[Snapshot], tuple[bool, str]],
        on_wait: Callable[[Snapshot, str], None] | None,
        poll: float,
        gate: Callable[[bool], bool] | None,
        mask: set[int | signal.Signals],
        probes: list[int],
    ) -> Slot:
        """The queue loop. Returns with the forwarded signals blocked and the ticket
        gone; raises with the ticket still there (the caller drops it)."""
        announced = False
        decided = 0.0
        while True:
            if probes:
                if time.monotonic() - decided < FULL_RECHECK and _all_held(probes):
                    time.sleep(poll)
                    continue
                _close_all(probes)
            pred: str | None = None
            with self.mutex():
                names = self._names()
                ahead = self._live_tickets_before(ticket, names)
                if not ahead and gate is not None and not gate(True):
                    snap = self.snapshot(names)
                    reason = "taking a jobserver token back"
                elif ahead:
                    pred = ahead[-1]
                    snap = self.snapshot(names)
                    snap.waiters_ahead = len(ahead)
                    reason = f"{len(ahead)} waiting ahead"
                else:
                    process.hold_signals()
                    slot = self._try_admit(names, info, admit)
                    if isinstance(slot, Slot):
                        self._drop_ticket(ticket)
                        slot.seq = ticket.seq
                        return slot
                    snap, reason = slot
                    decided = time.monotonic()
                    probes[:] = self._open_slots([h.slot for h in snap.holders])
            process.restore_signals(mask)
            if not announced and on_wait is not None:
                on_wait(snap, reason)
                announced = True
            if pred is not None and gate is not None:
                gate(False)
            if pred is not None:
                self._wait_for(pred)
            else:
                time.sleep(poll)

    def _open_slots(self, indices: list[int]) -> list[int]:
        fds = []
        for k in indices:
            try:
                fds.append(open_shared_file(self.dir_fd, slot_name(k)))
            except (OSError, StateDirError):
                _close_all(fds)
                return []  # no shortcut: decide in full every poll
        return fds

    def gone(self) -> bool:
        try:
            return os.fstat(self.dir_fd).st_nlink == 0
        except OSError:
            return True

    def _raise_if_gone(self, exc: OSError) -> None:
        if self.gone():
            raise StateDirGone(f"state directory {self.path} was removed") from exc

    def _wait_for(self, name: str) -> None:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.dir_fd
            )
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def _try_admit(
        self, names: list[str], info: Info, admit: Callable[[Snapshot], tuple[bool, str]]
    ) -> Slot | tuple[Snapshot, str]:
        held, free, kept = self._probe_slots(names, keep=1)
        records = self.read_records(names)
        snap = Snapshot([Holder(k, records.get(k)) for k in held], free, 0)
        try:
            ok, reason = admit(snap)
            if not ok:
                return snap, reason
            if kept:
                index, fd = next(iter(kept.items()))
                kept.clear()
            else:
                index, fd = self._new_slot(held)
            fields = dict(
                _fields(info),
                slot=index,
                pid=self.pid,
                uid=self.uid,
                started=time.time(),
                reason=reason,
            )
            record_name = f"run-{self.uid}-{self.pid}.json"
            try:
                self._drop_stale_records(names, held)
                write_private_file(self.dir_fd, record_name, json.dumps(fields).encode())
            except OSError:
                pass  # a full disk: the record is for display; the slot lock is what counts
            except BaseException:
                os.close(fd)
                raise
            return Slot(fd, index, record_name, fields)
        finally:
            for fd in kept.values():
                os.close(fd)

    def _drop_stale_records(self, names: list[str], held: list[int]) -> None:
        """Remove our user's records whose slot is free (holders killed with -9). Under the mutex."""
        prefix = f"run-{self.uid}-"
        for n in names:
            if (
                not (n.startswith(prefix) and n.endswith(".json"))
                or n == f"{prefix}{self.pid}.json"
            ):
                continue
            try:
                data, _st = read_small_file(self.dir_fd, n)
                slot = json.loads(data).get("slot")
            except (OSError, ValueError, RecursionError, AttributeError):
                slot = None
            if slot not in held:
                self._unlink(n)

    def _new_slot(self, held: list[int]) -> tuple[int, int]:
        # Free slots reach here unkept only when a probe's shared lock was on them
        # (_probe_slots): try them again (a probe lasts microseconds), then new ones.
        used = set(held)
        k = 0
        while True:
            while k in used:
                k += 1
            fd = open_shared_file(self.dir_fd, slot_name(k))
            if try_lock(fd):
                return k, fd
            # Held by someone we did not see (created after our listing): skip it.
            os.close(fd)
            used.add(k)

    def release(self, slot: Slot) -> None:
        self._unlink(slot.record_name)
        try:
            os.close(slot.fd)
        except OSError:
            pass

    def queue(self) -> list[dict[str, Any]]:
        """Live waiters in order, for status displays."""
        out = []
        for _seq, name in self.tickets():
            if not self._ticket_alive(name):
                continue
            try:
                data, _st = read_small_file(self.dir_fd, name)
                rec = json.loads(data)
            except (OSError, ValueError, RecursionError):
                rec = {}
            if isinstance(rec, dict):
                out.append(rec)
        return out
