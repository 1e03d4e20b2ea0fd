"""The guarded path: wait for admission, run the job holding a slot, learn, release.

One guarded invocation goes through these steps:

1. estimate its peak memory (its own history, else siblings', else a default);
2. queue (FIFO) for admission; while queued behind others, lend cargo's jobserver
   token back; at the head, take it back, then wait for memory (and the slot cap);
3. run the compiler holding the slot, sampling its process tree's memory, and watch
   free memory: if it gets critical while several guarded jobs run, the youngest
   stops its own compile and queues again at the head with a raised estimate;
4. if the kernel kills the job anyway (OOM) or LLVM aborts out of memory, rerun it
   once, alone; the rerun's diagnostics that cargo already saw are not repeated;
5. record the peak (history) and one event (for `ltoguard report`), release.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ltoguard import process
from ltoguard.jobs import Job, job_from_decision
from ltoguard.passthrough import HELD_ENV, exec_program, nested
from ltoguard.relay import StderrRelay
from ltoguard.semaphore import Semaphore, Snapshot, StateDirGone, slot_limit_policy
from ltoguard.statedir import StateDirError, open_state_dir, write_private_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ltoguard.config import Settings

EXIT_CONFIG = 2  # ltoguard's own configuration / state-directory errors
MEMORY_RECHECK = 0.5  # seconds a waiting head reuses a "does not fit" decision (= FULL_RECHECK)
MONITOR_INTERVAL = 0.25  # seconds between free-memory checks while a job runs
OOM_RERUN_HEADROOM = 1.25
OOM_SCORE_ADJ_BASE = 300
OOM_SCORE_ADJ_STEP = 100
VICTIM_HEADROOM = 1.10


def say(msg: str) -> None:
    try:
        sys.stderr.write(f"ltoguard: {msg}\n")
        sys.stderr.flush()
    except OSError:
        pass


def _running(snap: Snapshot, default: int) -> list[Any]:
    from ltoguard.admission import Running
    from ltoguard.memory import anon_rss

    out = []
    for h in snap.holders:
        rec = h.record or {}
        pid = rec.get("child") or rec.get("pid") or 0
        est = rec.get("estimate")
        started = rec.get("started")
        out.append(
            Running(
                pid=int(pid) if isinstance(pid, int) else 0,
                estimate=est if isinstance(est, int) else default,
                current=anon_rss(pid) if isinstance(pid, int) and pid > 0 else 0,
                started=float(started) if isinstance(started, (int, float)) else 0.0,
            )
        )
    return out


class Outcome:
    def __init__(self) -> None:
        self.queued = time.time()
        self.admitted: float | None = None
        self.waited = 0.0
        self.peak = 0
        self.reruns = 0
        self.requeues = 0
        self.samples: list[list[float]] = []
        self.budget: int | None = None
        self.available_at_admit: int | None = None
        self.mem_source = ""


def run_guarded(argv: Sequence[str]) -> int:
    """Entry from the CLI: settings (env > Cargo.toml metadata > user file) decide, then run."""
    from ltoguard.config import SettingsError, decide, load

    try:
        settings = load()
    except SettingsError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG
    if nested():
        return _exec_now(argv, settings)
    verdict = decide(argv, settings)
    if not verdict.guarded:
        return _exec_now(argv, settings)
    return run_job(
        job_from_decision(_wrapped(argv, settings), verdict.decision, verdict.override), settings
    )


def _wrapped(argv: Sequence[str], settings: Settings) -> list[str]:
    return [settings.wrap, *argv] if settings.wrap else list(argv)


def _exec_now(argv: Sequence[str], settings: Settings) -> int:
    return exec_program(_wrapped(argv, settings))


def run_job(job: Job, settings: Settings) -> int:
    try:
        path, dir_fd = open_state_dir(settings.dir)
    except StateDirError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG
    try:
        return _Runner(job, settings, Semaphore(path, dir_fd)).run()
    except StateDirError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG
    except OSError as exc:
        say(
            f"error: state directory {path}: {exc.strerror or exc}; fix it or set LTOGUARD_DIR"
            " to a writable local directory"
        )
        return EXIT_CONFIG


class _Runner:
    def __init__(self, job: Job, settings: Settings, sem: Semaphore) -> None:
        from ltoguard.estimates import DEFAULT_ESTIMATE, History, history_file

        self.job = job
        self.settings = settings
        self.sem = sem
        self.uid = os.geteuid()
        self.history_name = history_file(self.uid)
        if job.estimate is not None:
            self.estimate, self.basis = job.estimate, "configured"
        else:
            hist = History.load(self.history_name, dir_fd=sem.dir_fd)
            self.estimate, self.basis = hist.estimate(job.key, job.group)
        self.default_estimate = DEFAULT_ESTIMATE
        self.outcome = Outcome()
        self.relay = StderrRelay() if not _isatty(2) else None
        self._oom_before: tuple[int | None, int | None] = (None, None)
        self.ticket_info: dict[str, Any] = {}
        self.signals = process.Forwarder()

    # -- admission -------------------------------------------------------------------

    def _policy(self, alone: bool) -> Callable[[Snapshot], tuple[bool, str]]:
        from ltoguard.admission import admit, default_margin
        from ltoguard.memory import available_memory

        limit = self.settings.slots
        memory_setting = self.settings.memory
        cache: list[Any] = []  # [running-set key, when, reason] of the last "no"
        slot_cap = slot_limit_policy(limit) if limit is not None else None

        def policy(snap: Snapshot) -> tuple[bool, str]:
            if alone:
                if snap.running:
                    return False, "rerunning alone after running out of memory"
                return True, "alone, after running out of memory"
            if snap.running == 0:
                try:
                    mem = available_memory(memory_setting)
                    self._scale_default(mem.total)
                    self.outcome.available_at_admit = mem.available
                    self.outcome.budget = mem.available
                    self.outcome.mem_source = mem.source
                except ValueError:
                    pass
                return True, "no other guarded job running"
            if slot_cap is not None:  # checked before memory: it costs nothing to read
                ok, why = slot_cap(snap)
                if not ok:
                    return False, f"{why} (LTOGUARD_SLOTS)"
            # Reading memory costs ~1-2 ms; the head decides every FULL_RECHECK s and
            # whenever a slot frees. Re-read at once when the set of running jobs
            # changes (one ended: memory freed), else at most every MEMORY_RECHECK s.
            key = tuple(sorted(h.slot for h in snap.holders))
            now = time.monotonic()
            if cache and cache[0] == key and now - cache[1] < MEMORY_RECHECK:
                return False, cache[2]
            if not cache or cache[0] != key:
                self._refresh_estimate()
            running = _running(snap, self.default_estimate)
            mem = available_memory(memory_setting, guarded_usage=sum(r.current for r in running))
            self._scale_default(mem.total)
            ok, reason = admit(
                head_estimate=self.estimate,
                running=running,
                available=mem.available,
                margin=default_margin(mem.total),
                slot_limit=limit,
            )
            if ok:
                self.outcome.available_at_admit = mem.available
                self.outcome.budget = mem.available + sum(r.current for r in running)
                self.outcome.mem_source = mem.source
            else:
                cache[:] = [key, now, reason]
            return ok, reason

        return policy

    def _scale_default(self, budget_total: int) -> None:
        if self.basis != "default":
            return
        from ltoguard.estimates import default_estimate

        self.estimate = default_estimate(budget_total)
        self.ticket_info["estimate"] = self.estimate

    def _refresh_estimate(self) -> None:
        """A job that queued knowing nothing may learn from a sibling that finished meanwhile."""
        if self.basis not in ("default", "siblings"):
            return
        from ltoguard.estimates import History

        hist = History.load(self.history_name, dir_fd=self.sem.dir_fd, quiet=True)
        estimate, basis = hist.estimate(self.job.key, self.job.group)
        if basis != "default":
            self.estimate, self.basis = estimate, basis
            self.ticket_info["estimate"] = estimate  # the record written at admission
            self.ticket_info["estimate_basis"] = basis

    def _info(self) -> dict[str, Any]:
        return {
            "kind": self.job.kind,
            "crate": self.job.name,
            "types": self.job.types,
            "lto": self.job.lto,
            "cwd": os.getcwd(),
            "workspace": os.getcwd(),
            "since": self.outcome.queued,
            "pid": os.getpid(),
            "estimate": self.estimate,
            "estimate_basis": self.basis,
            "key": self.job.key,
            "group": self.job.group,
        }

    # -- the whole run ---------------------------------------------------------------

    def run(self) -> int:
        from ltoguard.estimates import describe as describe_estimate
        from ltoguard.jobserver import Jobserver, Lease

        lend = os.environ.get("LTOGUARD_LEND", "1").strip().lower() not in (
            "0",
            "no",
            "off",
            "false",
        )
        jobserver = Jobserver.from_environ(os.environ) if lend else None
        seq: int | None = None
        alone = False
        announced = False
        while True:
            t_wait = time.time()

            def on_wait(snap: Snapshot, reason: str) -> None:
                nonlocal announced
                if announced:
                    return
                announced = True
                now = time.time()
                running = ", ".join(h.describe(now) for h in snap.holders) or "none"
                est = describe_estimate(self.estimate, self.basis)
                say(f"{self.job.what} waits ({reason}); needs {est}; running: {running}")

            lease = Lease(jobserver)

            def gate(is_head: bool, lease: Lease = lease) -> bool:
                # Only the head of the queue keeps (or takes back) its token: one
                # idle token at most, instead of one per queued job, and the head
                # has its token in hand when its turn comes, so a free slot is not
                # left idle while cargo and we race for tokens (measured: a reclaim
                # under a busy cargo took ~24 s median).
                if not is_head:
                    if not lease.lent:
                        lease.lend()
                    return False
                if lease.lent:
                    return lease.reclaim(timeout=0.0)
                return True

            try:
                process.raise_on_signals()
                if self.signals.received:
                    # A signal came during the last attempt (or since): no second one.
                    raise process.Interrupted(self.signals.received[0])
                with lease:
                    self.ticket_info = self._info()
                    slot = self.sem.acquire(
                        self.ticket_info,
                        self._policy(alone),
                        on_wait,
                        seq=seq,
                        gate=gate,
                        hold_signals=True,  # until _run_once forwards them
                    )
            except StateDirGone:
                # Removed mid-build: make it again (same checks) and queue there.
                path, dir_fd = open_state_dir(self.settings.dir)
                self.sem = Semaphore(path, dir_fd)
                continue
            except process.Interrupted as exc:
                self._event(None, -exc.signum, "interrupted")
                return process.die_by(exc.signum)
            self.outcome.waited += time.time() - t_wait
            self.outcome.admitted = self.outcome.admitted or time.time()
            seq = slot.seq
            code, victim, peak = self._run_once(slot)
            self.outcome.peak = max(self.outcome.peak, peak)
            if victim:
                self.outcome.requeues += 1
                self.estimate = max(self.estimate, int(peak * VICTIM_HEADROOM))
                self.basis = "raised"
                say(
                    f"{self.job.what}: free memory is critical; stopped this compile"
                    f" (youngest of the running ones, at {_size(peak)}) and queued it"
                    " again at the head"
                )
                continue
            if self._oom(code):
                self._learn(peak)
                if self.outcome.reruns == 0:
                    self.outcome.reruns = 1
                    self.estimate = max(self.estimate, int(peak * OOM_RERUN_HEADROOM))
                    self.basis = "raised"
                    alone = True
                    say(
                        f"{self.job.what} ran out of memory (killed at {_size(peak)});"
                        " running it again, alone"
                    )
                    continue
                say(
                    f"error: {self.job.what} ran out of memory even when it ran alone"
                    f" (it used {_size(peak)}); give the build more memory or lower"
                    " its LTO/debuginfo settings"
                )
                self._event(slot, code, "oom")
                return process.exit_like(code)
            if code >= 0 or code != -signal.SIGKILL:
                self._learn(peak)
            self._event(slot, code, "ok" if code == 0 else "failed")
            return process.exit_like(code)

    def _run_once(self, slot: Any) -> tuple[int, bool, int]:
        from ltoguard.memory import PeakSampler, cgroup_oom_kills, host_oom_kills

        # Signals were held back since admission: from here on they go to the
        # compiler (kept until it exists), never raised half-way through starting it.
        self.signals = process.Forwarder()
        self.signals.install()
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)
        self._oom_before = (cgroup_oom_kills(), host_oom_kills())
        try:
            stderr_w = None
            if self.relay is not None:
                r, stderr_w = os.pipe()
                self.relay.start(r)
            try:
                env = dict(os.environ)
                env[HELD_ENV] = f"{os.getpid()}:{slot.index}"
                proc = process.spawn(
                    self.job.argv,
                    keep_fds=[slot.fd],
                    stderr=stderr_w,
                    env=env,
                    oom_score_adj=self._oom_score_adj(),
                )
            finally:
                if stderr_w is not None:
                    os.close(stderr_w)
        except OSError as exc:
            self.sem.release(slot)
            if self.relay is not None:
                self.relay.join()
            say(f"error: cannot run {self.job.argv[0]}: {exc.strerror}")
            return 127, False, 0
        self.signals.forward_to(proc)
        try:
            slot.info["child"] = proc.pid
            write_private_file(self.sem.dir_fd, slot.record_name, _json(slot.info))
        except OSError:
            pass  # the record is for display; the slot lock is what counts
        sampler = PeakSampler(proc.pid).start()
        victim = False
        t0 = time.time()
        self.outcome.samples.append([round(t0, 2), 0])
        next_sample = 0.0
        while True:
            try:
                code = proc.wait(timeout=MONITOR_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now >= next_sample and len(self.outcome.samples) < 600:
                self.outcome.samples.append([round(now, 2), sampler.current])
                next_sample = now + max(1.0, (now - t0) / 60)
            if not victim and self._should_yield(proc.pid):
                victim = True
                process.kill_tree(proc.pid)
        peak = max(sampler.stop(), 0)
        self.outcome.samples.append([round(time.time(), 2), 0])
        if self.relay is not None:
            self.relay.join()
        self.sem.release(slot)
        return code, victim, peak

    def _running_now(self) -> list[Any]:
        """The guarded jobs holding slots now: the slot locks decide, not leftover records."""
        try:
            with self.sem.mutex():
                snap = self.sem.snapshot()
        except (OSError, StateDirError):
            return []
        return _running(snap, self.default_estimate)

    def _oom_score_adj(self) -> int:
        """Above every ordinary compile (a killed guarded job is rerun; a killed library
        compile fails the build), and higher for each job admitted beside others, so the
        kernel's choice matches ours: the youngest guarded job goes first."""
        others = max(0, len(self._running_now()) - 1)
        return min(1000, OOM_SCORE_ADJ_BASE + OOM_SCORE_ADJ_STEP * others)

    def _should_yield(self, child: int) -> bool:
        """Free memory is critical, several guarded jobs run, and we are the youngest."""
        from ltoguard.admission import choose_victim, critical
        from ltoguard.memory import available_memory

        running = self._running_now()
        victim = choose_victim(running)
        if victim is None or victim.pid not in (child, os.getpid()):
            return False
        try:
            mem = available_memory(
                self.settings.memory, guarded_usage=sum(r.current for r in running)
            )
        except ValueError:
            return False
        return critical(mem.available, mem.total)

    def _oom(self, code: int) -> bool:
        from ltoguard.memory import cgroup_oom_kills, host_oom_kills

        if self.relay is not None and code != 0 and self.relay.out_of_memory():
            return True
        if code != -signal.SIGKILL:
            return False
        after = (cgroup_oom_kills(), host_oom_kills())
        before = self._oom_before
        counted = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
        if not counted:
            return True  # no counter to ask: a SIGKILL we did not send is most likely OOM
        return any(a > b for b, a in counted)

    def _learn(self, peak: int) -> None:
        if self.job.estimate is not None or peak <= 0:
            return
        from ltoguard.estimates import record_peak

        record_peak(self.history_name, self.job.key, self.job.group, peak, dir_fd=self.sem.dir_fd)

    def _event(self, slot: Any, code: int, outcome: str) -> None:
        try:
            from ltoguard.events import append_event
        except ImportError:  # pragma: no cover
            return
        o = self.outcome
        append_event(
            self.sem.dir_fd,
            self.uid,
            {
                "v": 1,
                "kind": self.job.kind,
                "crate": self.job.name,
                "types": self.job.types,
                "lto": self.job.lto,
                "workspace": os.getcwd(),
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "queued": o.queued,
                "admitted": o.admitted,
                "finished": time.time(),
                "waited": round(o.waited, 3),
                "peak": o.peak,
                "estimate": self.estimate,
                "estimate_basis": self.basis,
                "exit": code,
                "reruns": o.reruns,
                "requeues": o.requeues,
                "outcome": outcome,
                "budget": o.budget,
                "available_at_admit": o.available_at_admit,
                "samples": o.samples[-120:],
                "mem_source": o.mem_source,
            },
        )


def _json(obj: object) -> bytes:
    import json

    return json.dumps(obj).encode()


def _size(n: int) -> str:
    from ltoguard.memory import format_size

    return format_size(n)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
