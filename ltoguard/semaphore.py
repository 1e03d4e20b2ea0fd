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
  (`locks.all_held`); a shared lock is never a running job.
- ``q-SEQ-UID-PID.json``: a waiter's ticket, LOCK_EX by its owner while it waits.
  SEQ is CLOCK_MONOTONIC (system-wide) read under the mutex, so tickets sort in
  arrival order. A waiter that is not at the head blocks (LOCK_SH) on the ticket
  just ahead of it: no polling, and it wakes the moment that waiter is admitted,
  leaves or dies. Only the head polls, and the waiters nearest it that may start
  before it (backfill, when the policy has a ``backfill`` method): a head refused
  for memory writes so in its ticket (``refused``, its estimate, who passed it:
  passing.py).
- ``run-UID-PID.json``: the record a holder publishes (crate, pid, start...).
  Records are data for display, memory estimates and a rerun's ``alone``; the slot
  locks are the truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from functools import partial

from ltoguard import locks, process, records
from ltoguard.admission import BACKFILL_DEPTH, Admission, Why, behind, is_head
from ltoguard.passing import backfiller, marked_alone, passers, show_refusal, ticket_fields
from ltoguard.records import Holder, Ticket, printable
from ltoguard.statedir import StateDirError, unlink_quietly, write_private_file
from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, Union

    Info = Union[dict[str, Any], Callable[[], dict[str, Any]]]
    Admit = Callable[["Snapshot"], Admission]  # the admission policy of the waiter
    Tickets = Sequence[tuple[str, dict[str, Any]]]  # the waiters ahead, head first


__all__ = [
    "FULL_RECHECK",
    "HEAD_POLL",
    "Holder",
    "Semaphore",
    "Slot",
    "Snapshot",
    "StateDirGone",
    "Ticket",
    "printable",
]

HEAD_POLL = 0.05  # seconds; a freed slot is noticed within this
# A head told "no" re-decides at once when a slot it saw held is freed, else at
# least this often (memory moves, a ticket may have re-entered ahead). Between
# decisions it only probes those slots: a flock call each, instead of the mutex,
# a directory listing and every record, so a waiter costs next to no CPU.
FULL_RECHECK = 0.5


class StateDirGone(StateDirError):
    """The state directory was removed while we used it (e.g. `rm -rf /tmp/...` mid-build)."""


@struct
class Slot:
    """A held slot: the lock fd (to be inherited by the child), our record, our queue position."""

    fd: int
    index: int
    record_name: str
    info: dict[str, Any]
    seq: int = 0
    sigmask: set[int | signal.Signals] | None = None  # see Semaphore.acquire
    decision: Admission | None = None  # the one it was admitted on


@struct
class Snapshot:
    """What an admission decision sees, taken under the mutex."""

    holders: list[Holder]
    free_slots: list[int]

    @property
    def running(self) -> int:
        return len(self.holders)


