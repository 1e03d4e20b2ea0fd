#!/usr/bin/env python3
"""Benchmark ltoguard's memory-aware admission under a real memory cgroup.

A generated workspace (real code, path dependencies only, fat LTO) is built clean,
each build inside a fresh child memory cgroup (cgroup v1) with a hard limit, for
two limits:

  tight   one LTO job fits, two do not
  roomy   two LTO jobs fit

and these rows per limit (--rows picks a subset):

  plain       cargo build --release -j2
  j1          cargo build --release -j1
  flock       a one-at-a-time flock wrapper as RUSTC_WORKSPACE_WRAPPER (what users
              write today: `flock LOCK rustc ...` for every bin), -j2
  slots1      ltoguard as RUSTC_WORKSPACE_WRAPPER, LTOGUARD_SLOTS=1, -j2
  auto-cold   ltoguard, LTOGUARD_SLOTS=auto, empty state and cache directories
              (no history), -j2
  auto-warm   ltoguard, auto, a copy of the state and cache directories of a
              build of this workspace (the calibration build), -j2
  ci-warm     ltoguard, auto, a fresh state directory and only a copy of the cache
              directory of the calibration build: a second CI run whose cache
              restored ~/.cache/ltoguard after rust-cache's cleanup, -j2

The cap "uncapped" runs its rows without a limit of their own (plain there is the
"plain cargo without a cap" of the release targets in docs/benchmarks.md). --kind picks the workspace:
gen (scripts/gen_workspace.py), real (scripts/gen_realcrates.py: fat-LTO bins over
Debian's packaged crates) or many (gen_realcrates --small: 50 small bins, a full
clean build where library crates still compile while LTO jobs wait).

The limits come from a calibration build (ltoguard, 1 slot, no limit): its peak
cgroup charge is what "one LTO job plus the rest of the build" needs; tight is
TIGHT_FACTOR times that, roomy ROOMY_FACTOR times. --tight/--roomy override them.

Per row: outcome (ok, or FAIL), the OOM kills counted in memory.oom_control and
how many of them reached cargo (kills minus ltoguard's reruns),
wall time, peak memory (memory.max_usage_in_bytes, which includes page cache, and
the sampled peak of rss+mapped_file, what the OOM killer cannot reclaim), major
page faults (total_pgmajfault: pages read back from disk, e.g. the compiler's own
code evicted under the limit and faulted in again), and for ltoguard rows the
seconds in which a guarded job waited while none ran ("idle": the queue's own
handoff cost), the CPU seconds of ltoguard's guard processes themselves against
their guarded compiles' ("guard / LTO cpu"), the reruns (kernel OOM kills ltoguard absorbed) and requeues
(compiles it stopped itself), seconds paused, and how often two guarded jobs
ran side by side (pairs: overlaps of more than a second, with the largest sum of
their peaks) from events-UID.jsonl; "cpu+" is CPU seconds over the slots1 row of
the same cap, or over flock without a slots1 row (work lost to stopped or rerun
compiles, within the noise of a build's CPU time). Ratios compare rows of the
same run; with --repeat N the rows alternate per repeat, medians are shown, and a
ratio is the median of the ratios taken repeat by repeat (with their spread under
Targets), so drift in the machine's speed between repeats cancels out. Each wall
target also gives the ratio "per CPU second of work": wall over the build's CPU
seconds less ltoguard's own (its guard processes'), against the same for the
baseline. The same compiles' CPU seconds vary from one build to the next; this
figure leaves out how fast the machine ran and keeps what the schedule
cost (CPUs left idle). It also hides a compile made slower by ltoguard, so the
target stays on the wall ratio.

Usage: bench_memory.py [--workspace DIR] [--size S] [--bins N] [--libs M]
                       [--debug | --no-debug] [--tight SIZE] [--roomy SIZE]
                       [--caps tight,roomy] [--rows ROWS] [--repeat N] [--quick]
                       [--json FILE] [--work DIR] [--keep]

Exit status: 0 after printing the table (targets missed are marked, not fatal);
1 if a build could not be started; 2 if no memory cgroup can be created here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from scripts.cgroups import MemoryCgroup  # noqa: E402

MiB = 1 << 20
ROWS = ("plain", "j1", "flock", "slots1", "auto-cold", "auto-warm", "ci-warm")
CAPS = ("tight", "roomy", "uncapped")
UNCAPPED_ROWS = ("plain",)  # without a limit only plain cargo is a reference
# A user's one-at-a-time wrapper: every bin compile under one lock.
FLOCK_WRAPPER = """#!/bin/sh
case " $* " in
*" --crate-type bin "*) exec flock "$BENCH_FLOCK" "$@" ;;
esac
exec "$@"
"""
# One LTO job plus the rest of the build needs the calibration peak P. Two LTO jobs
# need about 2P minus what they share (the compiler's mapped text, cargo): 1.5P
# lets one run with room to spare and not two; 3P lets two run with room to spare.
TIGHT_FACTOR = 1.5
ROOMY_FACTOR = 3.0
SAMPLE_INTERVAL = 0.1
WRAPPER_VARS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER")
# Workspace presets. debug=true grows the binaries' LTO peak far more than the
# libraries' (docs/benchmarks.md, the generated workspaces' figures),
# which is the shape that makes a build fit with one LTO job and not with two.
QUICK = {"size": "small", "bins": 3, "libs": 4, "debug": True}
FULL = {"size": "small", "bins": 4, "libs": 6, "debug": True}
KINDS = ("gen", "real", "many")
REAL_BINS = 6  # --kind real: 6 bins over 1 to 19 real crates
MANY_BINS = 50  # --kind many: small bins over 1-3 crates each,
MANY_LARGE_EVERY = 10  # and every 10th over all 19


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py, imported only by the runs that generate with it."""
    return importlib.import_module(f"scripts.{name}")


