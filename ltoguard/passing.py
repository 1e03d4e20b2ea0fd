"""How a waiter starts before a head that cannot (backfill), as the queue sees it:
the policy's hook, the marks that let the head count who passed it, and what the
head's ticket tells the waiters behind it. The rule itself is admission.backfill;
the queue is semaphore.py.
"""

from __future__ import annotations

import json
import os

from ltoguard.admission import BACKFILL_PASSES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from ltoguard.admission import Admission
    from ltoguard.semaphore import Admit, Info, Snapshot, Tickets

    class Backfiller(Protocol):
        """A policy that may start a waiter before the head (policy.AdmissionPolicy)."""

        alone: bool
        may_backfill: bool  # False: it never could (one slot, one CPU); nobody polls

        def backfill(self, snap: Snapshot, tickets: Tickets, ahead: int) -> Admission: ...


def ticket_fields(info: Info) -> dict[str, Any]:
    """A ticket's fields: a dict, or read from the caller's record each time, so the
    run record written at admission holds what the policy decided on (its estimate)."""
    return info() if callable(info) else info


def marked_alone(info: Info, admit: Admit) -> Info:
    """The ticket's fields, marked ``alone`` for a rerun after an OOM kill (``admit``
    says so), which its run record then says too: nobody passes it, and nothing
    starts beside it, one CPU or not."""
    if getattr(admit, "alone", False) is not True:
        return info
    return lambda: dict(ticket_fields(info), alone=True)


def backfiller(admit: Admit) -> Backfiller | None:
    """The policy, if waiters behind the head may start before it under it."""
    if not callable(getattr(admit, "backfill", None)):
        return None
    hook: Backfiller = admit  # type: ignore[assignment]
    return hook if hook.may_backfill else None


def passers(snap: Snapshot, head: str) -> set[str]:
    """The running jobs that started before the waiter whose ticket is ``head``."""
    return {h.run for h in snap.holders if (h.record or {}).get("passed") == head}


def show_refusal(fd: int, info: Info, decision: Admission, seen: set[str], shown: bytes) -> bytes:
    """The head tells the waiters behind it, in its ticket (``fd``), why it cannot
    start, its estimate now and who passed it (the backfill rule reads them); written
    only when that changes. Returns what the ticket says now."""
    data = json.dumps(
        dict(
            ticket_fields(info),
            refused=decision.why.value,
            passed_by=sorted(seen)[: 2 * BACKFILL_PASSES],
        )
    ).encode()
    if data == shown:
        return shown
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError:
        return shown  # a full disk: nobody passes a head whose ticket does not say so
    return data
