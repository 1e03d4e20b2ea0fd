"""One attempt of an admitted job: spawn it holding the slot, watch it, report how it ended.

While the compiler runs, its process tree's memory is sampled (the peak is learned)
and free memory is checked every MONITOR_INTERVAL: when it gets critical while
several guarded jobs run, the youngest job stops its own compile (it lost least
work) and says so in its result; the caller queues it again. Whether a SIGKILL was
the kernel's OOM killer is told from the OOM counters before and after, and an
LLVM allocation failure from the compiler's stderr (relay.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from ltoguard import process
from ltoguard.admission import choose_victim, critical
from ltoguard.cgroups import cgroup_oom_kills, host_oom_kills
from ltoguard.estimates import DEFAULT_ESTIMATE
from ltoguard.memory import available_memory
from ltoguard.messages import EXIT_CANNOT_RUN, error
from ltoguard.passthrough import HELD_ENV
from ltoguard.policy import running_jobs
from ltoguard.proctree import PeakSampler
from ltoguard.statedir import StateDirError, write_private_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ltoguard.admission import Running
    from ltoguard.jobs import JobRecord
    from ltoguard.jobserver import Lease
    from ltoguard.relay import StderrRelay
    from ltoguard.semaphore import Semaphore, Slot

MONITOR_INTERVAL = 0.25  # seconds between free-memory checks while a job runs
OOM_SCORE_ADJ_BASE = 300
OOM_SCORE_ADJ_STEP = 100
MAX_SAMPLES = 600  # memory samples kept per job for the report


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt ended."""

    code: int  # the compiler's returncode (-S: killed by signal S); 127: could not start
    peak: int  # bytes, largest anonymous memory of its process tree
    stopped_itself: bool = False  # we killed it to free memory for the older jobs
    out_of_memory: bool = False  # the kernel's OOM killer, or LLVM out of memory


class Attempt:
    """Runs the job's command once under a held slot."""

    def __init__(
        self,
        record: JobRecord,
        sem: Semaphore,
        memory_setting: str | None,
        relay: StderrRelay | None,
    ) -> None:
        self.record = record
        self.sem = sem
        self.memory_setting = memory_setting
        self.relay = relay

    def run(
        self, slot: Slot, signals: process.Forwarder, lease: Lease | None = None
    ) -> AttemptResult:
        """``lease``: the jobserver token lent while queued, taken back in the
        background while the compiler runs (it starts one job over -j meanwhile)."""
        # Signals were held back since admission: from here on they go to the
        # compiler (kept until it exists), never raised half-way through starting it.
        signals.install()
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)
        oom_before = (cgroup_oom_kills(), host_oom_kills())
        try:
            proc = self._spawn(slot)
        except OSError as exc:
            self.sem.release(slot)
            if self.relay is not None:
                self.relay.join()
            error(f"cannot run {self.record.job.argv[0]}: {exc.strerror}")
            return AttemptResult(EXIT_CANNOT_RUN, 0)
        signals.forward_to(proc)
        self._publish_child(slot, proc.pid)
        reclaimer = _Reclaimer(lease)
        try:
            code, peak, stopped = self._watch(proc)
            if self.relay is not None:
                self.relay.join()
            self.sem.release(slot)
        finally:
            # After the release: a take() that lost a race can block in read() where
            # the jobserver has no private non-blocking descriptor (macOS); the slot
            # must not wait for that.
            reclaimer.stop()
        oom = not stopped and self._out_of_memory(code, oom_before)
        return AttemptResult(code, peak, stopped_itself=stopped, out_of_memory=oom)

    def _spawn(self, slot: Slot) -> subprocess.Popen[bytes]:
        stderr_w = None
        if self.relay is not None:
            r, stderr_w = os.pipe()
            self.relay.start(r)
        try:
            env = dict(os.environ)
            env[HELD_ENV] = f"{os.getpid()}:{slot.index}"
            return process.spawn(
                self.record.job.argv,
                keep_fds=[slot.fd],
                stderr=stderr_w,
                env=env,
                oom_score_adj=self._oom_score_adj(),
            )
        finally:
            if stderr_w is not None:
                os.close(stderr_w)

    def _publish_child(self, slot: Slot, pid: int) -> None:
        """The run record names the compiler, whose memory the others' policies read."""
        try:
            slot.info["child"] = pid
            write_private_file(self.sem.dir_fd, slot.record_name, json.dumps(slot.info).encode())
        except OSError:
            pass  # the record is for display; the slot lock is what counts

    def _watch(self, proc: subprocess.Popen[bytes]) -> tuple[int, int, bool]:
        """Wait for the compiler, sampling it; stop it if memory gets critical and it is
        the youngest of several. Returns (returncode, peak, stopped_itself)."""
        samples = self.record.samples
        sampler = PeakSampler(proc.pid).start()
        stopped = False
        t0 = time.time()
        samples.append([round(t0, 2), 0])
        next_sample = 0.0
        while True:
            try:
                code = proc.wait(timeout=MONITOR_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now >= next_sample and len(samples) < MAX_SAMPLES:
                samples.append([round(now, 2), sampler.current])
                next_sample = now + max(1.0, (now - t0) / 60)
            if not stopped and self._should_yield(proc.pid):
                stopped = True
                process.kill_tree(proc.pid)
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
        """Above every ordinary compile (a killed guarded job is rerun; a killed library
        compile fails the build), and higher for each job admitted beside others, so the
        kernel's choice matches ours: the youngest guarded job goes first."""
        others = max(0, len(self._running_now()) - 1)
        return min(1000, OOM_SCORE_ADJ_BASE + OOM_SCORE_ADJ_STEP * others)

    def _should_yield(self, child: int) -> bool:
        """Free memory is critical, several guarded jobs run, and we are the youngest."""
        running = self._running_now()
        victim = choose_victim(running)
        if victim is None or victim.pid not in (child, os.getpid()):
            return False
        try:
            mem = available_memory(
                self.memory_setting, guarded_usage=sum(r.current for r in running)
            )
        except ValueError:
            return False
        return critical(mem.available, mem.total)

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


class _Reclaimer:
    """Takes a lent jobserver token back in a thread while the compile runs; what it
    did not get back, guard.py waits for after the compile, holding no slot."""

    def __init__(self, lease: Lease | None) -> None:
        import threading

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if lease is not None and lease.lent:
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
