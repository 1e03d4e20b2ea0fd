"""StderrRelay: what cargo sees of a compile that ran more than once."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ltoguard import relay
from ltoguard.relay import StderrRelay


def attempt(r: StderrRelay, data: bytes, chunk: int) -> None:
    """One run of the child: `data` written to the relay's pipe in `chunk`-byte pieces."""
    rd, wr = os.pipe()
    r.start(rd)
    for i in range(0, len(data), chunk):
        os.write(wr, data[i : i + chunk])
    os.close(wr)
    r.join()


@pytest.fixture
def captured(capfdbinary: pytest.CaptureFixture[bytes]) -> Callable[[], bytes]:
    """What reached fd 2: cargo's view."""
    return lambda: capfdbinary.readouterr().err


DIAG = b'{"$message_type":"diagnostic","message":"unused variable"}\n'
DONE = b'{"$message_type":"artifact","artifact":"target/release/app"}\n'


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize(
    ("first", "rerun", "cargo_sees"),
    [
        # The rerun repeats what was shown, then goes on: only the new part passes.
        (DIAG, DIAG + DONE, DIAG + DONE),
        # Killed mid-line: the rerun completes the line without repeating its start.
        (DIAG[:20], DIAG + DONE, DIAG + DONE),
        # The rerun prints another line sharing its first 18 bytes: the whole line passes.
        (DIAG, DONE, DIAG + DONE),
        # It differs after a common prefix: relaying resumes at the start of the
        # line that differs, after ending the first attempt's unfinished line.
        (DIAG + b"x", DIAG + DONE, DIAG + b"x\n" + DONE),
        (DIAG + DIAG, DIAG + DONE, DIAG + DIAG + DONE),
        (DIAG[:20], DONE, DIAG[:20] + b"\n" + DONE),
        # Silent first attempt.
        (b"", DIAG, DIAG),
        # The rerun prints less than the first attempt: nothing new, nothing repeated.
        (DIAG + DONE, DIAG, DIAG + DONE),
    ],
)
def test_a_rerun_does_not_show_cargo_the_same_bytes_twice(
    captured: Callable[[], bytes], chunk: int, first: bytes, rerun: bytes, cargo_sees: bytes
) -> None:
    r = StderrRelay()
    attempt(r, first, chunk)
    attempt(r, rerun, chunk)
    assert captured() == cargo_sees


def test_once_it_differs_everything_after_passes(captured: Callable[[], bytes]) -> None:
    # A diverging rerun that later prints bytes equal to the first attempt's tail
    # must not have them swallowed: matching stops at the first difference.
    r = StderrRelay()
    attempt(r, b"AAAA", 4096)
    attempt(r, b"B" + b"AAAA", 1)
    assert captured() == b"AAAA\nBAAAA"


def test_past_the_memory_bound_output_still_passes(
    captured: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "_SENT_MAX", 8)
    r = StderrRelay()
    attempt(r, b"0123456789", 10)  # one write under PIPE_BUF: one read, past the bound
    assert captured() == b"0123456789"
    # None of it was remembered, so a rerun shows it again (unbounded, it would not).
    attempt(r, b"0123456789", 10)
    assert captured() == b"0123456789"


@pytest.mark.parametrize(
    ("tail", "oom"),
    [
        (b"memory allocation of 123456 bytes failed\n", True),
        (b"LLVM ERROR: out of memory\nAllocation failed\n", True),
        (b"error[E0308]: mismatched types\n", False),
        (b"", False),
    ],
)
def test_out_of_memory_is_read_from_the_last_attempt_only(
    captured: Callable[[], bytes], tail: bytes, oom: bool
) -> None:
    r = StderrRelay()
    attempt(r, b"LLVM ERROR: out of memory\n", 4096)
    attempt(r, tail, 4096)
    assert r.out_of_memory() is oom


@pytest.mark.parametrize(
    ("attempts", "cargo_sees"),
    [
        # Killed after three lines, then after one, then complete: each byte once.
        ([DIAG * 3, DIAG, DIAG * 3 + DONE], DIAG * 3 + DONE),
        # The second attempt printed another line; the third repeats the second.
        ([b"L\nA1\n", b"L\nB\n", b"L\nB\n"], b"L\nA1\nB\n"),
        # ... and a third that goes back to the first attempt's text shows it again.
        ([b"L\nA1\n", b"L\nB\n", b"L\nA1\n"], b"L\nA1\nB\nA1\n"),
    ],
)
def test_third_attempt_is_compared_with_what_cargo_has_seen_last(
    captured: Callable[[], bytes], attempts: list[bytes], cargo_sees: bytes
) -> None:
    r = StderrRelay()
    for a in attempts:
        attempt(r, a, 5)
    assert captured() == cargo_sees
