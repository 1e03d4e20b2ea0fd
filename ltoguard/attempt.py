"""One attempt of an admitted job: spawn it holding the slot, watch it, report how it ended.

While the compiler runs, its process tree's memory is sampled (the peak is learned)
and free memory is checked (Limits.watch_interval: often in the compile's first
seconds, when it grows fastest, and near the floor, unless no slot holder is older;
pause.py): when what the running jobs are still expected to grow would take it
below the critical floor, the youngest job pauses its compile until there is room
again (and while memory pressure stays high: pressure.Brake); only when memory gets
critical all the same does the youngest job stop its own compile (it lost least
work) and say so in its result; the caller queues it again. Whether a SIGKILL was
the kernel's OOM killer is told from the OOM counters before and after, and an LLVM
allocation failure from the compiler's stderr (relay.py)."""

from __future__ import annotations

import json
import os
import signal
import time

from ltoguard import process
from ltoguard.admission import DEFAULT, Lend, Level, swap_counted
from ltoguard.cgroups import cgroup_oom_kills, host_oom_kills
from ltoguard.estimates import DEFAULT_ESTIMATE, Basis
from ltoguard.lending import LendWhilePaused, LentTokens
from ltoguard.makeflags import one_thread_jobserver
from ltoguard.memory import available_memory, available_swap
from ltoguard.messages import EXIT_CANNOT_RUN, error, note
from ltoguard.passthrough import HELD_ENV
from ltoguard.pause import PauseWatch, Reading, Reclaimer
from ltoguard.policy import running_jobs
from ltoguard.pressure import Brake
from ltoguard.proctree import PeakSampler
from ltoguard.sizes import format_size
from ltoguard.statedir import StateDirError, write_private_file
from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from ltoguard.admission import Running
    from ltoguard.configvalues import MemorySetting
    from ltoguard.jobs import JobRecord
    from ltoguard.jobserver import Lease
    from ltoguard.policy import ReadMemory, ReadSwap
    from ltoguard.relay import StderrRelay
    from ltoguard.semaphore import Semaphore, Slot

# The kernel's OOM killer picks the largest resident size plus oom_score_adj/1000 of
# the memory bound: a young guarded job beside a library compile at its peak is
# picked first only with a bonus near the whole bound (docs/design.md, pausing).
OOM_SCORE_ADJ_BASE = 900
OOM_SCORE_ADJ_STEP = 25  # per guarded job admitted beside it: the youngest of 5 first
MAX_SAMPLES = 600  # memory samples kept per attempt, for its curve and the report
# What a spare token adds to a multi-unit compile's peak (docs/benchmarks.md).
SPARE_TOKENS_GROWTH = 1.1


@struct(frozen=True)
class AttemptResult:
    """How one attempt ended."""

    code: int  # the compiler's returncode (-S: killed by signal S); 127: could not start
    peak: int  # bytes, largest anonymous memory of its process tree
    stopped_itself: bool = False  # we killed it to free memory for the older jobs
    out_of_memory: bool = False  # the kernel's OOM killer, or LLVM out of memory


