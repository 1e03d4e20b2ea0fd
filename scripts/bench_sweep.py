#!/usr/bin/env python3
"""A benchmark sweep that spans the field: memory caps from "one LTO job fits" to
"two always fit", on several kinds of workspace, one clean build per row and cap.

Kinds (--kinds):

  many     similar small bins over 1-3 of Debian's packaged crates each
           (bench_memory.py --kind many --large-every 0)
  mixed    a few large bins (over all 19 crates) among small ones (--kind many
           --large-every K); in the recorded builds of this shape cargo started
           the large ones among its first LTO jobs
  real     bins over 1 to 19 real crates, LTO jobs of very different sizes
           (bench_memory.py --kind real)
  generic  bins made mostly of one library's generic code (scripts/gen_generic.py)
  gen      bench_memory.py's generated workspace (small, debug info; --quick's)

Per kind: a calibration build (ltoguard, one slot, no limit; its state is the
warm rows' history) gives "one fits", the most the cgroup held while an LTO job
ran, and "two fit", that plus the second largest LTO job's peak. The caps are
ONE_ROOM x one-fits (never below the whole build's peak) to TWO_ROOM x two-fit,
at --fractions of the way (or --caps KIND=SIZE,...). Then plain cargo without a
cap, and per cap the rows plain (-j2), flock (every bin under one lock), ltoguard
auto cold (nothing learned) and warm (the calibration's state), each in a fresh
memory cgroup (bench_memory.py's builds).

Per row: wall, OOM kills in the cgroup and how many reached cargo (ltoguard's
reruns absorb the others). Plain's LTO jobs are read from /proc every
SAMPLE_EVERY s (the group's processes that ltoguard's classifier would guard),
since cargo reports a unit only when it finishes and writes --timings only at the
end, which an OOM-killed build may never reach: how many it started before it
ended, and how many of those ran beside another. ltoguard rows, from the event
log: pairs (bench_memory.pairs), jobs paused and seconds, stops (requeues) and
reruns, CPU lost (the compile CPU of attempts that were stopped or rerun, as a
share of the build's CPU) and refused pairs: every time the queue's head waited
while other jobs ran, whether the two measured profiles would have fit side by
side under the cap at their real offsets (scripts/simulate.py's would_fit),
against the pairs that fit (those run plus those refused that would have fit).

Targets per cap (TARGETS; each cold and warm):
- plain OOM-killed after running at least half the build's LTO jobs beside
  another: ltoguard <= 0.75 x flock and <= 1.25 x plain without a cap;
- plain survives: ltoguard <= 1.05 x plain;
- everywhere: 0 OOM kills reaching cargo, <= 3% of the build's CPU lost to
  stopped or killed compiles, refused pairs that would have fit <= 10% of the
  pairs that fit, warm no slower than cold beyond NOISE.

Usage: bench_sweep.py [--kinds many,mixed,real] [--bins KIND=N ...]
                      [--large-every K] [--fractions 0,0.5,1]
                      [--caps KIND=SIZE,SIZE ...] [--quick] [--json FILE]
                      [--work DIR] [--keep] [--timeout S]

Prints a markdown table per kind on stdout, progress on stderr. Exit status 0
after the tables (targets missed are marked, not fatal); 1 if a build could not
be started; 2 if no memory cgroup can be created here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from scripts import bench_memory as bm  # noqa: E402
from scripts import simulate  # noqa: E402
from scripts.cgroups import MemoryCgroup  # noqa: E402

MiB = 1 << 20
KINDS = ("many", "mixed", "real", "generic", "gen")
DEFAULT_KINDS = ("many", "mixed", "real")
# Sized so the default sweep (3 kinds x 3 caps x 4 rows, plus calibration and plain
# without a cap) stays near half an hour on a 2-core machine.
BINS = {"many": 16, "mixed": 10, "real": 4, "generic": 4, "gen": 3}
LARGE_EVERY = 5  # mixed: every 5th bin over all 19 crates
FRACTIONS = (0.0, 0.5, 1.0)
QUICK_FRACTIONS = (0.0, 1.0)
ROWS = ("plain", "flock", "auto-cold", "auto-warm")
GUARDED = ("auto-cold", "auto-warm")
ONE_ROOM = 1.1  # "one fits" with room for the run-to-run spread of a job's peak
TWO_ROOM = 1.15  # "two always fit": the two largest side by side, and room
WHOLE_ROOM = 1.05  # no cap below the whole build's peak (library compiles included)
SAMPLE_EVERY = 0.25  # seconds between /proc reads of plain cargo's compiles
PAIR_OVERLAP = 0.5  # seconds two of plain's LTO jobs must overlap to count as a pair
HANDOFF_TOL = 0.25  # a head admitted this soon after it could be was not refused
NOISE = 0.05  # one run per cell: warm within 5% of cold is noise
TARGETS = {
    "flock": 0.75,  # x flock, where plain was killed after running pairs
    "free": 1.25,  # x plain without a cap, likewise
    "plain": 1.05,  # x plain, where plain survives
    "cpu": 0.03,  # share of the build's CPU lost
    "refused": 0.10,  # refused pairs that would have fit, of the pairs that fit
}


def lto_crate(argv: Sequence[str]) -> str | None:
    """The crate a rustc command line compiles, if ltoguard would guard it."""
    from ltoguard.classify import classify

    if not argv:
        return None
    d = classify(list(argv))
    return (d.crate_name or "?") if d.guarded else None


class LtoWatch:
    """Which compiles ltoguard would guard ran when, in a build it does not wrap:
    the group's processes' command lines, read every SAMPLE_EVERY seconds."""

    def __init__(self) -> None:
        self.spans: dict[str, list[float]] = {}  # crate -> [first, last seen]
        self.known: dict[str, str | None] = {}  # pid -> crate (None: not guarded)
        self.due = 0.0

    def __call__(self, cg: MemoryCgroup, t: float) -> None:
        if t < self.due:
            return
        self.due = t + SAMPLE_EVERY
        try:
            pids = (cg.path / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            if pid not in self.known:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
                crate = lto_crate(argv)
                # A fork that has not exec'd rustc yet is asked again next time.
                if crate is not None or (argv and "rustc" in Path(argv[0]).name):
                    self.known[pid] = crate
            crate = self.known.get(pid)
            if crate is not None:
                self.spans.setdefault(crate, [t, t])[1] = t

    def figures(self) -> dict[str, Any]:
        return {"lto_started": len(self.spans), "lto_paired": paired_jobs(self.spans)}


def paired_jobs(spans: dict[str, list[float]]) -> int:
    """Jobs that ran beside another for over PAIR_OVERLAP seconds."""
    items = list(spans.values())
    return sum(
        1
        for i, (a0, a1) in enumerate(items)
        if any(
            min(a1, b1) - max(a0, b0) > PAIR_OVERLAP for j, (b0, b1) in enumerate(items) if j != i
        )
    )


def cpu_lost(events: Sequence[dict[str, Any]]) -> float:
    """CPU seconds of compiles that were stopped or OOM-killed and run again: each
    job's compile CPU shared out over its attempts by their run time."""
    lost = 0.0
    for e in events:
        runs = [
            (max(0.0, float(a[2]) - float(a[1]) - float(a[3])), a[4])
            for a in e.get("attempts") or []
            if len(a) >= 5
        ]
        total = sum(r for r, _ in runs)
        wasted = sum(r for r, step in runs if step != "done")
        if total > 0 and wasted > 0:
            lost += float(e.get("compile_cpu_s") or 0) * wasted / total
    return lost