class Semaphore:
    """The semaphore of one state directory, as seen by this process (uid and pid)."""

    def __init__(self, path: str, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.uid = os.geteuid()
        self.pid = os.getpid()

    @contextlib.contextmanager
    def mutex(self) -> Iterator[None]:
        """Hold the state directory's mutex for the length of the block."""
        fd = locks.lock_mutex(self.dir_fd, self.path)
        try:
            yield
        finally:
            os.close(fd)

    # -- listing -----------------------------------------------------------------

    def _names(self) -> list[str]:
        return os.listdir(self.dir_fd)

    def read_records(self, names: list[str] | None = None) -> dict[int, dict[str, Any]]:
        """Valid-looking records by slot index. Forged or stale ones are dropped."""
        return records.read_records(self.dir_fd, self._names() if names is None else names)

    def _live_tickets_before(self, mine: Ticket, names: list[str]) -> list[str]:
        live = []
        for seq, name in records.tickets(names):
            if (seq, name) >= (mine.seq, mine.name):
                break
            alive = locks.exclusively_held(self.dir_fd, name)
            if alive:
                live.append(name)
            elif alive is False and records.ticket_owner(name) == str(self.uid):
                # Our own user's dead waiter (kill -9): tidy up. Safe under the mutex.
                unlink_quietly(self.dir_fd, name)
        return live

    # -- snapshot ------------------------------------------------------------------

    def snapshot(self, names: list[str] | None = None) -> Snapshot:
        """Running holders and free slots; call with the mutex held for a consistent view."""
        if names is None:
            names = self._names()
        held, free = locks.probe_slots(self.dir_fd, self.path, names)
        recs = self.read_records(names)
        return Snapshot([Holder(k, recs.get(k)) for k in held], free)

    # -- acquire / release ---------------------------------------------------------

    def _enqueue(self, info: Info, seq: int | None) -> Ticket:
        if seq is None:
            seq = time.monotonic_ns()
        name = records.ticket_name(seq, self.uid, self.pid)
        return records.new_ticket(self.dir_fd, name, seq, json.dumps(ticket_fields(info)))

    def drop_ticket(self, t: Ticket) -> None:
        records.drop_ticket(self.dir_fd, t)

    def requeue(self, info: Info, admit: Admit, seq: int) -> Ticket:
        """A ticket at ``seq`` for a job that still holds its slot and queues again
        (stopped to save memory, or to rerun alone): made before the slot is freed, so
        no waiter behind it starts in between and takes its place (or runs beside the
        rerun). ``acquire(ticket=...)`` waits on it; ``drop_ticket`` if it never does."""
        info = marked_alone(info, admit)
        with self.mutex():
            mask = process.hold_signals()
            try:
                ticket = self._enqueue(info, seq)
            except BaseException:
                process.restore_signals(mask)
                raise
        try:
            process.restore_signals(mask)  # a signal held back meanwhile is handled here
        except BaseException:
            self.drop_ticket(ticket)
            raise
        return ticket

    def acquire(
        self,
        info: Info,
        admit: Admit,
        on_wait: Callable[[Snapshot, Admission], None] | None = None,
        *,
        seq: int | None = None,
        ticket: Ticket | None = None,
        poll: float = HEAD_POLL,
        gate: Callable[[int], object] | None = None,
        hold_signals: bool = False,
    ) -> Slot:
        """Wait in FIFO order until `admit` says yes, then hold a slot.

        `seq` re-enters the queue at an earlier position (a job stopped to save memory
        goes back to the head); ``ticket`` waits on one made by ``requeue`` (dropped
        here, got a slot or not). `gate(ahead)` runs, under the mutex, whenever the
        waiter looks (ahead: how many wait before it; 0: at the head, before each
        admission attempt): the jobserver lease lends its token there while queued
        (lending.py). `on_wait(snapshot, decision)` runs after each refusal, outside
        the mutex.

        A waiter is interrupted by a signal whose handler raises. Such signals are
        held back (blocked) while a ticket or a slot changes hands, so an interruption
        never leaves a ticket or a record behind. With `hold_signals` they are still
        blocked when the slot is returned; `slot.sigmask` is the mask to restore once
        the caller has the slot in hand.
        """
        mask: set[int | signal.Signals] | None = None
        got: Slot | None = None
        probes: list[int] = []  # the slots held at the last "no", to notice one freed
        info = marked_alone(info, admit)
        try:
            with self.mutex():  # not blocked while waiting for it: Ctrl-C still works
                mask = process.hold_signals()
                if ticket is None:
                    ticket = self._enqueue(info, seq)
            process.restore_signals(mask)  # a signal held back meanwhile raises here
            got = self._wait_in_line(ticket, info, admit, on_wait, poll, gate, mask, probes)
        except BaseException as exc:
            if ticket is not None:
                self.drop_ticket(ticket)
            if mask is not None:
                process.restore_signals(mask)
            if isinstance(exc, OSError):
                self._raise_if_gone(exc)
            raise
        finally:
            locks.close_all(probes)
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
        admit: Admit,
        on_wait: Callable[[Snapshot, Admission], None] | None,
        poll: float,
        gate: Callable[[int], object] | None,
        mask: set[int | signal.Signals],
        probes: list[int],
    ) -> Slot:
        """The queue loop. Returns with the forwarded signals blocked and the ticket
        gone; raises with the ticket still there (the caller drops it)."""
        decided = 0.0
        hook = backfiller(admit)
        watch: str | None = None  # polling behind the head: the ticket just ahead
        seen: set[str] = set()  # at the head: the jobs seen to have started before it
        shown = b""  # at the head: what its ticket says now, once rewritten
        while True:
            if probes or watch is not None:
                if self._unchanged(decided, probes, watch):
                    time.sleep(poll)
                    continue
                locks.close_all(probes)
                watch = None
            pred: str | None = None
            with self.mutex():
                names = self._names()
                ahead = self._live_tickets_before(ticket, names)
                if gate is not None:
                    gate(len(ahead))  # under the mutex: a count-then-lend is atomic
                if not is_head(len(ahead)) and (hook is None or len(ahead) > BACKFILL_DEPTH):
                    pred = ahead[-1]
                    snap = self.snapshot(names)
                    decision = behind(len(ahead))
                elif hook is not None and not is_head(len(ahead)):
                    rule = partial(hook.backfill, tickets=self._tickets(ahead), ahead=len(ahead))
                    got = self._attempt(ticket, names, info, rule, probes, ahead[0])
                    if isinstance(got, Slot):
                        return got
                    snap, decision = got[0], behind(len(ahead))
                    decided = time.monotonic()
                    watch = ahead[-1]
                else:
                    got = self._attempt(ticket, names, info, admit, probes)
                    if isinstance(got, Slot):
                        return got
                    snap, decision = got
                    decided = time.monotonic()
                    if hook is not None:
                        seen |= passers(snap, ticket.name)
                        shown = show_refusal(ticket.fd, info, decision, seen, shown)
            process.restore_signals(mask)
            if on_wait is not None:
                on_wait(snap, decision)  # each "no": the reason can change while it waits
            if pred is not None:
                locks.wait_until_free(self.dir_fd, pred)
            else:  # COMPILING holds no slot to watch: memory decides, re-read then
                time.sleep(FULL_RECHECK if decision.why is Why.COMPILING else poll)

    def _unchanged(self, decided: float, probes: list[int], watch: str | None) -> bool:
        """Nothing a waiter decides on changed since its last decision: no slot was
        released, the ticket ahead is still held, and it is not yet time to look again."""
        return (
            time.monotonic() - decided < FULL_RECHECK
            and locks.all_held(probes)
            and (watch is None or locks.exclusively_held(self.dir_fd, watch) is True)
        )

    def _tickets(self, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """The waiters' tickets (name, fields), in the order given."""
        return [(n, records.read_ticket(self.dir_fd, n) or {}) for n in names]

    def _attempt(
        self,
        ticket: Ticket,
        names: list[str],
        info: Info,
        rule: Admit,
        probes: list[int],
        passing: str | None = None,
    ) -> Slot | tuple[Snapshot, Admission]:
        """One try for a slot, under the mutex, with the forwarded signals held (the
        caller restores them after a "no"). Yes: the ticket is dropped and the slot
        keeps its place in line. No: ``probes`` watch the slots held now."""
        process.hold_signals()
        got = self._try_admit(names, info, rule, passing)
        if isinstance(got, Slot):
            self.drop_ticket(ticket)
            got.seq = ticket.seq
            return got
        probes[:] = locks.open_slots(self.dir_fd, [h.slot for h in got[0].holders])
        return got

    def gone(self) -> bool:
        try:
            return os.fstat(self.dir_fd).st_nlink == 0
        except OSError:
            return True

    def _raise_if_gone(self, exc: OSError) -> None:
        if self.gone():
            raise StateDirGone(f"state directory {self.path} was removed") from exc

    def _try_admit(
        self, names: list[str], info: Info, admit: Admit, passing: str | None = None
    ) -> Slot | tuple[Snapshot, Admission]:
        snap = self.snapshot(names)
        decision = admit(snap)
        if not decision.ok:
            return snap, decision
        held = [h.slot for h in snap.holders]
        fields = dict(ticket_fields(info))  # a copy: the caller's dict stays as it was
        fields.update(pid=self.pid, uid=self.uid, started=time.time(), reason=decision.text)
        if decision.why is Why.BACKFILL and passing is not None:
            fields["passed"] = passing  # the head counts who passed it (its ticket's passed_by)
        index, fd = locks.take_new_slot(self.dir_fd, held)
        fields["slot"] = index
        record_name = records.record_name(self.uid, self.pid)
        try:
            for stale in records.stale_records(self.dir_fd, names, self.uid, self.pid, held):
                unlink_quietly(self.dir_fd, stale)
            write_private_file(self.dir_fd, record_name, json.dumps(fields).encode())
        except OSError:
            pass  # a full disk: the record is for display; the slot lock is what counts
        except BaseException:
            os.close(fd)
            raise
        return Slot(fd, index, record_name, fields, decision=decision)

    def release(self, slot: Slot) -> None:
        unlink_quietly(self.dir_fd, slot.record_name)
        try:
            os.close(slot.fd)
        except OSError:
            pass

    def queue(self) -> list[dict[str, Any]]:
        """Live waiters in order, for status displays."""
        return records.waiting(self.dir_fd, self._names())
