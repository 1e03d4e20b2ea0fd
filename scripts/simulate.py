#!/usr/bin/env python3
"""Replay the LTO phase of recorded builds under another memory cap or policy.

A trace is an event log of guarded jobs (ltoguard's ``events-UID.jsonl``, or an
anonymised copy such as tests/data/traces/*.jsonl): per job its queueing time,
how long its compile ran, its memory samples and what was free when it started.
The replay runs the jobs again, on a simulated clock, through ltoguard's own
decision code (``ltoguard.admission``: admission of the queue's head, and the
pause / resume / stop step of every running job), so a policy is judged on real
memory profiles in seconds instead of a 15-minute build per data point.

The model, kept deliberately small:
- cargo starts a binary when it gets a jobserver token: a job recorded as queued
  just after another ended (or just after a waiting one lent its token) queues
  that long after the same event in the replay (``--arrivals linked``); the others
  at their recorded time. Running compiles share ``--cpus`` CPUs;
- a running job needs its recorded run time (pauses excluded) and holds, at each
  moment of its run, the memory its samples say (linear between samples; its
  recorded peak at the end when the samples missed the last spike); a paused job
  holds its memory and makes no progress;
- what the rest of the build held (cargo, ordinary compiles, waiters, page cache
  reclaim cannot free) is the trace's own: its cap less the budget each job saw
  at admission, carried between admissions (the ltoguard processes present at
  each admission are in that baseline already);
- event logs do not say whether ordinary compiles ran beside the guarded ones,
  which a pause's floor asks (pause.py, ``quiet``): the rest of the build is
  taken as compiling while it holds more than ``COMPILING_SLACK`` over the least
  it holds at any later admission;
- free memory = cap - that - what the running guarded jobs hold. Below zero the
  kernel OOM-kills the youngest guarded job (ltoguard raises its oom_score_adj),
  which is rerun alone; ltoguard's own stop requeues the job at the head.

Reported: the LTO phase's wall time, seconds with two or more jobs running, pairs
started, pauses, ltoguard's stops and the kernel's kills, CPU seconds lost to
both, and every pair admission refused, with whether it would have fit (the two
measured profiles side by side at the offset they would have had); with backfill
(on unless ``--no-backfill``), the jobs started before the head, how many jobs
were passed and the most passes one took, and the longest wait at the head.

Usage: simulate.py TRACE... [--cap SIZE[,SIZE...]] [--trace-cap SIZE]
                   [--estimates recorded|cold|warm|peak] [--headroom X]
                   [--[no-]curves] [--[no-]backfill] [--arrivals linked|recorded]
                   [--cpus N] [--slots N] [--floor-divisor N] [--margin-floors X]
                   [--recorded] [--orders N [--seed S]] [--json]
TRACE is a .jsonl file or a directory of them. Exit status 0, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ltoguard import admission, curves
from ltoguard.estimates import HISTORY_HEADROOM, Basis, History, default_estimate
from ltoguard.inputs import line as sibling_line
from ltoguard.inputs import predict
from ltoguard.retry import OOM_RERUN_HEADROOM, VICTIM_HEADROOM
from ltoguard.sizes import MiB, parse_size

TICK = 0.05  # seconds of simulated time per step: the head's poll (semaphore.HEAD_POLL)
# The rest of the build holding more than this over what it holds later is taken
# as compiles running beside the guarded jobs (Baseline.quiet): cargo and the
# waiters alone move by less.
COMPILING_SLACK = 20 * MiB
RECHECK = 0.5  # policy.MEMORY_RECHECK: a head reuses a "no" while the running set holds


class TraceError(ValueError):
    """A trace that cannot be replayed, with the file and line that says why."""


@dataclass
class TraceJob:
    """One guarded job as recorded."""

    name: str
    queued: float
    run_s: float  # seconds its compile ran, pauses excluded
    profile: list[tuple[float, int]]  # (seconds into the run, bytes held)
    peak: int
    estimate: int  # what ltoguard estimated when it queued
    baseline: int  # bytes the rest of the build held when it was admitted (trace cap - budget)
    admitted: float
    finished: float = 0.0
    inputs: dict[str, int] | None = None  # what the cold estimate reads (inputs.py)
    debuginfo: str = ""
    # What made cargo start it (see link_arrivals): ("fin", m) another job's end gave
    # cargo a token, ("que", m) a job that queued lent it one, or ("at", -1): on its own;
    # ("end", n): the n-th end of the replay, whichever job's (by_end_rank).
    trigger: tuple[str, int] = ("at", -1)
    lag: float = 0.0  # seconds from the trigger to its queueing

    def curve(self) -> curves.Curve | None:
        """Its memory curve as ltoguard learns it from a run's samples."""
        return curves.from_samples(self.profile, 0.0, self.run_s)

    def memory_at(self, tau: float) -> int:
        """Bytes held ``tau`` seconds into the run (linear between samples)."""
        prof = self.profile
        i = bisect_right(prof, (tau, math.inf))
        if i == 0:
            return prof[0][1]
        if i >= len(prof):
            return prof[-1][1]
        (t0, m0), (t1, m1) = prof[i - 1], prof[i]
        if t1 <= t0:
            return m1
        return int(m0 + (m1 - m0) * (tau - t0) / (t1 - t0))

    def max_from(self, tau: float, length: float) -> list[tuple[float, int]]:
        """The profile from ``tau`` on for ``length`` seconds, as (offset, bytes) points."""
        pts = [(0.0, self.memory_at(tau))]
        for t, m in self.profile:
            if tau < t < tau + length:
                pts.append((t - tau, m))
        end = min(self.run_s, tau + length)
        pts.append((end - tau, self.memory_at(end)))
        return pts


