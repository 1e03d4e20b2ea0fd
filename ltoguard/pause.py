"""Pausing a guarded compile before memory runs out, rather than killing it.

While its compiler runs, each attempt asks admission.pause_step what to do with it
(every Limits.watch_interval: often while younger than another slot holder, more
often near the floor, at the slow rate once the oldest); this module carries the
answer out:

- pause: SIGSTOP the compile's process tree (children first, then the compiler, and
  once more for any child it started meanwhile), lend the jobserver token back to
  cargo if fewer than the lending depth are out (it can run an ordinary compile
  meanwhile), and say `paused: true` in the run record, which the other jobs'
  watchers read (policy.running_jobs);
- resume: SIGCONT the tree, at once, without waiting for a token: if it lent one,
  one is taken back in the background (Reclaimer), as for a job admitted without
  its token in hand;
- kill: memory is critical all the same and this job is the youngest: SIGKILL the
  tree (a stopped process dies of it too) and the caller queues it again.

A signal forwarded to a paused compiler would wait until it is continued:
`on_signal`, run from the signal handler after the forward, continues the stopped
processes at once (a /proc read and os.kill each, safe between any two bytecodes), and the
next check resumes the job for good and pauses it never again.
"""

from __future__ import annotations

import signal
import time

from ltoguard import process, proctree
from ltoguard.admission import (
    KILL,
    PAUSE,
    RESUME,
    fall_per_watch,
    near_the_floor,
    older_running,
    oldest,
    outlook,
    pressure_step,
    still_to_grow,
    unforeseen_fall,
)
from ltoguard.messages import note
from ltoguard.sizes import format_size
from ltoguard.structs import replace, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

    from ltoguard.admission import Outlook, Running
    from ltoguard.jobserver import Lease


@struct(frozen=True)
class Reading:
    """What pause_step decides on: this job, the other slot holders, free memory."""

    me: Running
    others: list[Running]
    available: int
    total: int
    swap: int = 0  # free swap that counts as room (admission.swap_counted)
    brake: bool = False  # sustained memory pressure: the youngest job pauses
    pressure: str = ""  # the pressure figure, for the note


class Reclaimer:
    """Takes a lent jobserver token back in a thread while the compile runs; what it
    did not get back, guard.py waits for after the compile, holding no slot. Stopped
    before the token is lent again (a pause) and started again on resume: one thread
    at most, and never a lend while it may be reading."""

    def __init__(self, lease: Lease | None) -> None:
        import threading  # here: a job that only waits never loads it (test_waiter_imports)

        self._lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        lease = self._lease
        if self._thread is not None or lease is None or not lease.lent:
            return
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lease.reclaim,
            kwargs={"should_stop": self._stop.is_set},
            name="ltoguard-reclaim",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