def load_gen_workspace() -> ModuleType:
    return load_script("gen_workspace")


def parse_size(text: str) -> int:
    from ltoguard.sizes import parse_size as parse

    return parse(text)


def write_json(dest: Path, doc: object) -> None:
    """A --json document to its file, or to stdout for '-'."""
    data = json.dumps(doc, indent=2)
    if str(dest) == "-":
        print(data)
    else:
        dest.write_text(data + "\n")


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / MiB:.0f}"


def ltoguard_path() -> str:
    venv = CHECKOUT / ".venv" / "bin" / "ltoguard"
    found = str(venv) if venv.exists() else shutil.which("ltoguard")
    if not found:
        raise SystemExit("bench: error: no ltoguard console script (.venv/bin/ltoguard or PATH)")
    if venv.exists():
        # The editable install's bytecode, compiled ahead: under PYTHONDONTWRITEBYTECODE
        # (set in some shells and CI images) every ltoguard process of every build
        # would compile its modules from source again, in CPU time of every guarded job.
        python = str(venv.with_name("python"))
        subprocess.run([python, "-m", "compileall", "-q", str(CHECKOUT / "ltoguard")], check=False)
    return found


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTOGUARD_")}
    for var in (*WRAPPER_VARS, "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR"):
        env.pop(var, None)
    env["CARGO_NET_OFFLINE"] = "true"
    env["CARGO_TERM_COLOR"] = "never"
    return env


def cache_of(state: Path) -> Path:
    """The XDG_CACHE_HOME that goes with a state directory: ltoguard keeps its history there."""
    return state.with_name(f"{state.name}-cache")


