"""The child's stderr, relayed to cargo byte for byte, and never twice.

cargo parses rustc's JSON diagnostics on stderr. When a compile is rerun (after an
OOM kill, or after it stopped itself to save memory), the rerun prints the same
diagnostics again; the relay drops the bytes cargo has already seen and resumes at
the first byte that differs.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading

_OOM_MARKERS = (b"memory allocation of ", b"LLVM ERROR: out of memory", b"out of memory")
_SENT_MAX = 64 << 20  # bytes of stderr remembered to suppress repeats on a rerun


class StderrRelay:
    """Copies the child's stderr to ours byte for byte, remembering what cargo has seen.

    On a rerun the same compile prints the same diagnostics again; cargo parses
    rustc's JSON on stderr, so the bytes cargo has already seen are dropped while the
    rerun repeats them. Where the rerun goes on past them (the first attempt was
    killed), relaying resumes mid-line: the line is completed. Where it prints
    something else, relaying resumes at the start of the line that differs, so cargo
    never gets a line spliced from two attempts.
    """

    def __init__(self) -> None:
        # What a rerun is compared with: the output cargo has, in effect, seen. After
        # an attempt that went further or printed something else, that attempt's
        # whole output; after one that stopped early on the same text, unchanged.
        self.seen = bytearray()
        self.current = bytearray()  # this attempt's output (up to _SENT_MAX bytes)
        self.mid_line = False  # cargo's stream ends in the middle of a line
        self.tail = b""
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        self.tail = b""
        self.current = bytearray()
        import threading  # here: a waiting job never relays (test_waiter_imports)

        self._thread = threading.Thread(target=self._run, args=(fd,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, fd: int) -> None:
        pos = 0  # how much of `seen` this attempt has repeated so far
        matching = True
        diverged = False
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.tail = (self.tail + chunk)[-65536:]
                if len(self.current) + len(chunk) <= _SENT_MAX:
                    self.current += chunk
                if matching:
                    n = min(len(chunk), len(self.seen) - pos)
                    same = _common_prefix(chunk, self.seen, pos, n)
                    if same == n:
                        pos += n
                        chunk = chunk[n:]
                        if not chunk:
                            continue
                    else:
                        chunk = self._resume_line(pos + same) + chunk[same:]
                        diverged = True
                    matching = False
                self._write(chunk)
        finally:
            os.close(fd)
            if diverged or len(self.current) >= len(self.seen):
                self.seen = self.current

    def _resume_line(self, at: int) -> bytes:
        """The rerun diverged from what cargo saw at byte `at`: cargo reads whole lines,
        so restart at the beginning of that line (its start was swallowed as a repeat),
        after ending cargo's unfinished last line, if any."""
        start = self.seen.rfind(b"\n", 0, at) + 1
        return (b"\n" if self.mid_line else b"") + bytes(self.seen[start:at])

    def _write(self, chunk: bytes) -> None:
        if chunk:
            self.mid_line = not chunk.endswith(b"\n")
        view = memoryview(chunk)
        while view:
            try:
                n = os.write(2, view)
            except OSError:
                return  # our stderr is gone (cargo died): keep draining the child
            view = view[n:]

    def out_of_memory(self) -> bool:
        return any(m in self.tail for m in _OOM_MARKERS)


def _common_prefix(chunk: bytes, sent: bytearray, pos: int, n: int) -> int:
    """How many of the first `n` bytes of `chunk` equal sent[pos:pos+n]."""
    if n <= 0 or chunk[:n] == sent[pos : pos + n]:
        return max(n, 0)
    lo, hi = 0, n  # chunk[:lo] matches, chunk[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if chunk[:mid] == sent[pos : pos + mid]:
            lo = mid
        else:
            hi = mid
    return lo
