"""Lending: which waiter, or paused job, hands cargo its jobserver token now."""

from __future__ import annotations

import enum
from collections.abc import Callable

from ltoguard.admission.core import is_head


class Lend(enum.Enum):
    """Does a waiter lend cargo its jobserver token now, and if not, why not."""

    LEND = "lend"
    FIRST_TRY = "first try"  # the head's first attempt is made with the token in hand
    TOO_FAR = "too far"  # not among the ``depth`` waiters nearest the head
    LENT = "lent"  # lent already
    TOKENS_OUT = "tokens out"  # ``depth`` tokens are out over the state directory
    BESIDE_ALONE = "beside alone"  # a rerun alone runs: a compile on it would run beside


def lending(
    *,
    ahead: int,
    tried: bool,
    lent: bool,
    depth: int,
    tokens_out: int | Callable[[], int],
    beside_alone: bool | Callable[[], bool] = False,
) -> Lend:
    """A waiter lends once it waits (the head after its first attempt), if it is
    among the ``depth`` nearest the head and fewer than ``depth`` tokens are out,
    and no rerun alone after an OOM kill runs (``beside_alone``): cargo would start
    a compile beside it on the token. ``tokens_out`` and ``beside_alone`` may be
    callables: they are called only when they decide."""
    if not tried and is_head(ahead):
        return Lend.FIRST_TRY
    if ahead >= depth:
        return Lend.TOO_FAR
    decision = lending_paused(lent=lent, depth=depth, tokens_out=tokens_out)
    if decision is Lend.LEND and (beside_alone() if callable(beside_alone) else beside_alone):
        return Lend.BESIDE_ALONE
    return decision


def lending_paused(*, lent: bool, depth: int, tokens_out: int | Callable[[], int]) -> Lend:
    """A paused job lends its token under the bound a waiter near the head lends
    under: fewer than ``depth`` tokens out. Past it cargo would spend the token on
    one more guarded job (a waiting process, no CPU used), and pauses come when
    memory is short. ``tokens_out`` is called only when the count decides."""
    if lent:
        return Lend.LENT
    out = tokens_out() if callable(tokens_out) else tokens_out
    return Lend.LEND if out < depth else Lend.TOKENS_OUT