class PauseWatch:
    """Pauses, resumes or kills one compile as admission.pause_step says."""

    def __init__(
        self,
        child: int,
        what: str,
        *,
        read: Callable[[], Reading | None],
        publish: Callable[[dict[str, Any]], None],
        lend: Callable[[], object] | None,
        reclaimer: Reclaimer,
        clock: Callable[[], float] = time.monotonic,
        quiet: Callable[[], bool] = proctree.nothing_compiling_beside,
    ) -> None:
        self.child = child
        self.what = what
        self.read = read
        self.publish = publish
        self.lend = lend  # lends the token while paused, if the count allows (lending.py)
        self.reclaimer = reclaimer
        self.clock = clock
        self.quiet = quiet  # nothing else of the build compiles beside (_fall)
        self.started = clock()
        self.paused_s = 0.0  # seconds paused in all, the current pause excluded
        self.pauses: list[tuple[float, float]] = []  # time.time() at each pause and resume
        self.signalled = False  # a signal was forwarded: never pause again
        self._paused_at: float | None = None  # clock() when paused
        self._paused_since: float | None = None  # time.time() when paused, for the record
        self._stopped: list[proctree.Proc] = []
        self._last: Outlook | None = None  # what the last check beside others saw
        self._last_check = 0.0  # clock() then
        # At the last check the compile ran and no slot holder was older: nothing a
        # check decides can change for it, so the next comes at the slow rate
        # (Limits.watch_interval).
        self.settled = False
        # At the last check it ran near the floor (admission.near_the_floor): the
        # next comes sooner.
        self.tight = False

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def step(self) -> bool:
        """One check; True when it killed the compile (the caller requeues it)."""
        self.settled = self.tight = False
        if self.signalled:  # never paused again: nothing to check often
            if self.paused:
                self.resume(quiet=True)
            self.settled = True
            return False
        reading = self.read()
        if reading is None:  # cannot tell: never left paused blind
            if self.paused:
                self.resume()
            return False
        paused_for = 0.0 if self._paused_at is None else self.clock() - self._paused_at
        falling = 0
        if reading.others:
            now = self.clock()
            seen = outlook(
                [replace(reading.me, paused=self.paused), *reading.others], reading.available
            )
            if self._last is not None:
                fell = self._fall(self._last, seen)
                falling = fall_per_watch(fell, now - self._last_check, now - self.started)
            self._last, self._last_check = seen, now
        else:
            self._last = None  # alone, memory is not read
        action = pressure_step(
            me=reading.me,
            others=reading.others,
            available=reading.available,
            total=reading.total,
            paused=self.paused,
            paused_for=paused_for,
            falling=falling,
            swap=reading.swap,
            brake=reading.brake,
        )
        if action == KILL:
            self.kill()
            return True
        if action == PAUSE:
            self.pause(reading)
        elif action == RESUME:
            self.resume()
        elif self.paused and self.lend is not None:
            self.lend()  # kept at the pause, the bound may allow it now (at once if lent)
        self.settled = not self.paused and oldest(reading.me, reading.others)
        me = replace(reading.me, paused=self.paused)
        free = reading.available + reading.swap  # as pressure_step counts it
        self.tight = near_the_floor(me, reading.others, free, reading.total, falling=falling)
        return False

    def _fall(self, before: Outlook, seen: Outlook) -> int:
        """What the pause's floor counts of free memory's fall since the last check:
        only what the running jobs were not expected to take (unforeseen_fall),
        while nothing else of the build compiles beside them (``quiet``); else all
        of it, as a library compile can rise by more than the floor between two
        checks and its fall is all that tells. The process list is read only when
        it would change the figure."""
        fell = max(0, before.free - seen.free)
        counted = unforeseen_fall(fell, before, seen)
        if counted < fell and self.quiet():
            return counted
        return fell

    def pause(self, reading: Reading) -> None:
        self._paused_at = self.clock()
        self._paused_since = time.time()
        self._stopped = []
        for _ in range(2):  # again for a child started while the first pass ran
            for proc in proctree.tree(self.child):
                if proc not in self._stopped:
                    self._stopped.append(proc)
                    proctree.send(proc, signal.SIGSTOP)
        if self.signalled:  # a signal came meanwhile: the compile must see it
            self._cont()
        # The token goes back to cargo while we hold only memory, if the gate allows;
        # the reclaimer (if it still runs) is stopped first, so it is never lent twice.
        self.reclaimer.stop()
        if self.lend is not None:
            self.lend()
        self._publish()
        n = older_running(reading.me, reading.others)
        if reading.brake:
            note(f"paused {self.what}: {reading.pressure}; resuming when it falls")
            return
        note(
            f"paused {self.what} to leave room for {n} older guarded job{'s' if n != 1 else ''}"
            f" (expected to grow by ~{format_size(still_to_grow(reading.me, reading.others))},"
            f" {format_size(reading.available)} free)"
        )

    def resume(self, *, quiet: bool = False) -> None:
        self._cont()
        took = self._end_pause()
        if not self.signalled:
            self.reclaimer.start()  # resumed without a token in hand: one comes back later
        self._publish()
        if not quiet:
            note(f"resumed {self.what} after {took:.1f}s")

    def kill(self) -> None:
        process.kill_tree(self.child)
        self._cont()  # SIGKILL ends a stopped process too; SIGCONT for good measure
        self._end_pause()

    def on_signal(self) -> None:
        """From the signal handler, after the signal was forwarded to the compiler."""
        self.signalled = True
        if self.paused:
            self._cont()

    def finish(self) -> float:
        """The compile ended: seconds paused in all (a pause still on is ended).
        Called again after that, it does nothing more."""
        if self.paused:
            self._cont()
            self._end_pause()
        return self.paused_s

    def _cont(self) -> None:
        for proc in list(self._stopped):
            proctree.send(proc, signal.SIGCONT)

    def _end_pause(self) -> float:
        took = 0.0
        if self._paused_at is not None:
            took = max(0.0, self.clock() - self._paused_at)
            self.paused_s += took
        if self._paused_since is not None:
            self.pauses.append((self._paused_since, time.time()))
        self._paused_at = self._paused_since = None
        return took

    def _publish(self) -> None:
        self.publish(
            {
                "paused": self.paused,
                "paused_since": self._paused_since,
                "paused_s": round(self.paused_s, 3),
            }
        )