def trace_jobs(events: Sequence[dict[str, Any]], cap: int) -> list[simulate.TraceJob]:
    """The finished jobs of an event log as simulate.py replays them (absolute times)."""
    jobs = []
    for n, e in enumerate(events):
        if e.get("outcome") not in (None, "ok"):
            continue
        try:
            jobs.append(simulate.job_from_event(e, cap, f"event {n}"))
        except simulate.TraceError:
            continue
    jobs.sort(key=lambda j: j.queued)
    return jobs


def refusals(events: Sequence[dict[str, Any]], cap: int, cpus: int = 2) -> dict[str, int]:
    """Pair admissions refused and how many would have fit; the pairs started.

    A job is the queue's head once every job queued before it is admitted (FIFO).
    Each stretch of its wait as head, longer than HANDOFF_TOL, with the same jobs
    running, fewer than ``cpus`` of them (with as many, admission holds it for a
    CPU, not for memory), is one refusal (one per head and running set, as
    simulate.py counts): would_fit checks the head's profile beside theirs from
    where they were."""
    jobs = trace_jobs(events, cap)
    if not jobs:
        return {"refused": 0, "refused_fit": 0, "started_beside": 0}
    base = simulate.Baseline.of(jobs)
    refused = fit = 0
    for k, head in enumerate(jobs):
        start = max([head.queued] + [o.admitted for o in jobs[:k]])
        end = head.admitted
        if end - start < HANDOFF_TOL:
            continue
        others = [o for o in jobs if o is not head]
        marks = sorted(
            {start} | {t for o in others for t in (o.admitted, o.finished) if start < t < end}
        )
        seen: set[tuple[int, ...]] = set()
        for s, e in zip(marks, marks[1:] + [end]):
            running = [o for o in others if o.admitted <= s < o.finished]
            key = tuple(sorted(id(o) for o in running))
            if e - s < HANDOFF_TOL or not running or len(running) >= cpus or key in seen:
                continue
            seen.add(key)
            refused += 1
            lives = [
                simulate.Live(o, n, estimate=o.estimate, tau=s - o.admitted)
                for n, o in enumerate(running)
            ]
            if simulate.would_fit(head, lives, cap - base.at(s)):
                fit += 1
    started = int(simulate.as_recorded(jobs, cap)["pairs"])
    return {"refused": refused, "refused_fit": fit, "started_beside": started}