def stretched(job: TraceJob, factor: float) -> TraceJob:
    """The same job run ``factor`` times as long, its profile stretched with it: the
    job on another day or beside other compiles, as a build after the one it learned
    from runs it (duration_spread)."""
    profile = [(t * factor, m) for t, m in job.profile]
    return replace(job, run_s=job.run_s * factor, profile=profile)


def duration_spread(traces: Sequence[Sequence[TraceJob]]) -> list[float]:
    """How much a job's duration varies from one build to the next, measured: for
    every job that ran in two or more of ``traces`` (builds of one workspace), each
    run's duration over the median of its runs."""
    runs: dict[str, list[float]] = {}
    for jobs in traces:
        for j in jobs:
            runs.setdefault(j.name, []).append(j.run_s)
    out = []
    for seconds in runs.values():
        if len(seconds) > 1:
            mid = sorted(seconds)[len(seconds) // 2]
            out.extend(s / mid for s in seconds)
    return sorted(out)


# What belongs to a job's place in cargo's order, not to the job (reordered).
PLACE_FIELDS = ("queued", "admitted", "finished", "baseline", "trigger", "lag")


def by_end_rank(jobs: Sequence[TraceJob]) -> list[TraceJob]:
    """The trace with each job cargo started on a token an end gave back tied to the
    n-th end of the replay (``("end", n)``) rather than to the job that ended then:
    cargo starts the next binary on whichever token comes back first."""
    rank = {m: n for n, m in enumerate(sorted(range(len(jobs)), key=lambda m: jobs[m].finished))}
    return [
        replace(j, trigger=("end", rank[j.trigger[1]])) if j.trigger[0] == "fin" else j
        for j in jobs
    ]


def reordered(jobs: Sequence[TraceJob], rng: random.Random) -> list[TraceJob]:
    """The same build with cargo's order drawn again. cargo 1.95 takes the binaries
    of a workspace, which tie in its queue, in a random order in each build
    (docs/benchmarks.md, "cargo's order"); so here the jobs trade places: each keeps
    its own run (length, memory, estimate, inputs), each place its arrival (when;
    after the n-th end of the replay or the lent token of the job in another place;
    what the rest of the build held then). Approximations: as if every binary were
    ready at once (one over fewer crates may be ready sooner); the job in a place
    whose queueing lent a token lends it whether it waits or not; and estimates as
    recorded (``--estimates recorded``) travel with the job, though in a cold build
    they depended on which siblings had ended before it."""
    places = by_end_rank(jobs)
    order = list(range(len(jobs)))
    rng.shuffle(order)
    return [
        replace(jobs[order[k]], **{f: getattr(place, f) for f in PLACE_FIELDS})
        for k, place in enumerate(places)
    ]


def _num(row: dict[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TraceError(f"{where}: field {key!r} is missing or not a number")
    return float(value)


def job_from_event(row: dict[str, Any], trace_cap: int, where: str) -> TraceJob:
    """A TraceJob from one event line (ltoguard's event fields)."""
    queued = _num(row, "queued", where)
    admitted = _num(row, "admitted", where)
    finished = _num(row, "finished", where)
    paused = float(row.get("paused_s") or 0.0)
    # Stopped or rerun before: the run that finished is the job's last attempt (the
    # ones before it, and its waits between, are the replay's to decide); the job
    # keeps its first admission and its end for the rest (arrivals, the recorded phase).
    start, end, paused = _last_attempt(row) or (admitted, finished, paused)
    peak = int(_num(row, "peak", where))
    span = max(0.0, end - start)
    run_s = max(TICK, span - paused)
    raw = [
        [float(s[0]), int(s[1])]
        for s in row.get("samples") or []
        if isinstance(s, list)
        and len(s) == 2
        and all(isinstance(v, (int, float)) for v in s)
        and start <= s[0] < end - 1e-3
    ]
    pauses = _pauses(row.get("pauses"), start, end)
    # The event keeps its last 20 pauses, each end rounded to 0.01 s: they must add
    # up to the time paused, or they are not all of them.
    if abs(sum(b - a for a, b in pauses) - paused) > 0.05 + 0.02 * len(pauses):
        pauses = []
    if pauses:  # cut out where they were, as ltoguard learns its curve
        raw, squeeze = curves.without_pauses(raw, pauses), 1.0
    else:  # older logs: taken out evenly
        squeeze = run_s / span if span > 0 else 1.0
    prof = sorted(((t - start) * squeeze, int(m)) for t, m in raw)
    if not prof or prof[0][0] > 0:
        prof.insert(0, (0.0, 0))
    if max(m for _, m in prof) < peak:
        # The samples missed the high-water mark; fat LTO's last spike is at the end.
        prof.append((max(prof[-1][0], run_s * 0.98), peak))
    prof.append((run_s, max(prof[-1][1], 0)))
    budget = row.get("budget")
    baseline = trace_cap - int(budget) if isinstance(budget, (int, float)) else 0
    est = row.get("estimate")
    raw_inputs = row.get("inputs")
    inputs = None
    if isinstance(raw_inputs, dict):
        inputs = {k: int(v) for k, v in raw_inputs.items() if isinstance(v, (int, float))}
    profile = row.get("profile")
    debuginfo = str(profile.get("debug") or "") if isinstance(profile, dict) else ""
    return TraceJob(
        name=str(row.get("crate") or "?"),
        queued=queued,
        run_s=run_s,
        profile=prof,
        peak=peak,
        estimate=int(est) if isinstance(est, (int, float)) else peak,
        baseline=max(0, baseline),
        admitted=admitted,
        finished=finished,
        inputs=inputs,
        debuginfo=debuginfo,
    )


def _pauses(value: object, start: float, end: float) -> list[tuple[float, float]]:
    """The event's ``pauses`` ([paused, resumed] times) within its last attempt, if the
    event lists them and every one is well formed; else none (older logs)."""
    if not isinstance(value, list):
        return []
    out = []
    for p in value:
        if not (isinstance(p, list) and len(p) == 2):
            return []
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p):
            return []
        a, b = float(p[0]), float(p[1])
        if a > b:
            return []
        if start <= a and b <= end + 1.0:
            out.append((a, b))
    return out


def _last_attempt(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """(admitted, ended, seconds paused) of a job's last attempt, when its event lists
    more than one complete ``attempts`` entry ([queued, admitted, ended, paused_s,
    next step]: guard.py); None otherwise (then the event's own figures hold)."""
    attempts = row.get("attempts")
    if not isinstance(attempts, list) or len(attempts) < 2:
        return None
    last = attempts[-1]
    if not isinstance(last, list) or len(last) < 4:
        return None
    figures = last[1:4]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures):
        return None
    admitted, ended, paused = (float(v) for v in figures)
    if not (math.isfinite(admitted) and math.isfinite(ended) and ended > admitted):
        return None
    paused = min(max(0.0, paused), ended - admitted) if math.isfinite(paused) else 0.0
    return admitted, ended, paused


def cap_from_name(path: Path) -> int | None:
    """A trace named like ``...-600MiB.jsonl`` says the cap it was recorded under."""
    m = re.search(r"(\d+(?:\.\d+)?)(MiB|GiB|M|G)\b", path.stem)
    return parse_size(m.group(1) + m.group(2)) if m else None


def load_trace(path: Path, trace_cap: int | None = None) -> list[TraceJob]:
    cap = trace_cap if trace_cap is not None else cap_from_name(path)
    if cap is None:
        raise TraceError(f"{path}: cannot tell the cap it was recorded under; pass --trace-cap")
    jobs = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise TraceError(f"{path}:{n}: not a JSON object")
            if row.get("outcome") not in (None, "ok"):
                continue  # a failed compile says nothing about a successful one's needs
            jobs.append(job_from_event(row, cap, f"{path}:{n}"))
    if not jobs:
        raise TraceError(f"{path}: no finished guarded job in it")
    jobs.sort(key=lambda j: j.queued)
    t0 = jobs[0].queued
    for j in jobs:
        j.queued -= t0
        j.admitted -= t0
        j.finished -= t0
    link_arrivals(jobs)
    return jobs


HANDOFF = 0.1  # a job admitted this close to another's end took its place: no pair
FINISH_TRIGGER = 1.0  # a job queued this soon after another ended took its token
LEND_TRIGGER = 6.0  # ... this soon after another queued, the token that one lent


def link_arrivals(jobs: Sequence[TraceJob]) -> None:
    """Tie each job's queueing to what made cargo start it, so a replay that runs jobs
    sooner also starts the next ones sooner. cargo starts a binary when it gets a
    jobserver token: mostly when a guarded job ends (its token comes back), else when
    a waiting job lends its own. Each end and each lend frees one token, so each
    triggers at most one start; the rest keep their recorded time."""
    used: set[tuple[str, int]] = set()
    for k, job in enumerate(jobs):
        q = job.queued
        ends = sorted(
            (q - o.finished, m)
            for m, o in enumerate(jobs)
            if m != k and 0 <= q - o.finished < FINISH_TRIGGER and ("fin", m) not in used
        )
        lends = sorted(
            (q - o.queued, m)
            for m, o in enumerate(jobs)
            if m < k
            and 0 <= q - o.queued < LEND_TRIGGER
            and o.admitted > q  # still waiting then: it had lent its token
            and ("que", m) not in used
        )
        if ends:
            job.lag, m = ends[0]
            job.trigger = ("fin", m)
        elif lends:
            job.lag, m = lends[0]
            job.trigger = ("que", m)
        else:
            continue
        used.add(job.trigger)


@dataclass
class Baseline:
    """What the rest of the build held, as a step function of time."""

    times: list[float]
    values: list[int]
    lows: list[int] = field(init=False)  # the least it holds from each admission on

    def __post_init__(self) -> None:
        self.lows = list(self.values)
        for i in range(len(self.lows) - 2, -1, -1):
            self.lows[i] = min(self.lows[i], self.lows[i + 1])

    @classmethod
    def of(cls, jobs: Sequence[TraceJob]) -> Baseline:
        pts = sorted((j.admitted, j.baseline) for j in jobs)
        return cls([t for t, _ in pts], [v for _, v in pts])

    def at(self, t: float) -> int:
        i = bisect_right(self.times, t)
        return self.values[max(0, i - 1)]

    def quiet(self, t: float) -> bool:
        """Does the rest of the build run no compile at ``t``: does it hold no more
        than ``COMPILING_SLACK`` over the least it holds at any later admission?
        (After the last admission, nothing later tells: taken as yes.)"""
        i = max(0, bisect_right(self.times, t) - 1)
        return self.values[i] - self.lows[i] <= COMPILING_SLACK


@dataclass
class Live:
    """A job in the replay: waiting, running or paused."""

    job: TraceJob
    order: int  # its place in the trace: ties of age are broken by it, run after run
    estimate: int
    tau: float = 0.0  # seconds of its run done
    started: float = 0.0  # simulated time of its (latest) admission
    paused_at: float | None = None
    alone: bool = False  # rerunning after an OOM kill: only with nothing else running
    attempts: int = 0
    floor: int = 0  # a requeued job's estimate is at least what it reached (retry.py)
    curve: curves.Curve | None = None  # its learned curve, if the estimator has one
    next_watch: float = 0.0  # when its watch next asks pause_step
    last: admission.Outlook | None = None  # what its watch's last check saw (pause.py)
    last_check: float = 0.0  # simulated time then
    head_wait: float = 0.0  # seconds it waited at the head of the queue
    passed: int = 0  # jobs that started before it while it waited ahead of them (backfills)

    def current(self) -> int:
        return self.job.memory_at(self.tau)

    def running(self) -> admission.Running:
        return admission.Running(
            pid=self.order + 1,
            estimate=self.estimate,
            current=self.current(),
            started=self.started,
            paused=self.paused_at is not None,
            curve=self.curve,
            ran=self.tau,
            alone=self.alone,
        )


@dataclass
class Result:
    cap: int
    wall: float = 0.0
    overlap_s: float = 0.0  # seconds with two or more guarded jobs running
    pairs: int = 0  # jobs started beside another
    pauses: int = 0
    paused_s: float = 0.0
    stops: int = 0  # ltoguard stopped a compile and requeued it
    kills: int = 0  # the kernel OOM-killed a compile
    failed: int = 0  # ran out of memory even alone: the build fails
    cpu_lost: float = 0.0
    cpu: float = 0.0  # compile seconds the jobs needed
    refused: int = 0  # distinct (head, running job) pairs admission turned away
    refused_fit: int = 0  # ... of which the two would have fit side by side
    refused_examples: list[str] = field(default_factory=list)
    backfills: int = 0  # jobs started before the head (backfill)
    head_waits: dict[str, float] = field(default_factory=dict)  # per job, seconds at the head
    passed: dict[str, int] = field(default_factory=dict)  # per job passed, how often

    def row(self) -> dict[str, Any]:
        return {
            "cap_mib": round(self.cap / MiB),
            "wall_s": round(self.wall, 1),
            "two_running_s": round(self.overlap_s, 1),
            "two_running_frac": round(self.overlap_s / self.wall, 3) if self.wall else 0.0,
            "pairs": self.pairs,
            "pauses": self.pauses,
            "paused_s": round(self.paused_s, 1),
            "stops": self.stops,
            "kills": self.kills,
            "failed": self.failed,
            "cpu_lost_s": round(self.cpu_lost, 1),
            "cpu_lost_frac": round(self.cpu_lost / self.cpu, 4) if self.cpu else 0.0,
            "refused_pairs": self.refused,
            "refused_would_fit": self.refused_fit,
            "backfills": self.backfills,
            "passed_jobs": len(self.passed),
            "max_passed": max(self.passed.values(), default=0),
            "max_head_wait_s": round(max(self.head_waits.values(), default=0.0), 1),
        }


def would_fit(head: TraceJob, others: Sequence[Live], room: int) -> bool:
    """Would ``head``, started now beside ``others`` (from where they are), have stayed
    within ``room`` bytes all along? Checked at every sample point of either profile."""
    length = head.run_s
    tracks = [head.max_from(0.0, length)] + [
        o.job.max_from(o.tau, length) for o in others if o.paused_at is None
    ]
    points = sorted({t for tr in tracks for t, _ in tr})
    mine = [head] + [o.job for o in others if o.paused_at is None]
    starts = [0.0] + [o.tau for o in others if o.paused_at is None]
    for t in points:
        held = sum(j.memory_at(s + t) if s + t <= j.run_s else 0 for j, s in zip(mine, starts))
        held += sum(o.current() for o in others if o.paused_at is not None)
        if held > room:
            return False
    return True


ESTIMATES = ("recorded", "cold", "warm", "peak")
GROUP = "trace"  # every job of a trace is of one workspace and profile


class Estimator:
    """Each job's estimate as the replay goes, from ltoguard's own estimator
    (estimates.History; inputs.predict for a first job, inputs.line for the scaling).

    recorded: what ltoguard estimated when the trace was made; cold: a first build,
    learning each job's peak as it ends (a sibling's miss scales the next job's cold
    line); warm: a second build, every job's peak learned (its recorded peak,
    as if the last run peaked the same); peak: exactly its peak, no headroom.
    """

    def __init__(
        self,
        mode: str,
        jobs: Sequence[TraceJob],
        cap: int,
        headroom: float,
        use_curves: bool = True,
    ) -> None:
        self.mode, self.headroom, self.cap, self.use_curves = mode, headroom, cap, use_curves
        self.history = History()
        if mode == "warm":
            for j in jobs:
                curve = j.curve() if use_curves else None
                self.history.record(j.name, GROUP, j.peak, inputs=j.inputs, curve=curve)

    def curve_of(self, j: TraceJob) -> curves.Curve | None:
        """The job's own learned curve, as guard.py takes it (with a history estimate)."""
        if self.mode in ("recorded", "peak") or not self.use_curves:
            return None
        estimate, basis = self.estimate(j)
        return self.history.curve_for(j.name, GROUP, estimate, basis)

    def of(self, j: TraceJob) -> int:
        if self.mode == "recorded":
            return j.estimate
        if self.mode == "peak":
            return j.peak
        return self.estimate(j)[0]

    def estimate(self, j: TraceJob) -> tuple[int, Basis]:
        """ltoguard's estimate and its basis (cold and warm)."""

        def cold(inputs: dict[str, int]) -> int:
            return predict(inputs, debuginfo=j.debuginfo)

        def scaled(inputs: dict[str, int]) -> int:
            return sibling_line(inputs, debuginfo=j.debuginfo)

        return self.history.estimate(
            j.name,
            GROUP,
            default_estimate(self.cap),
            inputs=j.inputs,
            predict=cold,
            line=scaled,
            headroom=self.headroom,
        )

    def learn(self, j: TraceJob) -> bool:
        """A job ended: learn its peak (a cold build). True if an estimate may change."""
        if self.mode != "cold":
            return False
        curve = j.curve() if self.use_curves else None
        self.history.record(j.name, GROUP, j.peak, inputs=j.inputs, curve=curve)
        return True


def simulate(
    jobs: Sequence[TraceJob],
    cap: int,
    *,
    estimates: str = "recorded",
    arrivals: str = "linked",
    slot_limit: int | None = None,
    cpus: int = 2,
    limits: admission.Limits = admission.DEFAULT,
    headroom: float = HISTORY_HEADROOM,
    use_curves: bool = True,
    backfill: bool = True,
    passes: int = admission.BACKFILL_PASSES,
    rise_once: bool = True,
    learned: Sequence[TraceJob] | None = None,
) -> Result:
    """Replay ``jobs`` under a cap of ``cap`` bytes with ltoguard's admission rules
    (``backfill``: waiters behind a head refused for memory may start before it;
    ``rise_once``: a pause's floor counts only the fall the running jobs were not
    expected to make while nothing compiles beside them, as pause.py does; False
    replays the older rule, which counted all of it; ``learned``: the run a warm
    replay learned its peaks and curves from, by default ``jobs`` themselves, as if
    the build before ran every job the same way)."""
    base = Baseline.of(jobs)
    res = Result(cap=cap, cpu=sum(j.run_s for j in jobs))
    index = {id(j): k for k, j in enumerate(jobs)}
    # ("fin"|"que", job index) or ("end", how many ended before) -> when
    happened: dict[tuple[str, int], float] = {}
    pending = list(jobs)

    def arrival(j: TraceJob) -> float | None:
        if arrivals == "recorded" or j.trigger[0] == "at":
            return j.queued
        when = happened.get(j.trigger)
        return None if when is None else when + j.lag

    queue: list[Live] = []
    running: list[Live] = []
    lives: list[Live] = []
    seen_refusals: set[tuple[str, str]] = set()
    last_no: tuple[tuple[int, ...], float] | None = None
    t = 0.0
    done = ends = 0

    if estimates == "history":
        estimates = "warm"  # its older name
    if estimates not in ESTIMATES:
        raise ValueError(f"estimates: {estimates!r} is not one of {', '.join(ESTIMATES)}")
    estimator = Estimator(
        estimates, jobs if learned is None else learned, cap, headroom, use_curves
    )
    estimate_of = estimator.of

    def free(now: float) -> int:
        return cap - base.at(now) - sum(r.current() for r in running)

    while done < len(jobs):
        due = [(a, index[id(j)], j) for j in pending if (a := arrival(j)) is not None and a <= t]
        for _, k, j in sorted(due, key=lambda d: (d[0], d[1])):
            pending.remove(j)
            queue.append(Live(j, k, estimate=estimate_of(j), curve=estimator.curve_of(j)))
            lives.append(queue[-1])
            happened[("que", k)] = t
        # Progress of the running jobs over the last tick.
        active = sum(1 for r in running if r.paused_at is None)
        pace = min(1.0, cpus / active) if active else 1.0  # more compiles than CPUs share them
        for r in list(running):
            if r.paused_at is None:
                r.tau += TICK * pace
            if r.tau >= r.job.run_s:
                running.remove(r)
                if estimator.learn(r.job):
                    for w in queue:  # a waiter's estimate is learned afresh (policy.py)
                        w.estimate = max(w.floor, estimate_of(w.job))
                        w.curve = estimator.curve_of(w.job)
                done += 1
                res.wall = t
                happened[("fin", index[id(r.job)])] = t
                happened[("end", ends)] = t
                ends += 1
        if len(running) >= 2:
            res.overlap_s += TICK
        # The kernel: nothing may hold more than the cap.
        while running and free(t) < 0:
            victim = max(running, key=lambda r: (r.started, r.order))
            running.remove(victim)
            res.kills += 1
            res.cpu_lost += victim.tau
            if victim.alone and len(running) == 0:
                # Out of memory even alone: ltoguard fails it with its real status.
                res.failed += 1
                done += 1
                res.wall = t
                happened[("fin", index[id(victim.job)])] = t  # its token is back all the same
                happened[("end", ends)] = t
                ends += 1
                continue
            _requeue(queue, victim, alone=True, estimate=int(victim.current() * OOM_RERUN_HEADROOM))
        # Each running job's watch, on its own clock (Limits.watch_interval): only
        # while two or more run (alone, attempt.py reads nothing).
        if len(running) >= 2:
            for r in sorted(running, key=lambda r: (r.started, r.order), reverse=True):
                if r not in running or t + TICK / 2 < r.next_watch:  # t drifts by adding TICK
                    continue
                others = [o.running() for o in running if o is not r]
                paused_for = 0.0 if r.paused_at is None else t - r.paused_at
                now_free = free(t)
                falling = 0
                seen = admission.outlook([o.running() for o in running], now_free, limits)
                if r.last is not None:
                    fell = max(0, r.last.free - now_free)
                    counted = admission.unforeseen_fall(fell, r.last, seen)
                    if rise_once and counted < fell and base.quiet(t):
                        fell = counted
                    elapsed = t - r.last_check
                    falling = admission.fall_per_watch(fell, elapsed, t - r.started, limits)
                r.last, r.last_check = seen, t
                step = admission.pause_step(
                    me=r.running(),
                    others=others,
                    available=now_free,
                    total=cap,
                    paused=r.paused_at is not None,
                    paused_for=paused_for,
                    limits=limits,
                    falling=falling,
                )
                if step == admission.KILL:
                    running.remove(r)
                    res.stops += 1
                    res.cpu_lost += r.tau
                    if r.paused_at is not None:
                        res.paused_s += t - r.paused_at
                    _requeue(queue, r, alone=False, estimate=int(r.current() * VICTIM_HEADROOM))
                elif step == admission.PAUSE:
                    r.paused_at = t
                    res.pauses += 1
                elif step == admission.RESUME and r.paused_at is not None:
                    res.paused_s += t - r.paused_at
                    r.paused_at = None
                settled = r.paused_at is None and admission.oldest(r.running(), others)
                tight = admission.near_the_floor(
                    r.running(), others, now_free, cap, limits, falling
                )
                r.next_watch = t + limits.watch_interval(
                    t - r.started, settled=settled, tight=tight
                )
        else:
            for r in running:
                r.last = None  # alone, memory is not read
        if len(running) == 1 and running[0].paused_at is not None:
            res.paused_s += t - running[0].paused_at  # the oldest never stays paused
            running[0].paused_at = None
        # Admission of the queue's head, as often as ltoguard's head decides.
        while queue:
            head = queue[0]
            held = tuple(sorted(r.order for r in running))
            if last_no is not None and last_no[0] == held and t - last_no[1] < RECHECK:
                break
            decision = admission.admit(
                estimate=head.estimate,
                running=[r.running() for r in running],
                available=free(t),
                total=cap,
                limit=slot_limit,
                alone=head.alone,
                limits=limits,
                curve=head.curve,
                cpus=cpus,
            )
            if not decision.ok:
                last_no = (held, t)
                while backfill and decision.why is admission.Why.NO_ROOM:
                    w = _backfill_one(
                        queue, running, free(t), cap, slot_limit, cpus, passes, limits
                    )
                    if w is None:
                        break
                    for ahead in queue[: queue.index(w)]:
                        ahead.passed += 1
                    queue.remove(w)
                    res.pairs += 1
                    res.backfills += 1
                    w.started, w.tau, w.paused_at = t, 0.0, None
                    w.next_watch, w.last = t, None
                    w.attempts += 1
                    running.append(w)
                if running and decision.why is admission.Why.NO_ROOM:  # memory's refusals
                    key = (head.job.name, ",".join(sorted(r.job.name for r in running)))
                    if key not in seen_refusals:
                        seen_refusals.add(key)
                        res.refused += 1
                        room = cap - base.at(t)
                        if would_fit(head.job, running, room):
                            res.refused_fit += 1
                            if len(res.refused_examples) < 5:
                                res.refused_examples.append(
                                    f"{head.job.name} beside {key[1]} at {t:.1f}s"
                                )
                break
            queue.pop(0)
            last_no = None
            if running:
                res.pairs += 1
            head.started, head.tau, head.paused_at = t, 0.0, None
            head.next_watch, head.last = t, None
            head.attempts += 1
            running.append(head)
        if queue:
            queue[0].head_wait += TICK
        t += TICK
        if t > 1e6:
            raise RuntimeError("replay did not end")
    for k, lv in enumerate(lives):
        name = lv.job.name if lv.job.name not in res.head_waits else f"{lv.job.name}#{k}"
        res.head_waits[name] = lv.head_wait
        if lv.passed:
            res.passed[name] = lv.passed
    return res


def _backfill_one(
    queue: list[Live],
    running: Sequence[Live],
    available: int,
    cap: int,
    slot_limit: int | None,
    cpus: int,
    passes: int,
    limits: admission.Limits,
) -> Live | None:
    """The first waiter behind a head refused for memory that may start before it
    now (admission.backfill, as each of ltoguard's waiters decides it), or None."""
    head = queue[0]
    alone = head.alone
    now = [r.running() for r in running]
    for k, w in enumerate(queue[1:], 1):
        d = admission.backfill(
            estimate=w.estimate,
            head=admission.Head(head.estimate, refused=True, passed=head.passed, alone=alone),
            ahead=k,
            running=now,
            available=available,
            total=cap,
            limit=slot_limit,
            alone=w.alone,
            cpus=cpus,
            passes=passes,
            limits=limits,
            curve=w.curve,
        )
        if d.ok:
            return w
        alone = alone or w.alone  # nobody passes a rerun alone
    return None


def _requeue(queue: list[Live], job: Live, *, alone: bool, estimate: int) -> None:
    job.alone = job.alone or alone
    job.floor = max(job.floor, estimate)
    job.estimate = max(job.estimate, estimate)
    job.tau, job.paused_at = 0.0, None
    queue.insert(0, job)


def as_recorded(jobs: Sequence[TraceJob], cap: int) -> dict[str, Any]:
    """The trace's own figures, to set a replay beside: its LTO phase, the seconds in
    which two or more jobs ran, and how many started beside another."""
    wall = max(j.finished for j in jobs)
    edges = sorted([(j.admitted, 1) for j in jobs] + [(j.finished, -1) for j in jobs])
    level, last, two = 0, 0.0, 0.0
    for t, d in edges:
        if level >= 2:
            two += t - last
        level, last = level + d, t
    pairs = sum(  # started beside another, as the replay counts them (not at a handoff)
        1
        for j in jobs
        if any(o.admitted <= j.admitted < o.finished - HANDOFF for o in jobs if o is not j)
    )
    return {
        "cap_mib": round(cap / MiB),
        "wall_s": round(wall, 1),
        "two_running_s": round(two, 1),
        "two_running_frac": round(two / wall, 3) if wall else 0.0,
        "pairs": pairs,
    }


def _caps(text: str) -> list[int]:
    try:
        return [parse_size(p.strip()) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def traces(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="simulate.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    ap.add_argument("trace", nargs="+", help="event log(s) (.jsonl) or directories of them")
    ap.add_argument(
        "--cap", type=_caps, help="cap(s) to replay under, e.g. 600M,800M (default: the trace's)"
    )
    ap.add_argument("--trace-cap", type=_caps, help="the cap the trace was recorded under")
    ap.add_argument(
        "--estimates",
        choices=(*ESTIMATES, "history"),
        default="recorded",
        help="recorded: what ltoguard estimated then; cold: ltoguard's estimator in a first"
        " build, learning as jobs end; warm (or history): each job's own peak learned, plus"
        " headroom; peak: exactly its peak",
    )
    ap.add_argument(
        "--headroom",
        type=float,
        default=HISTORY_HEADROOM,
        help="the learned estimates' lead over the peaks (default %(default)s)",
    )
    ap.add_argument(
        "--arrivals",
        choices=("linked", "recorded"),
        default="linked",
        help="linked: a job cargo started when another ended (or lent its token) starts that"
        " long after the same event in the replay; recorded: at its recorded time",
    )
    ap.add_argument(
        "--curves",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the memory curves ltoguard learns with the peaks (default: yes)",
    )
    ap.add_argument("--cpus", type=int, default=2, help="CPUs the compiles share (default 2)")
    ap.add_argument(
        "--floor-divisor",
        type=int,
        default=admission.DEFAULT.critical_floor_divisor,
        help="the critical floor is at most the cap over this (default %(default)s)",
    )
    ap.add_argument(
        "--margin-floors",
        type=float,
        default=admission.DEFAULT.margin_floors,
        help="admission keeps this many critical floors free (default %(default)s)",
    )
    ap.add_argument("--slots", type=int, default=None, help="LTOGUARD_SLOTS")
    ap.add_argument(
        "--backfill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a waiter behind a head refused for memory starts before it when it fits and"
        " leaves the head its room, as ltoguard does (default: on)",
    )
    ap.add_argument(
        "--recorded", action="store_true", help="also print the trace's own figures, as it ran"
    )
    ap.add_argument(
        "--orders",
        type=int,
        default=0,
        metavar="N",
        help="also replay each cap N times with cargo's order of the jobs drawn again"
        " (seeded: --seed); the table ends with the LTO phase's spread over them",
    )
    ap.add_argument("--seed", type=int, default=0, help="for --orders (default 0)")
    ap.add_argument("--json", action="store_true", help="one JSON object per replay")
    args = ap.parse_args(argv)
    if args.orders < 0:
        ap.error("--orders: a count, 0 or more")
    limits = admission.Limits(
        critical_floor_divisor=args.floor_divisor, margin_floors=args.margin_floors
    )
    rows = []
    try:
        for path in traces(args.trace):
            jobs = load_trace(path, args.trace_cap[0] if args.trace_cap else None)
            own_cap = args.trace_cap[0] if args.trace_cap else cap_from_name(path)
            caps = args.cap or [own_cap]
            if args.recorded and own_cap is not None:
                rows.append(
                    {"trace": path.name, "estimates": "as recorded", **as_recorded(jobs, own_cap)}
                )
            rng = random.Random(args.seed)
            # With --orders, the trace's own order too starts jobs on the n-th end.
            orders = [by_end_rank(jobs)] if args.orders else [jobs]
            orders += [reordered(jobs, rng) for _ in range(args.orders)]
            for cap in caps:
                for k, order in enumerate(orders):
                    res = simulate(
                        order,
                        cap,
                        estimates=args.estimates,
                        arrivals=args.arrivals,
                        slot_limit=args.slots,
                        cpus=args.cpus,
                        limits=limits,
                        headroom=args.headroom,
                        use_curves=args.curves,
                        backfill=args.backfill,
                    )
                    rows.append(
                        {
                            "trace": path.name,
                            "estimates": args.estimates,
                            "backfill": args.backfill,
                            **({"order": k} if args.orders else {}),
                            **res.row(),
                        }
                    )
                    if not args.json and res.refused_examples and k == 0:
                        rows[-1]["examples"] = res.refused_examples
    except (OSError, TraceError) as exc:
        print(f"simulate.py: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    cols = [
        "trace",
        "estimates",
        "cap_mib",
        "wall_s",
        "two_running_frac",
        "pairs",
        "pauses",
        "stops",
        "kills",
        "failed",
        "cpu_lost_frac",
        "refused_pairs",
        "refused_would_fit",
        "backfill",
        "backfills",
        "passed_jobs",
        "max_passed",
        "max_head_wait_s",
    ]
    if args.orders:
        cols.insert(3, "order")
    print("  ".join(cols))
    for r in rows:
        print("  ".join(str(r.get(c, "-")) for c in cols))
    if args.orders:
        print(order_spread(rows))
    return 0


def order_spread(rows: Sequence[dict[str, Any]]) -> str:
    """Per trace and cap, the LTO phase over cargo's orders: in the trace's own
    (order 0), and the least, median and most over the orders drawn, with the kills
    and stops summed over those."""
    out = ["order: the trace's own (0) or drawn again (1...); the LTO phase over them:"]
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "order" in r:
            cells.setdefault((r["trace"], r["cap_mib"]), []).append(r)
    for (trace, cap), rs in cells.items():
        walls = sorted(r["wall_s"] for r in rs if r["order"])
        own = next(r["wall_s"] for r in rs if r["order"] == 0)
        kills = sum(r["kills"] for r in rs if r["order"])
        stops = sum(r["stops"] for r in rs if r["order"])
        out.append(
            f"  {trace} @ {cap} MiB: own order {own} s; {len(walls)} drawn:"
            f" {walls[0]} / {statistics.median(walls):.1f} / {walls[-1]} s"
            " (least / median / most),"
            f" kills {kills}, stops {stops}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