class Attempt:
    """Runs the job's command once under a held slot.

    ``running_now`` (the slot holders, default: read from the semaphore) and
    ``read_memory`` are what the pause decisions read; tests pass their own."""

    def __init__(
        self,
        record: JobRecord,
        sem: Semaphore,
        memory_setting: MemorySetting | None,
        relay: StderrRelay | None,
        *,
        running_now: Callable[[], list[Running]] | None = None,
        read_memory: ReadMemory = available_memory,
        brake: Brake | None = None,
        read_swap: ReadSwap = available_swap,
    ) -> None:
        self.record = record
        self.sem = sem
        self.memory_setting = memory_setting
        self.relay = relay
        self.running_now = running_now or self._running_now
        self.read_memory = read_memory
        self.brake = brake  # made when a second job first runs beside this one
        self.read_swap = read_swap

    def run(
        self,
        slot: Slot,
        signals: process.Forwarder,
        lease: Lease | None = None,
        ended: Callable[[AttemptResult], object] | None = None,
    ) -> AttemptResult:
        """``lease``: the jobserver token lent while queued, taken back in the
        background while the compiler runs (it starts one job over -j meanwhile);
        lent again while the compile is paused, within the lending bound. ``ended``
        runs with the result before the slot is freed (the peak is learned there, so
        a waiter woken by the freed slot finds it)."""
        # Signals were held back since admission: from here on they go to the
        # compiler (kept until it exists), never raised half-way through starting it.
        signals.install()
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)
        oom_before = (cgroup_oom_kills(), host_oom_kills())
        try:
            proc = self._spawn(slot)
        except OSError as exc:
            result = AttemptResult(EXIT_CANNOT_RUN, 0)
            try:
                self._release(slot, result, ended)
            finally:
                if self.relay is not None:
                    self.relay.join()
                error(f"cannot run {self.record.job.argv[0]}: {exc.strerror}")
            return result
        signals.forward_to(proc)
        self._publish(slot, {"child": proc.pid})
        reclaimer = Reclaimer(lease)
        watch = PauseWatch(
            proc.pid,
            self.record.job.what,
            read=lambda: self._reading(proc.pid),
            publish=lambda fields: self._publish(slot, fields),
            lend=None if lease is None or not lease.active else self._lend_paused(lease),
            reclaimer=reclaimer,
        )
        signals.after_forward = watch.on_signal
        if signals.received:  # forwarded before the hook was in place
            watch.on_signal()
        try:
            code, peak, stopped = self._watch(proc, watch)
            if self.relay is not None:
                self.relay.join()
            oom = not stopped and self._out_of_memory(code, oom_before)
            result = AttemptResult(code, peak, stopped_itself=stopped, out_of_memory=oom)
            self._release(slot, result, ended)
        finally:
            # After the release: a take() that lost a race can block in read() where
            # the jobserver has no private non-blocking descriptor (macOS); the slot
            # must not wait for that.
            watch.finish()  # never leave a compile stopped, whatever escaped _watch
            reclaimer.stop()
            signals.after_forward = None
        return result

    def _release(
        self, slot: Slot, result: AttemptResult, ended: Callable[[AttemptResult], object] | None
    ) -> None:
        try:
            if ended is not None:
                ended(result)
        finally:
            self.sem.release(slot)

    def _lend_paused(self, lease: Lease) -> Callable[[], object]:
        """The pause's gate (lending.LendWhilePaused), counted and lent under the
        state directory's mutex as the waiters' gate is; a state directory that
        cannot be locked keeps the token (lending is advice)."""
        tokens = LentTokens(self.sem.dir_fd)
        gate = LendWhilePaused(lease, tokens, build=self.record.build, crate=self.record.job.name)

        def lend() -> object:
            if lease.lent:
                return Lend.LENT  # asked at each check while paused: no lock for that
            try:
                with self.sem.mutex():
                    return gate()
            except (OSError, StateDirError):
                return None

        return lend

    def _spawn(self, slot: Slot) -> subprocess.Popen[bytes]:
        stderr_w = None
        if self.relay is not None:
            r, stderr_w = os.pipe()
            self.relay.start(r)
        own_jobserver: tuple[int, ...] = ()
        try:
            env = dict(os.environ)
            env[HELD_ENV] = f"{os.getpid()}:{slot.index}"
            if self.record.job.codegen_threads and (
                slot.info.get("alone") is True or self._near_the_bound()
            ):
                own_jobserver = _one_thread(env)
                if own_jobserver:
                    self.record.one_thread = True
            return process.spawn(
                self.record.job.argv,
                keep_fds=[slot.fd, *own_jobserver],
                stderr=stderr_w,
                env=env,
                oom_score_adj=self._oom_score_adj(),
            )
        finally:
            for fd in (*own_jobserver, stderr_w):
                if fd is not None:
                    os.close(fd)

    def _near_the_bound(self) -> bool:
        """Would the job's estimate, grown by what a spare token adds, reach the memory
        guarded jobs may use (``budget``: free at its admission, plus what running
        guarded jobs hold)? Then it runs on one codegen thread, as a rerun after an
        OOM kill does, and says so: a spare token (cargo's, or one a waiter lent)
        would raise its peak past the bound. Not on a default estimate (a guess)."""
        rec = self.record
        if not rec.budget or rec.basis == Basis.DEFAULT:
            return False
        grown = int(rec.estimate * SPARE_TOKENS_GROWTH)
        if grown < rec.budget:
            return False
        if rec.one_thread:
            return True  # said at its first attempt
        note(
            f"{rec.job.what} needs ~{format_size(rec.estimate)}, ~{format_size(grown)} with"
            f" a spare codegen thread, of the {format_size(rec.budget)} guarded jobs may"
            " use: on one codegen thread"
        )
        return True

    def _publish(self, slot: Slot, fields: dict[str, object]) -> None:
        """The run record names the compiler, whose memory the others' policies read,
        and whether it is paused (the others' pause decisions read that)."""
        try:
            slot.info.update(fields)
            write_private_file(self.sem.dir_fd, slot.record_name, json.dumps(slot.info).encode())
        except OSError:
            pass  # the record is for display; the slot lock is what counts

    def _watch(self, proc: subprocess.Popen[bytes], watch: PauseWatch) -> tuple[int, int, bool]:
        """Wait for the compiler, sampling it; pause, resume or stop it as the watch
        says. Returns (returncode, peak, stopped_itself)."""
        samples = self.record.samples
        sampler = PeakSampler(proc.pid).start()
        stopped = False
        t0 = time.time()
        self.record.run_from = len(samples)
        samples.append([round(t0, 2), 0])
        next_sample = 0.0
        exit_wait = process.ExitWait(proc)
        try:
            while True:
                age = time.time() - t0
                interval = DEFAULT.watch_interval(age, settled=watch.settled, tight=watch.tight)
                if (code := exit_wait.wait(interval)) is not None:
                    break
                now = time.time()
                if now >= next_sample and len(samples) - self.record.run_from < MAX_SAMPLES:
                    samples.append([round(now, 2), sampler.current])
                    # Closer in the first seconds, when a compile takes most of its peak:
                    # the curve learned from these must see the rise.
                    early = now - t0 < DEFAULT.fast_watch_for
                    next_sample = now + (0.25 if early else max(1.0, (now - t0) / 60))
                if not stopped and watch.step():
                    stopped = True
        finally:
            exit_wait.close()
        self.record.paused_s += watch.finish()
        self.record.pauses.extend(watch.pauses)
        peak = max(sampler.stop(), 0)
        samples.append([round(time.time(), 2), 0])
        return code, peak, stopped

    def _running_now(self) -> list[Running]:
        """The guarded jobs holding slots now: the slot locks decide, not leftover records."""
        try:
            with self.sem.mutex():
                snap = self.sem.snapshot()
        except (OSError, StateDirError):
            return []
        return running_jobs(snap, DEFAULT_ESTIMATE)

    def _oom_score_adj(self) -> int:
        """Far above every ordinary compile (a killed guarded job is rerun; a killed
        library compile fails the build), and higher for each job admitted beside
        others, so the kernel's choice tends to ours: the youngest guarded job goes
        first (up to five; 1000 is the most there is)."""
        others = max(0, len(self.running_now()) - 1)
        return min(1000, OOM_SCORE_ADJ_BASE + OOM_SCORE_ADJ_STEP * others)

    def _reading(self, child: int) -> Reading | None:
        """This job and the other slot holders, and free memory, for pause_step;
        None when this job is not among them."""
        running = self.running_now()
        me = next((r for r in running if r.pid in (child, os.getpid())), None)
        if me is None:
            return None
        if len(running) == 1:
            # Alone, nothing depends on memory (it resumes, and is never paused or
            # stopped: that would free memory for nobody), so it is not read.
            if self.brake is not None:
                self.brake.forget()  # readings from before are no longer "in a row"
            return Reading(me, [], 0, 0)
        mem = self.read_memory(self.memory_setting, guarded_usage=sum(r.current for r in running))
        others = [r for r in running if r is not me]
        if self.brake is None:
            self.brake = Brake.here()
        # Without PSI nothing tells light swapping from thrash: swap counts for nothing.
        swap = 0
        if self.brake.read() is not Level.NONE and not self.brake.on:
            swap = swap_counted(self.read_swap(self.memory_setting), mem.total)
        return Reading(me, others, mem.available, mem.total, swap, self.brake.on, self.brake.text())

    def _out_of_memory(self, code: int, before: tuple[int | None, int | None]) -> bool:
        if self.relay is not None and code != 0 and self.relay.out_of_memory():
            return True
        if code != -signal.SIGKILL:
            return False
        after = (cgroup_oom_kills(), host_oom_kills())
        counted = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
        if not counted:
            return True  # no counter to ask: a SIGKILL we did not send is most likely OOM
        return any(a > b for b, a in counted)


def _one_thread(env: dict[str, str]) -> tuple[int, ...]:
    """A jobserver of the compile's own, empty (makeflags.one_thread_jobserver), or
    cargo's as before where no pipe can be made (out of descriptors)."""
    try:
        return one_thread_jobserver(env)
    except OSError:
        return ()