def read_events(state: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(state.glob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def cpu_of(ru: Any) -> float:
    return float(ru.ru_utime + ru.ru_stime)


def run_build(
    workspace: Path,
    target: Path,
    env: dict[str, str],
    jobs: int,
    limit: int | None,
    log: Path,
    timeout: float,
    watch: Callable[[MemoryCgroup, float], None] | None = None,
    swap: int | None = None,
) -> dict[str, Any]:
    """One clean `cargo build --release -jN` in a fresh cgroup; measured figures.

    limit None: a cgroup without a limit of its own (for calibration: it still
    measures the peak). CPU time is the cargo tree's user+sys from wait4 (children
    are reaped by cargo, so their time is included). ``watch`` is called with the
    group and the seconds since the start at every sample (bench_sweep.py's view of
    the compiles running). ``swap``: the group's swap allowance beside ``limit``
    (scripts/bench_swap.py); then the peak swap used and the highest memory pressure
    (PSI avg10) are measured too.
    """
    shutil.rmtree(target, ignore_errors=True)
    env = dict(env, CARGO_TARGET_DIR=str(target))
    cmd = ["cargo", "build", "--release", f"-j{jobs}"]
    cg = MemoryCgroup(limit if limit is not None else 1 << 50, swap=swap)
    psi = PsiPeak(cg) if swap is not None else None
    try:
        with open(log, "wb") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                cg.enter_command() + cmd,
                cwd=workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            peak_rss = 0
            series: list[tuple[float, int]] = []  # (seconds, charged) every second
            deadline = t0 + timeout
            status = ru = None
            try:
                while True:
                    pid, st, r = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        status, ru = st, r
                        break
                    now_charged = charged(cg)
                    if watch is not None:
                        watch(cg, time.monotonic() - t0)
                    peak_rss = max(peak_rss, now_charged)
                    if psi is not None:
                        psi.sample()
                    if not series or time.monotonic() - t0 - series[-1][0] >= 1.0:
                        series.append((round(time.monotonic() - t0, 1), now_charged))
                    if time.monotonic() > deadline:
                        os.killpg(proc.pid, signal.SIGKILL)
                    time.sleep(SAMPLE_INTERVAL)
            finally:
                if status is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    proc.wait()
            wall = time.monotonic() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        return {
            "rc": proc.returncode,
            "wall": wall,
            "cpu": cpu_of(ru),
            "oom_kills": cg.oom_kills(),
            "max_usage": cg.max_usage(),
            "peak_rss": peak_rss,
            "majflt": stat_of(cg, "total_pgmajfault"),
            "series": series,
            **(psi.figures() if psi is not None else {}),
        }
    finally:
        cg.cleanup()


class PsiPeak:
    """The peak swap use of a group and the highest memory pressure over a build:
    the group's own PSI on cgroup v2, the host's on v1 (a v1 group has none)."""

    def __init__(self, cg: MemoryCgroup) -> None:
        self.cg = cg
        own = cg.path / "memory.pressure"
        self.path = own if own.exists() else Path("/proc/pressure/memory")
        self.swap_peak = 0
        self.some10 = self.full10 = 0.0
        self.readable = True

    def sample(self) -> None:
        self.swap_peak = max(self.swap_peak, self.cg.swap_used())
        try:
            text = self.path.read_text()
        except OSError:
            self.readable = False
            return
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
            if kind == "some" and "avg10" in fields:
                self.some10 = max(self.some10, float(fields["avg10"]))
            elif kind == "full" and "avg10" in fields:
                self.full10 = max(self.full10, float(fields["avg10"]))

    def figures(self) -> dict[str, Any]:
        psi_ok = self.readable
        return {
            "swap_peak": self.swap_peak,
            "psi_source": "cgroup" if self.path.name == "memory.pressure" else "host",
            "psi_some10_max": self.some10 if psi_ok else None,
            "psi_full10_max": self.full10 if psi_ok else None,
        }


def stat_of(cg: MemoryCgroup, *keys: str) -> int:
    """The sum of these counters of the group's memory.stat under v1's names, on
    either cgroup version (0 when unreadable)."""
    stat = cg.stat()
    return sum(stat.get(k, 0) for k in keys)


def charged(cg: MemoryCgroup) -> int:
    """Anonymous plus mapped memory of the group: what reclaiming page cache cannot free."""
    return cg.charged()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.ltoguard = ltoguard_path()
        self.env = base_env()
        self.warm_template = work / "state-warm"
        self.n = 0
        self.builds = 0

    def row_env(self, row: str, state: Path | None) -> tuple[dict[str, str], int]:
        env = dict(self.env)
        if row in ("plain", "j1"):
            return env, 1 if row == "j1" else 2
        if row == "flock":
            wrapper = self.work / "flock-wrapper.sh"
            wrapper.write_text(FLOCK_WRAPPER)
            wrapper.chmod(0o755)
            env["RUSTC_WORKSPACE_WRAPPER"] = str(wrapper)
            env["BENCH_FLOCK"] = str(self.work / "flock.lock")
            return env, 2
        env["RUSTC_WORKSPACE_WRAPPER"] = self.ltoguard
        env["LTOGUARD_SLOTS"] = "1" if row == "slots1" else "auto"
        assert state is not None
        env["LTOGUARD_DIR"] = str(state)
        env["XDG_CACHE_HOME"] = str(cache_of(state))
        return env, 2

    def state_for(self, row: str) -> Path | None:
        if row in ("plain", "j1", "flock"):
            return None
        self.n += 1
        state = self.work / f"state-{self.n}"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cache_of(state), ignore_errors=True)
        if row == "auto-warm":
            shutil.copytree(self.warm_template, state, symlinks=True)
            shutil.copytree(cache_of(self.warm_template), cache_of(state), symlinks=True)
        else:
            state.mkdir(mode=0o700)
        if row == "ci-warm":  # a fresh runner: empty state, the cache dir restored
            shutil.copytree(cache_of(self.warm_template), cache_of(state), symlinks=True)
        return state

    def build(
        self,
        row: str,
        limit: int | None,
        state: Path | None = None,
        watch: Callable[[MemoryCgroup, float], None] | None = None,
    ) -> dict[str, Any]:
        made_here = state is None
        if state is None:
            state = self.state_for(row)
        env, jobs = self.row_env(row, state)
        self.builds += 1
        log = self.work / f"build-{self.builds}-{row}.log"
        started = time.time()
        res = run_build(
            self.args.workspace,
            self.work / "target",
            env,
            jobs,
            limit,
            log,
            self.args.timeout,
            watch,
            swap=getattr(self.args, "swap", None) if limit is not None else None,
        )
        res["row"] = row
        res["log"] = str(log)
        if state is not None:
            events = read_events(state)
            res["guarded"] = len(events)
            res["reruns"] = sum(int(e.get("reruns") or 0) for e in events)
            res["requeues"] = sum(int(e.get("requeues") or 0) for e in events)
            res["guarded_peak"] = max((int(e.get("peak") or 0) for e in events), default=0)
            res["paused"] = sum(float(e.get("paused_s") or 0) for e in events)
            res["pairs"], res["pair_peak"] = pairs(events)
            # A warm state directory also holds the calibration build's events.
            mine = [e for e in events if float(e.get("queued") or 0) >= started]
            res["idle"] = idle(mine)
            # ltoguard's own CPU (the guard processes) against its guarded compiles'.
            res["guard_cpu"] = sum(float(e.get("guard_cpu_s") or 0) for e in mine)
            res["from_history"] = sum(1 for e in mine if e.get("estimate_basis") == "history")
            res["lto_cpu"] = sum(float(e.get("compile_cpu_s") or 0) for e in mine)
        if self.args.cleanup_state and state is not None and made_here:
            shutil.rmtree(state, ignore_errors=True)
            shutil.rmtree(cache_of(state), ignore_errors=True)
        return res

    def calibrate(self) -> dict[str, Any]:
        """ltoguard with one slot and no limit: the peak of one LTO job plus the rest,
        and a state directory that has been through one build (the warm template)."""
        shutil.rmtree(self.warm_template, ignore_errors=True)
        shutil.rmtree(cache_of(self.warm_template), ignore_errors=True)
        self.warm_template.mkdir(mode=0o700)
        res = self.build("slots1", None, state=self.warm_template)
        if res["rc"] != 0:
            raise SystemExit(f"bench: error: calibration build failed; see {res['log']}")
        return res


def pairs(events: list[dict[str, Any]]) -> tuple[int, int]:
    """Guarded jobs that ran side by side for over a second, and the largest sum of
    two such jobs' peaks (an upper bound of what the pair held at once)."""
    spans = [
        (float(e["admitted"]), float(e["finished"]), int(e.get("peak") or 0))
        for e in events
        if e.get("admitted") and e.get("finished")
    ]
    count = top = 0
    for i, (a0, a1, pa) in enumerate(spans):
        for b0, b1, pb in spans[i + 1 :]:
            if min(a1, b1) - max(a0, b0) > 1.0:
                count += 1
                top = max(top, pa + pb)
    return count, top


def idle(events: list[dict[str, Any]]) -> float:
    """Seconds in which a guarded job waited while none ran: the handoff cost of the
    queue itself (with one slot, the gap between one job's end and the next's start)."""
    marks: list[tuple[float, int, int]] = []  # (time, change in waiting, in running)
    for e in events:
        q, a, f = (e.get(k) for k in ("queued", "admitted", "finished"))
        if q is not None and a is not None and f is not None:
            marks += [(float(q), 1, 0), (float(a), -1, 1), (float(f), 0, -1)]
    marks.sort()
    total = 0.0
    waiting = running = 0
    last = marks[0][0] if marks else 0.0
    for t, dw, dr in marks:
        if waiting > 0 and running == 0:
            total += t - last
        waiting, running, last = waiting + dw, running + dr, t
    return total


def calibration_line(calib: dict[str, Any] | None) -> str:
    if calib is None:
        return "calibration skipped (--no-calibrate): the limits are the ones given"
    return (
        f"calibration (ltoguard 1 slot, no limit): wall {calib['wall']:.1f} s,"
        f" peak rss {mib(calib['peak_rss'])} MiB, largest guarded job"
        f" {mib(calib.get('guarded_peak'))} MiB (process-tree RSS)"
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of one (cap, row)."""
    ok = [r for r in results if r["rc"] == 0]
    keys = ("wall", "cpu", "max_usage", "peak_rss", "majflt")
    out: dict[str, Any] = {"runs": len(results), "ok": len(ok)}
    # Per repeat, for ratios taken pair by pair (the machine's speed drifts between
    # repeats far more than between two builds in one repeat).
    out["per_repeat"] = {k: [r[k] for r in results] for k in ("wall", "cpu")}
    out["per_repeat"]["pace"] = paces = [pace(r) for r in results]
    known = [x for x in paces if x is not None]
    out["pace"] = median(known) if known else None
    for k in keys:
        out[k] = median([r[k] for r in results])
    out["oom_kills"] = max(r["oom_kills"] for r in results)
    # A kernel kill ltoguard absorbed shows as a rerun; the others reached cargo.
    out["reached"] = max(max(0, r["oom_kills"] - int(r.get("reruns", 0))) for r in results)
    for k in ("reruns", "requeues", "guarded", "pairs", "pair_peak"):
        if k in results[0]:
            out[k] = max(r[k] for r in results)
    if "from_history" in results[0]:  # the fewest of any repeat: "all" must hold in each
        out["from_history"] = min(r["from_history"] for r in results)
    for k in ("paused", "idle", "guard_cpu", "lto_cpu"):
        if k in results[0]:
            out[k] = median([r[k] for r in results])
    return out


def pace(res: dict[str, Any]) -> float | None:
    """Seconds of wall per CPU second of the build's own work (ltoguard's guard
    processes left out): what the schedule cost, with the machine's speed taken out.
    None for a build that recorded no CPU time."""
    work = float(res["cpu"]) - float(res.get("guard_cpu") or 0)
    return float(res["wall"]) / work if work > 0 else None


def ratios(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "wall") -> list[float]:
    """a's ``key`` (wall, cpu or pace) over b's, repeat by repeat (both ran in the same
    repeat, minutes apart); one figure of the medians where the repeats do not pair
    up (one repeat, or a failed build)."""
    if not a or not b or not a["ok"] or not b["ok"]:
        return []
    wa, wb = a["per_repeat"].get(key), b["per_repeat"].get(key)
    if not wa or not wb:
        return []
    if len(wa) == len(wb) > 1 and a["ok"] == a["runs"] and b["ok"] == b["runs"]:
        # pace is None for a build that recorded no CPU time
        return [float(x / y) for x, y in zip(wa, wb) if x is not None and y]
    return [float(a[key] / b[key])] if a.get(key) and b.get(key) else []


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "wall") -> float | None:
    """The median of the pairwise ratios (with one repeat: the ratio)."""
    found = ratios(a, b, key)
    return median(found) if found else None


def spread(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "wall") -> str:
    found = ratios(a, b, key)
    return f", per repeat {min(found):.2f}-{max(found):.2f}" if len(found) > 1 else ""


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("✓" if ok else "✗")


def _target(
    out: list[tuple[str, bool | None]],
    text: str,
    r: dict[str, Any] | None,
    base: dict[str, Any] | None,
    bound: float,
) -> None:
    x = ratio(r, base)
    work = ratio(r, base, "pace")
    per_work = (
        "" if work is None else f"; per CPU second of work {work:.2f}" + spread(r, base, "pace")
    )
    out.append(
        (
            f"{text} <= {bound} ({fmt_ratio(x)}{spread(r, base)}{per_work})",
            None if x is None else x <= bound,
        )
    )


def targets(
    cap: str, rows: dict[str, dict[str, Any]], uncapped: dict[str, dict[str, Any]] | None = None
) -> list[tuple[str, bool | None]]:
    """The release targets (docs/benchmarks.md) for one cap, each with a pass mark (None: rows missing)."""
    out: list[tuple[str, bool | None]] = []
    plain, flock = rows.get("plain"), rows.get("flock")
    one = rows.get("slots1") or flock  # the one-at-a-time baseline for CPU lost
    free = (uncapped or {}).get("plain")
    for name in ("auto-cold", "auto-warm", "ci-warm"):
        r = rows.get(name)
        if r is None:
            continue
        if name == "ci-warm":
            _ci_targets(out, r, rows.get("auto-warm"))
            continue
        if cap == "tight":
            out.append(
                (
                    f"{name} succeeds, 0 OOM kills reaching the build",
                    r["ok"] == r["runs"] and not r["reached"],
                )
            )
            _target(out, f"{name} wall / flock", r, flock, 1.02)
            lost = cpu_lost(r, one)
            out.append(
                (
                    f"{name} CPU lost to stopped or rerun jobs <= 5% ({fmt_pct(lost)})",
                    None if lost is None else lost <= 0.05,
                )
            )
            if free is not None and plain is not None and plain["ok"] < plain["runs"]:
                _target(out, f"{name} wall / flock (many bins)", r, flock, 0.80)
                _target(out, f"{name} wall / plain without a cap", r, free, 1.30)
        elif cap == "roomy":
            bound = 1.05 if name == "auto-cold" else 1.02
            _target(out, f"{name} wall / plain", r, plain, bound)
            out.append(
                (f"{name} ran LTO jobs in pairs ({r.get('pairs', 0)})", bool(r.get("pairs")))
            )
    return out


def _ci_targets(
    out: list[tuple[str, bool | None]], r: dict[str, Any], warm: dict[str, Any] | None
) -> None:
    """A second CI run (fresh state dir, only the cache dir restored) starts every
    guarded job from history and runs as fast as a warm build."""
    guarded, known = r.get("guarded", 0), r.get("from_history", 0)
    out.append(
        (
            f"ci-warm: every guarded job starts from history ({known} of {guarded})",
            known == guarded > 0,
        )
    )
    _target(out, "ci-warm wall / auto-warm", r, warm, 1.02)


def cpu_lost(r: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """CPU over the one-at-a-time row, when compiles were stopped or rerun; with none
    of those nothing was lost (the difference is noise and ltoguard's own CPU)."""
    if not r or not base or not base["ok"] or not r["ok"]:
        return None
    if not r.get("reruns") and not r.get("requeues"):
        return 0.0
    return cpu_over(r, base)


def cpu_over(r: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """CPU seconds over base's, as a fraction (pair by pair, like the wall ratios)."""
    found = ratios(r, base, "cpu")
    return max(0.0, median(found) - 1.0) if found else None


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def table(
    cap: str, limit: int | None, rows: dict[str, dict[str, Any]], uncapped: dict[str, Any] | None
) -> str:
    head = (
        "| row | outcome | wall s | cpu s | cpu+ | peak rss MiB | major faults | OOM kills"
        " | reached cargo | idle s | guard / LTO cpu s"
        " | reruns | requeues | paused s | pairs (max sum MiB) | /plain | /flock | /slots1 |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    title = f"limit {mib(limit)} MiB" if limit is not None else "no limit"
    lines = [f"### {cap}: {title}\n\n", head]
    for name in ROWS:
        r = rows.get(name)
        if r is None:
            continue
        outcome = "ok" if r["ok"] == r["runs"] else f"FAIL {r['runs'] - r['ok']}/{r['runs']}"
        pair = f"{r['pairs']} ({mib(r['pair_peak'])})" if "pairs" in r else "-"
        paused = f"{r['paused']:.1f}" if "paused" in r else "-"
        idle_s = f"{r['idle']:.2f}" if "idle" in r else "-"
        cpus = f"{r['guard_cpu']:.1f} / {r['lto_cpu']:.1f}" if "guard_cpu" in r else "-"
        lines.append(
            f"| {name} | {outcome} | {r['wall']:.1f} | {r['cpu']:.1f}"
            f" | {fmt_pct(cpu_over(r, rows.get('slots1') or rows.get('flock')))}"
            f" | {mib(r['peak_rss'])} | {r['majflt']:.0f}"
            f" | {r['oom_kills']} | {r['reached']}"
            f" | {idle_s} | {cpus} | {r.get('reruns', '-')}"
            f" | {r.get('requeues', '-')} | {paused} | {pair}"
            f" | {fmt_ratio(ratio(r, rows.get('plain')))} | {fmt_ratio(ratio(r, rows.get('flock')))}"
            f" | {fmt_ratio(ratio(r, rows.get('slots1')))} |\n"
        )
    found = targets(cap, rows, uncapped)
    if found:
        lines.append("\nTargets:\n")
    for text, ok in found:
        lines.append(f"- {check(ok)} {text}\n")
    return "".join(lines)


def generate_workspace(
    kind: str,
    out: Path,
    spec: dict[str, Any],
    *,
    bins: int | None = None,
    large_every: int = MANY_LARGE_EVERY,
    debug: bool = False,
) -> str:
    """Write a workspace of ``kind`` (KINDS) under ``out``; the line that describes it.
    ``spec`` is the gen preset (size, bins, libs, debug) with the command line's values;
    ``bins`` and ``debug`` are the Debian-crate kinds' (their own defaults for bins)."""
    if kind != "gen":
        small = kind == "many"
        count = bins or (MANY_BINS if small else REAL_BINS)
        load_script("gen_realcrates").generate(
            out, bins=count, small=small, debug=debug, large_every=large_every
        )
        what = f"Debian crates ({kind}): bins={count} debug={debug}"
        if small:
            what += f" large-every={large_every}"
        return what
    load_gen_workspace().generate(out, lto="fat", **spec)
    return f"generated: size={spec['size']} bins={spec['bins']} libs={spec['libs']} debug={spec['debug']}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workspace", type=Path, help="an existing workspace to build (not generated)")
    p.add_argument("--kind", choices=KINDS, default="gen", help="generated workspace kind")
    p.add_argument("--size", help=f"gen_workspace size (default {FULL['size']}; --quick: small)")
    p.add_argument("--bins", type=int)
    p.add_argument("--libs", type=int)
    p.add_argument(
        "--large-every",
        type=int,
        default=MANY_LARGE_EVERY,
        help=f"--kind many: every K-th bin uses all 19 crates (default {MANY_LARGE_EVERY})",
    )
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--tight", type=parse_size, help="tight limit (default: calibrated)")
    p.add_argument("--roomy", type=parse_size, help="roomy limit (default: calibrated)")
    p.add_argument("--caps", default="tight,roomy", help=f"subset of {','.join(CAPS)}")
    p.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small workspace, for a smoke run")
    p.add_argument("--json", type=Path, help="also write every figure here ('-': stdout)")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per build")
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip the calibration build (needs --tight/--roomy, no auto-warm or ci-warm row)",
    )
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    caps = [c for c in args.caps.split(",") if c]
    bad = [r for r in rows if r not in ROWS] + [c for c in caps if c not in CAPS]
    if bad:
        p.error(f"unknown row or cap: {', '.join(bad)}")
    if shutil.which("cargo") is None:
        print("bench: error: cargo is not on PATH", file=sys.stderr)
        return 1
    why = MemoryCgroup.unavailable()
    if why:
        print(f"bench: error: cannot create a memory cgroup: {why}", file=sys.stderr)
        return 2

    preset = QUICK if args.quick else FULL
    spec = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    work = args.work or Path(tempfile.mkdtemp(prefix="ltoguard-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    args.cleanup_state = not args.keep
    if args.workspace is None:
        args.workspace = work / "workspace"
        what = generate_workspace(
            args.kind,
            args.workspace,
            spec,
            bins=args.bins,
            large_every=args.large_every,
            debug=bool(args.debug),
        )
    else:
        args.workspace = args.workspace.resolve()
        what = f"given: {args.workspace}"
    log = sys.stderr
    print(f"bench: workspace {what}; scratch {work}", file=log)
    try:
        bench = Bench(args, work)
        if args.no_calibrate:
            if {"auto-warm", "ci-warm"} & set(rows) or (not args.tight and "tight" in caps):
                raise SystemExit(
                    "bench: error: --no-calibrate needs --tight and no auto-warm or ci-warm row"
                )
            if not args.roomy and "roomy" in caps:
                raise SystemExit("bench: error: --no-calibrate needs --roomy for the roomy cap")
            calib: dict[str, Any] | None = None
        else:
            print("bench: calibration build (ltoguard, 1 slot, no limit)...", file=log)
            calib = bench.calibrate()
        print(f"bench: {calibration_line(calib)}", file=log)
        peak = calib["peak_rss"] if calib else 0
        limits: dict[str, int | None] = {
            "tight": args.tight or int(peak * TIGHT_FACTOR),
            "roomy": args.roomy or int(peak * ROOMY_FACTOR),
            "uncapped": None,
        }
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {c: {r: [] for r in rows} for c in caps}
        for rep in range(args.repeat):
            # Alternate the order per repeat so drift in machine load hits every row.
            order = rows if rep % 2 == 0 else list(reversed(rows))
            for cap in caps:
                for row in order:
                    if cap == "uncapped" and row not in UNCAPPED_ROWS:
                        continue
                    res = bench.build(row, limits[cap], None)
                    raw[cap][row].append(res)
                    print(
                        f"bench: [{rep + 1}/{args.repeat}] {cap} {row}: rc={res['rc']}"
                        f" wall={res['wall']:.1f}s oom_kills={res['oom_kills']}"
                        f" peak_rss={mib(res['peak_rss'])}MiB majflt={res['majflt']}",
                        file=log,
                    )
    except KeyboardInterrupt:
        print("bench: interrupted", file=log)
        return 130
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    summary = {c: {r: summarise(raw[c][r]) for r in rows if raw[c][r]} for c in caps}
    out = [
        f"## bench_memory: {what}, repeat {args.repeat} (medians)\n",
        f"{calibration_line(calib)}\n",
    ]
    for cap in caps:
        out.append("\n" + table(cap, limits[cap], summary[cap], summary.get("uncapped")))
    print("".join(out))
    if args.json is not None:
        doc = {"workspace": what, "calibration": calib, "limits": limits, "raw": raw}
        write_json(args.json, dict(doc, summary=summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
