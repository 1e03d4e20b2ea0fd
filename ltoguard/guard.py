"""The guarded path: queue for admission, run the job holding a slot, decide what next.

One guarded invocation goes through these steps, each in its own module:

1. its estimate: its own history, else siblings', else the cold estimate from
   its inputs (inputs.py), else a default (estimates.py, read through history.py's
   store);
2. the queue (FIFO, semaphore.py): once told to wait it lends cargo its jobserver
   token (lending.py, jobserver.py; a build script's compile keeps it), and at the
   head it waits until admission says yes (ltoguard.admission's rules, applied by policy.py);
3. one attempt (attempt.py): the compiler runs holding the slot, its memory is
   sampled; the youngest job pauses while the others' growth would leave too little
   free (pause.py), and stops itself if memory gets critical all the same;
4. the next step (retry.py, pure): queue again at the head with a raised
   estimate, rerun once alone after an OOM kill, or done with the compiler's status;
5. the peak is learned (history.py) and one event written (`ltoguard report`).

This module carries the steps out; it holds no policy of its own.
"""

from __future__ import annotations

import os
import time
from functools import partial

from ltoguard import curves, process
from ltoguard.admission import Why
from ltoguard.jobs import Job, JobRecord, job_from_decision, job_inputs
from ltoguard.lending import LendWhileWaiting, LentTokens, a_sibling_waiter_holds_a_token
from ltoguard.messages import EXIT_CONFIG, channel, error, note, say
from ltoguard.passthrough import exec_program, nested
from ltoguard.retry import DONE, RERUN_ALONE, RetryState, next_step
from ltoguard.semaphore import Semaphore, Snapshot, StateDirGone
from ltoguard.statedir import StateDirError, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ltoguard.admission import Admission
    from ltoguard.attempt import AttemptResult
    from ltoguard.config import Settings
    from ltoguard.estimates import Basis
    from ltoguard.history import HistoryStore
    from ltoguard.jobserver import Lease
    from ltoguard.policy import AdmissionPolicy
    from ltoguard.relay import StderrRelay
    from ltoguard.retry import Step
    from ltoguard.semaphore import Slot, Ticket


def run_guarded(argv: Sequence[str]) -> int:
    """Entry from the CLI: the settings (env > Cargo.toml metadata > user file) and
    verdict.py's rules decide; a "pass" is exec'd, a "guard" is run as a job."""
    from ltoguard.config import SettingsError, decide, load

    try:
        settings = load(warn=False)
    except SettingsError as exc:
        error(str(exc))
        return EXIT_CONFIG
    command = [settings.wrap, *argv] if settings.wrap else list(argv)
    if nested():
        return exec_program(command)
    verdict = decide(argv, settings)
    if not verdict.guarded:
        return exec_program(command)
    from ltoguard.buildcheck import said_early

    if not said_early():  # for a guarded job only: a file's `wrap` brings every crate here
        settings.warn()
    return run_job(job_from_decision(command, verdict.decision, verdict.override), settings)


def run_job(job: Job, settings: Settings) -> int:
    """Run one job under the gate; ltoguard's own errors exit with EXIT_CONFIG."""
    try:
        path, dir_fd = open_state_dir(settings.dir)
    except StateDirError as exc:
        error(str(exc))
        return EXIT_CONFIG
    try:
        return GuardedRun(job, settings, Semaphore(path, dir_fd)).run()
    except StateDirError as exc:
        error(str(exc))
        return EXIT_CONFIG
    except OSError as exc:
        error(
            f"state directory {path}: {exc.strerror or exc}; fix it or set LTOGUARD_DIR"
            " to a writable local directory"
        )
        return EXIT_CONFIG


