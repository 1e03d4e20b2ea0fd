"""What the state directory's JSON files say: holders' run records and waiters' tickets.

Records are data for display, memory estimates and a rerun's ``alone``; the slot
locks are the truth. A shared directory holds other users' files, so every one is
read with a size cap, a record or ticket is believed only if its file belongs to the
uid its name claims, and text from it is shown only through `printable`.
"""

from __future__ import annotations

import fcntl
import json
import os

from ltoguard import locks
from ltoguard.statedir import read_small_file, unlink_quietly
from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def printable(value: object, limit: int = 64) -> str:
    """A record's text as one safe line: records may come from other users (shared dir)."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return text + ("..." if len(value) > limit else "")


@struct
class Holder:
    """A running guarded job as another process sees it: its slot and its record, if any."""

    slot: int
    record: dict[str, Any] | None

    @property
    def run(self) -> str:
        """Which run holds the slot ("PID-STARTED"): the next job often takes a freed
        slot at once, and the slot's number alone would not tell them apart."""
        rec = self.record or {}
        return f"{rec.get('pid')}-{rec.get('started')}"

    def describe(self, now: float) -> str:
        rec = self.record
        if rec is None:
            return f"slot {self.slot} (no record)"
        crate = printable(rec.get("crate")) or "?"
        started = rec.get("started")
        age = f", {now - started:.0f}s" if isinstance(started, (int, float)) else ""
        pid = rec.get("pid")
        return f"{crate} (pid {pid if isinstance(pid, int) else '?'}{age})"


# -- run records ---------------------------------------------------------------------


def record_name(uid: int, pid: int) -> str:
    return f"run-{uid}-{pid}.json"


def read_records(dir_fd: int, names: list[str]) -> dict[int, dict[str, Any]]:
    """Valid-looking records by slot index (the newest per slot). Forged or stale ones are dropped."""
    by_slot: dict[int, dict[str, Any]] = {}
    for n in names:
        claim = claimed_by(n) if n.startswith("run-") else None
        if claim is None:
            continue
        uid, pid = claim
        try:
            data, st = read_small_file(dir_fd, n)
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


def stale_records(dir_fd: int, names: list[str], uid: int, pid: int, held: list[int]) -> list[str]:
    """Our user's records, other than `pid`'s own, whose slot is not held: their
    holders were killed with -9. Only their owner may remove them, under the mutex."""
    prefix = f"run-{uid}-"
    stale = []
    for n in names:
        if not (n.startswith(prefix) and n.endswith(".json")) or n == record_name(uid, pid):
            continue
        try:
            data, _st = read_small_file(dir_fd, n)
            slot = json.loads(data).get("slot")
        except (OSError, ValueError, RecursionError, AttributeError):
            slot = None
        if slot not in held:
            stale.append(n)
    return stale


# -- queue tickets -------------------------------------------------------------------


def ticket_name(seq: int, uid: int, pid: int) -> str:
    # Zero-padded: names sort like their sequence numbers.
    return f"q-{seq:020d}-{uid}-{pid}.json"


# The state files whose names claim an owner and a process, as (prefix, suffix,
# number of fields): a ticket q-SEQ-UID-PID.json, a run record run-UID-PID.json, a
# lent token lent-UID-PID (lending.py).
LENT_PREFIX = "lent-"
_CLAIMING = (("q-", ".json", 3), ("run-", ".json", 2), (LENT_PREFIX, "", 2))


def claimed_by(name: str) -> tuple[int, int] | None:
    """The (uid, pid) a ticket's, run record's or lent token's name claims; None for
    any other name. A claim only: the file's owner is checked where it counts."""
    for prefix, suffix, fields in _CLAIMING:
        if name.startswith(prefix) and name.endswith(suffix):
            parts = name[len(prefix) : len(name) - len(suffix)].split("-")
            if len(parts) == fields and all(map(_number, parts)) and int(parts[-1]) > 0:
                return int(parts[-2]), int(parts[-1])
            return None
    return None


def _number(text: str) -> bool:
    """ASCII digits only: str.isdigit() takes '²', which int() refuses (a name planted
    in a shared state directory must not crash the jobs reading it)."""
    return text.isascii() and text.isdigit()


def ticket_owner(name: str) -> str:
    """The uid a ticket's name claims, as text (``q-SEQ-UID-PID.json``)."""
    return name.split("-")[2]


def ticket_pid(name: str) -> int:
    """The pid a well-formed ticket's name claims (``q-SEQ-UID-PID.json``)."""
    return int(name[:-5].split("-")[3])


def tickets(names: list[str]) -> list[tuple[int, str]]:
    """Well-formed ticket names with their sequence numbers, in queue order."""
    out = []
    for n in names:
        if n.startswith("q-") and n.endswith(".json"):
            parts = n[2:-5].split("-")
            if len(parts) == 3 and all(map(_number, parts)):
                out.append((int(parts[0]), n))
    out.sort()
    return out


def read_ticket(dir_fd: int, name: str) -> dict[str, Any] | None:
    """A ticket's content: {} if unreadable or not written by the uid its name claims
    (waiters behind it believe its estimate and marks), None if not an object."""
    try:
        data, st = read_small_file(dir_fd, name)
        rec = json.loads(data) if str(st.st_uid) == ticket_owner(name) else {}
    except (OSError, ValueError, RecursionError, IndexError):
        rec = {}
    return rec if isinstance(rec, dict) else None


@struct
class Ticket:
    """Our place in the queue: the ticket file we hold locked, and its sequence number."""

    fd: int
    name: str
    seq: int


def new_ticket(dir_fd: int, name: str, seq: int, content: str) -> Ticket:
    """Make ticket ``name`` (it must not exist) and hold it locked."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, 0o644)
        try:
            os.write(fd, content.encode())
        except OSError:
            pass  # a full disk: the ticket's content is for display; its lock is what counts
    except BaseException:
        os.close(fd)
        unlink_quietly(dir_fd, name)
        raise
    return Ticket(fd, name, seq)


def drop_ticket(dir_fd: int, t: Ticket) -> None:
    """Unlink first, then close: a successor blocked on our lock wakes on close and
    rescans a queue that no longer lists us. Once: a dropped ticket's fd is -1 (its
    number may name another file by then)."""
    if t.fd < 0:
        return
    unlink_quietly(dir_fd, t.name)
    fd, t.fd = t.fd, -1
    os.close(fd)


def waiting(dir_fd: int, names: list[str]) -> list[dict[str, Any]]:
    """Live waiters' tickets (locked by their owners) in queue order."""
    out = []
    for _seq, name in tickets(names):
        if locks.exclusively_held(dir_fd, name):
            rec = read_ticket(dir_fd, name)
            if rec is not None:
                out.append(rec)
    return out