def guarded_figures(events: list[dict[str, Any]], res: dict[str, Any], cap: int) -> dict[str, Any]:
    """An ltoguard row's figures from its own build's events."""
    lost = cpu_lost(events)
    cpu = float(res["cpu"])
    out: dict[str, Any] = {
        "pairs": bm.pairs(events)[0],
        "paused_jobs": sum(1 for e in events if float(e.get("paused_s") or 0) > 0),
        "paused_s": sum(float(e.get("paused_s") or 0) for e in events),
        "requeues": sum(int(e.get("requeues") or 0) for e in events),
        "reruns": sum(int(e.get("reruns") or 0) for e in events),
        "cpu_lost_s": lost,
        "cpu_lost_frac": lost / cpu if cpu > 0 else 0.0,
    }
    out.update(refusals(events, cap))
    return out


def row_figures(res: dict[str, Any]) -> dict[str, Any]:
    """What every row reports, from bench_memory's build result."""
    kills = int(res["oom_kills"])
    return {
        "ok": res["rc"] == 0,
        "rc": res["rc"],
        "wall": float(res["wall"]),
        "cpu": float(res["cpu"]),
        "oom_kills": kills,
        "reached": max(0, kills - int(res.get("reruns") or 0)),
        "peak_rss": res["peak_rss"],
    }


def caps_between(one: int, two: int, whole: int, fractions: Sequence[float]) -> list[int]:
    """Caps from "one fits" to "two always fit", ``fractions`` of the way, in MiB steps."""
    lo = max(int(one * ONE_ROOM), int(whole * WHOLE_ROOM))
    hi = max(lo, int(two * TWO_ROOM))
    out = []
    for f in fractions:
        cap = (int(lo + f * (hi - lo)) + MiB - 1) // MiB * MiB
        if cap not in out:
            out.append(cap)
    return out


def one_and_two(
    samples: Sequence[tuple[float, int]], events: Sequence[dict[str, Any]]
) -> tuple[int, int]:
    """From a one-at-a-time build: the most the group held while an LTO job ran, and
    that plus the second largest job's peak (two side by side)."""
    spans = [
        (float(e["admitted"]), float(e["finished"]))
        for e in events
        if e.get("admitted") and e.get("finished")
    ]
    during = [m for t, m in samples if any(a <= t <= f for a, f in spans)]
    peaks = sorted((int(e.get("peak") or 0) for e in events), reverse=True)
    one = max(during, default=0)
    return one, one + (peaks[1] if len(peaks) > 1 else 0)


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not a["ok"] or not b["ok"] or not b["wall"]:
        return None
    return float(a["wall"]) / float(b["wall"])