class GuardedRun:
    """One guarded job from its first ticket to its exit status."""

    def __init__(self, job: Job, settings: Settings, sem: Semaphore) -> None:
        from ltoguard.estimates import Basis

        self.job = job
        self.settings = settings
        self.sem = sem
        self._history: HistoryStore | None = None
        self.inputs = job_inputs(job) if job.estimate is None else None
        basis: str
        curve = None
        if job.estimate is not None:
            estimate, basis = job.estimate, Basis.CONFIGURED
        else:
            estimate, basis, curve = self._relearn(quiet=False)
        self.record = JobRecord(job, estimate, basis, curve=curve)
        self.record.inputs = self.inputs
        self.waiting: str | None = None  # why it waited, once it did
        self.held_by: str | None = None  # the last refusal: what held it last
        # Each attempt for the report: [queued, admitted, ended, paused_s, next step]
        # (shorter if it never got that far); the event log's "attempts".
        self.attempts: list[list[float | str]] = []
        self.paused_at_admission = 0.0
        self.told_wait = False
        self.requeued: Ticket | None = None  # the next attempt's ticket, made by _ended

    def run(self) -> int:
        from ltoguard.jobserver import Jobserver, Lease
        from ltoguard.relay import StderrRelay

        policy = self._policy()
        jobserver = Jobserver.from_environ(os.environ) if self.settings.lend else None
        # A relay dedupes an OOM rerun's diagnostics for cargo; a terminal gets the
        # compiler's stderr directly (colours, progress).
        relay = None if _isatty(2) else StderrRelay()
        # One lease for the whole job: its token stays lent between a requeue and
        # the next admission (it is queued again), and is balanced before it exits.
        with Lease(jobserver, on_change=self._mark_lent) as lease:
            try:
                code = self._attempts(policy, lease, relay)
            finally:
                self._drop_requeued()  # whatever ended the job between two attempts
        return process.exit_like(code)

    def _attempts(self, policy: AdmissionPolicy, lease: Lease, relay: StderrRelay | None) -> int:
        """Queue, run, and queue again while an attempt says so; the exit status."""
        from ltoguard.attempt import Attempt

        state = RetryState()
        seq: int | None = None
        signals = process.Forwarder()
        while True:
            try:
                process.raise_on_signals()
                if signals.received:
                    # A signal came during the last attempt (or since): no second one.
                    raise process.Interrupted(signals.received[0])
                # On the ticket it queued again on (_ended), if it did.
                slot = self._acquire(policy, lease, seq, self.requeued)
            except StateDirGone:
                # Removed mid-build: make it again (same checks) and queue there.
                self._drop_requeued()
                path, dir_fd = open_state_dir(self.settings.dir)
                self.sem = Semaphore(path, dir_fd)
                continue
            except process.Interrupted as exc:
                self._event(-exc.signum, "interrupted", state)
                return -exc.signum
            self.requeued = None  # dropped at admission
            seq = slot.seq
            if policy.alone:
                self._token_back_before_alone(lease)
            signals = process.Forwarder()
            attempt = Attempt(self.record, self.sem, self.settings.memory_parsed, relay)
            steps: list[Step] = []
            ended = partial(self._ended, state, steps, policy, seq)
            result = attempt.run(slot, signals, lease, ended)
            self.record.peak = max(self.record.peak, result.peak)
            step = steps[0]
            state = self._attempt_ended(step)
            if step.message:
                # An error fails the unit (cargo replays nothing of it); the rest is news.
                (say if step.action == DONE else note)(step.message)
            if step.action == DONE:
                self._event(step.code, step.outcome, state)
                # Balanced before we go, holding no slot: cargo runs its -j jobs
                # meanwhile, one with our token; in a bare interpreter, where it can.
                stop = partial(_signalled_or_orphaned, signals, lease)  # a signal ends it
                if not lease.reclaim(timeout=0):
                    lent = os.path.join(self.sem.path, LentTokens(self.sem.dir_fd).name)
                    lease.reclaim_in_small_process(step.code, RECLAIM_AFTER_RUN, lent, stop)
                lease.reclaim(should_stop=stop, timeout=RECLAIM_AFTER_RUN)
                return step.code

    def _drop_requeued(self) -> None:
        """The ticket the job queued again on, if it never waited on it (a signal, an
        error) or the state directory went: dropped once (records.drop_ticket)."""
        ticket, self.requeued = self.requeued, None
        if ticket is not None:
            self.sem.drop_ticket(ticket)

    def _token_back_before_alone(self, lease: Lease) -> None:
        """Rerunning alone after an OOM kill: nothing may start beside it, an ordinary
        compile on its token included; so it takes its token back first, unless a
        waiter of this build holds one (it runs no compile, and starts after)."""
        if lease.lent and not lease.reclaim(timeout=0):
            lease.reclaim(
                should_stop=self._a_sibling_waiter_holds_a_token,
                poll=0.25,
                timeout=RECLAIM_BEFORE_ALONE,
            )

    def _a_sibling_waiter_holds_a_token(self) -> bool:
        try:
            with self.sem.mutex():  # waiters lend under it
                return a_sibling_waiter_holds_a_token(self.sem.dir_fd, self.record.build)
        except (OSError, StateDirError):
            return False

    def _rerun_alone_runs(self) -> bool:
        """The lending gate's ``beside_alone`` (under the mutex): a holder's record
        says it reruns alone after an OOM kill."""
        from ltoguard.policy import rerun_running

        try:
            return rerun_running(self.sem.snapshot())
        except OSError:
            return False  # the state directory went: the wait says so

    def _mark_lent(self, lent: bool) -> None:
        """Lease.on_change: counted in the state directory in use now (it may have
        been made again mid-build), as the lending gate counts it (lending.py)."""
        LentTokens(self.sem.dir_fd).mark(lent)

    def _policy(self) -> AdmissionPolicy:
        from ltoguard.policy import AdmissionPolicy

        relearn = None
        if self.job.estimate is None:
            relearn = self._relearn
        policy = AdmissionPolicy(
            self.record,
            slots=self.settings.slots,
            memory=self.settings.memory_parsed,
            relearn=relearn,
        )
        policy.read_bound()
        return policy

    def history(self) -> HistoryStore:
        """What was learned, opened when first needed: a job with a configured estimate
        neither reads nor records it (nor warns about where it lives)."""
        if self._history is None:
            from ltoguard.history import HistoryStore

            self._history = HistoryStore.for_job(self._state_dir, self.job.target)
        return self._history

    def _state_dir(self) -> tuple[str, int | None]:
        """The state directory in use now (it may have been made again mid-build)."""
        return self.sem.path, self.sem.dir_fd

    def _relearn(self, quiet: bool = True) -> tuple[int, Basis, curves.Curve | None]:
        """The estimate from everything learned so far (a sibling may just have
        finished), its basis and the memory curve it comes with."""
        from ltoguard import inputs

        job = self.job
        return self.history().lookup(
            job.key, job.group, toolchain=job.toolchain, inputs=self.inputs,
            predict=partial(inputs.predict, debuginfo=job.debuginfo),
            line=partial(inputs.line, debuginfo=job.debuginfo), quiet=quiet,
        )  # fmt: skip

    def _acquire(
        self, policy: AdmissionPolicy, lease: Lease, seq: int | None, ticket: Ticket | None
    ) -> Slot:
        """Queue (again at ``seq``, the job's first position, after stopping itself,
        on the ``ticket`` made then) until the policy admits it, lending the token
        meanwhile; signals stay held until the attempt forwards them."""
        t_wait = time.time()
        self.attempts.append([round(t_wait, 3)])
        slot = self.sem.acquire(
            self.record.ticket,
            policy,
            self._announce,
            seq=seq,
            ticket=ticket,
            gate=LendWhileWaiting(
                lease,
                LentTokens(self.sem.dir_fd),
                beside_alone=self._rerun_alone_runs,
                build=self.record.build,
                crate=self.job.name,
            ),
            hold_signals=True,
        )
        self.record.waited += time.time() - t_wait
        self.record.admitted = self.record.admitted or time.time()
        self.attempts[-1].append(round(time.time(), 3))
        self.paused_at_admission = self.record.paused_s
        self._started(self.record.waited, slot.decision)
        return slot

    def _attempt_ended(self, step: Step) -> RetryState:
        """Record the attempt for the report (its end, its own paused seconds, what
        comes next); the retry state to go on with."""
        paused = round(self.record.paused_s - self.paused_at_admission, 3)
        # Down to the millisecond: never after the event's "finished", written next.
        self.attempts[-1] += [int(time.time() * 1000) / 1000, paused, step.action]
        return step.state

    def _announce(self, snap: Snapshot, decision: Admission) -> None:
        """Called on each refusal. The waiting line is said once per job (not once per
        requeue). Under cargo it goes past cargo's message cache (messages.py); where
        it cannot, it is said in the past tense once the job starts (`_started`), so a
        replay stays true."""
        # With its estimate and basis as they are now: relearned, they may change.
        self.held_by = self.record.held_by(decision)
        if self.waiting is not None:
            return
        now = time.time()
        running = ", ".join(h.describe(now) for h in snap.holders) or "none"
        self.waiting = self.held_by
        if not channel().replayed:
            note(f"{self.job.what} waits ({self.waiting}; running: {running})")

    def _started(self, waited: float, decision: Admission | None = None) -> None:
        """Under cargo, the CI log also says how long the job waited, once, and why:
        the refusal that held it last, which may not be the first one (a job queued
        behind one about to start then waits for memory or a CPU); and that it started
        before waiters ahead of it (backfill) whenever it did."""
        if decision is not None and decision.why is Why.BACKFILL and channel().under_cargo:
            self.told_wait = True
            estimated = self.record.estimated
            note(f"{self.job.what} {decision.text} (waited {waited:.1f}s; {estimated})")
            return
        if self.told_wait or self.held_by is None or not channel().under_cargo:
            return
        self.told_wait = True
        note(f"{self.job.what} waited {waited:.1f}s before it started ({self.held_by})")

    def _ended(
        self,
        state: RetryState,
        steps: list[Step],
        policy: AdmissionPolicy,
        seq: int,
        result: AttemptResult,
    ) -> None:
        """An attempt ended, its slot not yet freed: what comes next, and the peak
        learned now, so that a waiter woken by the freed slot estimates from it. A job
        that queues again takes its ticket at its first position now: a waiter woken
        by the freed slot finds it still ahead (it would take its place, or start
        beside its rerun alone)."""
        step = next_step(result, state, self.job.what, threads=self.job.codegen_threads)
        if step.learn:
            self._learn(result.peak, whole=result.code == 0)
        steps.append(step)
        if step.action == DONE:
            return
        policy.again(step.estimate_at_least, alone=step.action == RERUN_ALONE)
        try:
            self.requeued = self.sem.requeue(self.record.ticket, policy, seq)
        except (OSError, StateDirError):
            pass  # queued after the slot is freed, as before (the state dir says why)

    def _learn(self, peak: int, whole: bool) -> None:
        if self.job.estimate is not None:
            return  # a configured estimate is not learned over
        job = self.job
        curve = self.record.last_run_curve() if whole else None  # a cut-short run: none
        self.history().record(job.key, job.group, peak, job.toolchain, self.inputs, curve)

    def _event(self, code: int, outcome: str, state: RetryState) -> None:
        from ltoguard.events import append_event

        event = self.record.event(code, outcome, state.reruns, state.requeues)
        event["attempts"] = self.attempts
        append_event(self.sem.dir_fd, os.geteuid(), event)


# Seconds a finished job waits for the jobserver token it lent before it exits
# (then warns that the build may run one job over -j): it holds no slot then.
RECLAIM_AFTER_RUN = 120.0
# Seconds an OOM rerun, admitted alone, waits for its token before it starts.
RECLAIM_BEFORE_ALONE = 30.0


def _signalled_or_orphaned(signals: process.Forwarder, lease: Lease) -> bool:
    return bool(signals.received) or lease.parent_gone()


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
