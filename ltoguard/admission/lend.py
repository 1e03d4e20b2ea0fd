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
    ONLY_GUARDED = "only guarded jobs"  # cargo is down to guarded jobs: one more would wait
    # A build script's compile (guarded in link mode, or with -C lto or
    # linker-plugin-lto in RUSTFLAGS): its dependents wait for its exit, which would
    # wait for a token back (cargo keeps each token a unit frees for its next one).
    BUILD_SCRIPT = "build script"


def lending(
    *,
    ahead: int,
    tried: bool,
    lent: bool,
    depth: int,
    tokens_out: int | Callable[[], int],
    beside_alone: bool | Callable[[], bool] = False,
    only_guarded: bool | Callable[[], bool] = False,
    build_script: bool = False,
) -> Lend:
    """A waiter lends once it waits (the head after its first attempt), if it is
    among the ``depth`` nearest the head and fewer than ``depth`` tokens are out,
    and no rerun alone after an OOM kill runs (``beside_alone``): cargo would start
    a compile beside it on the token. ``tokens_out``, ``beside_alone`` and
    ``only_guarded`` (see `lending_paused`) may be callables: they are called only
    when they decide."""
    if not tried and is_head(ahead):
        return Lend.FIRST_TRY
    if ahead >= depth:
        return Lend.TOO_FAR
    decision = lending_paused(
        lent=lent,
        depth=depth,
        tokens_out=tokens_out,
        only_guarded=only_guarded,
        build_script=build_script,
    )
    if decision is Lend.LEND and _ask(beside_alone):
        return Lend.BESIDE_ALONE
    return decision


def lending_paused(
    *,
    lent: bool,
    depth: int,
    tokens_out: int | Callable[[], int],
    only_guarded: bool | Callable[[], bool] = False,
    build_script: bool = False,
) -> Lend:
    """A paused job lends its token under the bound a waiter near the head lends
    under: fewer than ``depth`` tokens out. Past it cargo would spend the token on
    one more guarded job (a waiting process, no CPU used), and pauses come when
    memory is short. Nor does a job lend once its cargo runs nothing but guarded
    jobs, one of them on a lent token (``only_guarded``, lending.only_guarded_jobs):
    cargo had nothing else to start, and a token lent then would only start one more
    waiting process. ``tokens_out`` is called only when the count decides.

    A build script's compile never lends (``build_script``): a job that lent takes
    a token back before it exits, and cargo hands a token out again only once it
    has nothing left to start, so the build script, and every unit that waits for
    it, would wait for that (up to guard.RECLAIM_AFTER_RUN)."""
    if lent:
        return Lend.LENT
    if build_script:
        return Lend.BUILD_SCRIPT
    out = tokens_out() if callable(tokens_out) else tokens_out
    if out >= depth:
        return Lend.TOKENS_OUT
    return Lend.ONLY_GUARDED if _ask(only_guarded) else Lend.LEND


def _ask(answer: bool | Callable[[], bool]) -> bool:
    return answer() if callable(answer) else answer