def targets(
    cell: dict[str, Any], free: dict[str, Any] | None, lto_jobs: int
) -> list[tuple[str, str, bool | None]]:
    """(short name, text, pass) of every target of one cap; pass None: does not apply
    or a row it compares with failed."""
    rows = cell["rows"]
    plain, flock = rows.get("plain"), rows.get("flock")
    out: list[tuple[str, str, bool | None]] = []
    killed = plain is not None and not plain["ok"] and plain["oom_kills"] > 0
    paired_first = killed and plain is not None and plain.get("lto_paired", 0) * 2 >= lto_jobs
    for name in GUARDED:
        r = rows.get(name)
        if r is None:
            continue
        tag = "cold" if name == "auto-cold" else "warm"
        out.append(
            (
                f"{tag} kills",
                f"{tag}: builds, 0 OOM kills reaching cargo ({r['reached']})",
                r["ok"] and r["reached"] == 0,
            )
        )
        out.append(
            (
                f"{tag} cpu",
                f"{tag}: CPU lost <= {TARGETS['cpu']:.0%} ({r['cpu_lost_frac']:.1%})",
                r["cpu_lost_frac"] <= TARGETS["cpu"],
            )
        )
        fits = r["started_beside"] + r["refused_fit"]
        share = r["refused_fit"] / fits if fits else 0.0
        out.append(
            (
                f"{tag} refused",
                f"{tag}: refused pairs that would have fit <= {TARGETS['refused']:.0%}"
                f" of the pairs that fit ({r['refused_fit']} of {fits})",
                share <= TARGETS["refused"],
            )
        )
        if paired_first:
            for key, base, what in (
                ("flock", flock, "flock"),
                ("free", free, "plain without a cap"),
            ):
                x = ratio(r, base)
                out.append(
                    (
                        f"{tag} {key}",
                        f"{tag} / {what} <= {TARGETS[key]} ({fmt_ratio(x)})",
                        None if x is None else x <= TARGETS[key],
                    )
                )
        elif plain is not None and plain["ok"]:
            x = ratio(r, plain)
            out.append(
                (
                    f"{tag} plain",
                    f"{tag} / plain <= {TARGETS['plain']} ({fmt_ratio(x)})",
                    None if x is None else x <= TARGETS["plain"],
                )
            )
    cold, warm = rows.get("auto-cold"), rows.get("auto-warm")
    x = ratio(warm, cold)
    if cold is not None and warm is not None:
        out.append(
            (
                "warm",
                f"warm / cold <= {1 + NOISE:.2f} ({fmt_ratio(x)})",
                None if x is None else x <= 1 + NOISE,
            )
        )
    return out


def verdict(found: Sequence[tuple[str, str, bool | None]]) -> str:
    missed = [name for name, _, ok in found if ok is False]
    if missed:
        return "✗ " + ", ".join(missed)
    return "✓" if any(ok for _, _, ok in found) else "n/a"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_wall(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if r["ok"]:
        return f"{r['wall']:.1f}"
    why = "OOM-killed" if r["oom_kills"] else f"failed rc={r['rc']}"
    return f"{why} at {r['wall']:.0f}"


def both(rows: dict[str, Any], fmt: Any) -> str:
    """One figure of the cold and the warm row, as "cold / warm"."""
    return " / ".join("-" if rows.get(n) is None else fmt(rows[n]) for n in GUARDED)


def vs(rows: dict[str, Any], base: dict[str, Any] | None) -> str:
    """The cold and the warm row's wall over ``base``'s."""
    return " / ".join(fmt_ratio(ratio(rows.get(n), base)) for n in GUARDED)


def fmt_paused(r: dict[str, Any]) -> str:
    return f"{r['paused_jobs']} ({r['paused_s']:.0f})"


def fmt_stops(r: dict[str, Any]) -> str:
    return f"{r['requeues']}, {r['reruns']}"


def fmt_refused(r: dict[str, Any]) -> str:
    return f"{r['refused_fit']} of {r['started_beside'] + r['refused_fit']}"


def table(kind: dict[str, Any]) -> str:
    free = kind.get("uncapped")
    lines = [
        f"### {kind['name']}: {kind['workspace']}\n\n",
        f"{kind['lto_jobs']} LTO jobs; calibration (one at a time, no cap): one fits"
        f" {bm.mib(kind['one_fits'])} MiB, two fit {bm.mib(kind['two_fit'])} MiB;"
        f" plain without a cap {fmt_wall(free)} s.\n"
        "Pairs of figures are ltoguard cold / warm.\n\n",
        "| cap MiB | plain s | plain's LTO jobs (beside another) | flock s | ltoguard s"
        " | / flock | / plain | / plain without a cap | pairs | paused jobs (s) | stops, reruns"
        " | OOM kills (reached cargo): plain, flock, cold, warm | CPU lost"
        " | refused pairs that would have fit, of the pairs that fit | targets |\n",
        "|" + "---:|" * 14 + "---|\n",
    ]
    for cell in kind["cells"]:
        rows = cell["rows"]
        plain, flock = rows.get("plain"), rows.get("flock")
        kills = ", ".join(
            "-"
            if rows.get(n) is None
            else (
                f"{rows[n]['oom_kills']} ({rows[n]['reached']})"
                if n in GUARDED
                else str(rows[n]["oom_kills"])
            )
            for n in ROWS
        )
        lto = (
            "-"
            if plain is None
            else f"{plain.get('lto_started', 0)} ({plain.get('lto_paired', 0)})"
        )
        lines.append(
            f"| {bm.mib(cell['cap'])} | {fmt_wall(plain)} | {lto} | {fmt_wall(flock)}"
            f" | {both(rows, fmt_wall)}"
            f" | {vs(rows, flock)}"
            f" | {vs(rows, plain)}"
            f" | {vs(rows, free)}"
            f" | {both(rows, lambda r: str(r['pairs']))}"
            f" | {both(rows, fmt_paused)} | {both(rows, fmt_stops)} | {kills}"
            f" | {both(rows, lambda r: format(r['cpu_lost_frac'], '.1%'))}"
            f" | {both(rows, fmt_refused)} | {verdict(cell['targets'])} |\n"
        )
    missed = [
        (cell["cap"], text)
        for cell in kind["cells"]
        for _, text, ok in cell["targets"]
        if ok is False
    ]
    if missed:
        lines.append("\nMissed:\n")
        lines += [f"- {bm.mib(cap)} MiB: {text}\n" for cap, text in missed]
    return "".join(lines)


class Sweep:
    """One kind's builds: its workspace, calibration, plain without a cap, the caps."""

    def __init__(self, name: str, args: argparse.Namespace, work: Path) -> None:
        self.name = name
        self.args = args
        self.work = work
        self.log = sys.stderr

    def say(self, text: str) -> None:
        print(f"sweep: {self.name}: {text}", file=self.log, flush=True)

    def generate(self, out: Path) -> str:
        bins = self.args.bins.get(self.name, BINS[self.name])
        if self.name == "generic":
            bm.load_script("gen_generic").generate(out, bins=bins, algos=16, types=3, debug=True)
            return f"generic (gen_generic.py): bins={bins} algos=16 types=3 debug=True"
        if self.name == "gen":
            spec = dict(bm.QUICK, bins=bins)
            return bm.generate_workspace("gen", out, spec)
        kind = "real" if self.name == "real" else "many"
        every = self.args.large_every if self.name == "mixed" else 0
        return bm.generate_workspace(kind, out, {}, bins=bins, large_every=every)

    def build(self, bench: bm.Bench, row: str, cap: int | None) -> dict[str, Any]:
        """One row at one cap, with its figures."""
        if row in GUARDED:
            state = bench.state_for(row)
            assert state is not None
            started = time.time()
            res = bench.build(row, cap, state)
            # A warm state directory also holds the calibration build's events.
            events = [e for e in bm.read_events(state) if float(e.get("queued") or 0) >= started]
            fig = row_figures(res)
            fig.update(guarded_figures(events, res, cap or 1 << 50))
            fig["state"] = str(state)
            if not self.args.keep:
                shutil.rmtree(state, ignore_errors=True)
                shutil.rmtree(bm.cache_of(state), ignore_errors=True)
        else:
            watch = LtoWatch() if row == "plain" else None
            res = bench.build(row, cap, None, watch)
            fig = row_figures(res)
            if watch is not None:
                fig.update(watch.figures())
        fig["log"] = res["log"]
        self.say(
            f"{'no cap' if cap is None else bm.mib(cap) + ' MiB'} {row}: rc={res['rc']}"
            f" wall={res['wall']:.1f}s oom_kills={res['oom_kills']}"
        )
        return fig

    def calibrate(
        self, bench: bm.Bench
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[float, int]]]:
        """bench_memory's calibration build, with the group's charge over time."""
        samples: list[tuple[float, int]] = []

        def watch(cg: MemoryCgroup, _t: float) -> None:
            samples.append((time.time(), bm.charged(cg)))

        template = bench.warm_template
        shutil.rmtree(template, ignore_errors=True)
        shutil.rmtree(bm.cache_of(template), ignore_errors=True)
        template.mkdir(mode=0o700)
        res = bench.build("slots1", None, template, watch)
        if res["rc"] != 0:
            raise SystemExit(f"sweep: error: calibration build failed; see {res['log']}")
        return res, bm.read_events(template), samples

    def run(self) -> dict[str, Any]:
        self.work.mkdir(parents=True, exist_ok=True)
        workspace = self.work / "workspace"
        what = self.generate(workspace)
        self.say(f"workspace {what}")
        ns = argparse.Namespace(workspace=workspace, timeout=self.args.timeout, cleanup_state=True)
        bench = bm.Bench(ns, self.work)
        self.say("calibration build (ltoguard, 1 slot, no cap)...")
        calib, events, samples = self.calibrate(bench)
        one, two = one_and_two(samples, events)
        caps = self.args.caps.get(self.name) or caps_between(
            one, two, int(calib["peak_rss"]), self.args.fractions
        )
        self.say(
            f"{len(events)} LTO jobs; one fits {bm.mib(one)} MiB, two fit {bm.mib(two)} MiB;"
            f" caps {', '.join(bm.mib(c) for c in caps)} MiB"
        )
        free = self.build(bench, "plain", None)
        kind: dict[str, Any] = {
            "name": self.name,
            "workspace": what,
            "lto_jobs": len(events),
            "one_fits": one,
            "two_fit": two,
            "calibration": {k: calib[k] for k in ("wall", "cpu", "peak_rss", "guarded_peak")},
            "uncapped": free,
            "cells": [],
        }
        for cap in caps:
            rows = {row: self.build(bench, row, cap) for row in ROWS}
            cell: dict[str, Any] = {"cap": cap, "rows": rows}
            cell["targets"] = targets(cell, free, len(events))
            kind["cells"].append(cell)
        return kind


def _bins(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.split(","):
        name, _, n = part.partition("=")
        if name not in KINDS or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"expected KIND=N with KIND one of {KINDS}: {part!r}")
        out[name] = int(n)
    return out


def _caps(text: str) -> dict[str, list[int]]:
    name, _, sizes = text.partition("=")
    if name not in KINDS or not sizes:
        raise argparse.ArgumentTypeError(f"expected KIND=SIZE,SIZE with KIND one of {KINDS}")
    try:
        return {name: [bm.parse_size(s) for s in sizes.split(",") if s]}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fractions(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not out or any(not 0 <= x <= 1 for x in out):
        raise argparse.ArgumentTypeError("fractions between 0 and 1")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"subset of {','.join(KINDS)}")
    p.add_argument(
        "--bins",
        type=_bins,
        default={},
        help="bins per kind, e.g. many=50,real=6 (default "
        + ",".join(f"{k}={v}" for k, v in BINS.items())
        + ")",
    )
    p.add_argument(
        "--large-every",
        type=int,
        default=LARGE_EVERY,
        help=f"mixed: every K-th bin over all 19 crates (default {LARGE_EVERY})",
    )
    p.add_argument(
        "--fractions",
        type=_fractions,
        help="where the caps sit between one fits (0) and two always fit (1)"
        f" (default {','.join(map(str, FRACTIONS))})",
    )
    p.add_argument(
        "--caps",
        type=_caps,
        action="append",
        default=[],
        help="the caps of one kind instead of calibrated ones, e.g. many=430M,520M (repeatable)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: the small generated workspace, 2 caps"
    )
    p.add_argument("--json", type=Path, help="also write every figure here ('-': stdout)")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per build")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if args.quick and args.kinds == p.get_default("kinds"):
        kinds = ["gen"]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        p.error(f"unknown kind: {', '.join(bad)}")
    if args.fractions is None:
        args.fractions = list(QUICK_FRACTIONS if args.quick else FRACTIONS)
    caps: dict[str, list[int]] = {}
    for given in args.caps:
        caps.update(given)
    args.caps = caps
    if shutil.which("cargo") is None:
        print("sweep: error: cargo is not on PATH", file=sys.stderr)
        return 1
    why = MemoryCgroup.unavailable()
    if why:
        print(f"sweep: error: cannot create a memory cgroup: {why}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="ltoguard-bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"sweep: kinds {', '.join(kinds)}; scratch {work}", file=sys.stderr)
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    try:
        for name in kinds:
            results.append(Sweep(name, args, work / name).run())
    except KeyboardInterrupt:
        print("sweep: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - t0
    print(f"sweep: done in {took / 60:.1f} min", file=sys.stderr)
    print(f"## bench_sweep: {', '.join(kinds)} ({took / 60:.0f} min)\n")
    print("\n".join(table(kind) for kind in results))
    if args.json is not None:
        bm.write_json(args.json, {"kinds": results, "minutes": took / 60, "targets": TARGETS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
