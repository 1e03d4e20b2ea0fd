#!/usr/bin/env python3
"""Load test of ltoguard's semaphore with real ltoguard processes and a fake rustc.

Each round starts --procs guarded invocations at once against a fresh state
directory, with one random LTOGUARD_SLOTS=N (1..4) for the whole round and a random
duration per compile. It checks and reports:

- the most compiles running at once, counted by the fake compilers themselves
  (an flock'd list of live pids, scripts/fakerustc.py): never more than N;
- every invocation finished within a bound (no deadlock) with the exit status its
  compiler chose (some exit 3 on purpose), or was one this script SIGKILLed;
- admission latency: from a compile's end to the next compile's start, taken
  only while all N slots were busy and someone was queued (median, p99);
- waiters' CPU: the run time of each ltoguard process (/proc/PID/schedstat, in ns)
  while its queue ticket exists, over that wall time;
- what is left in the state directory: only lock files and the event log may
  stay; tickets, records, temp files and a memory history (each round keeps its
  own in its XDG_CACHE_HOME, set by scripts/fakerustc.clean_env) are leftovers.

--kill K SIGKILLs K random invocations per round (wrapper and compiler, as the
OOM killer would) at random moments; they are excluded from the exit-status check
and their records are reported separately (records of killed holders stay by design).

    .venv/bin/python scripts/stress.py --rounds 8 --procs 64
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.checkout_venv import use_checkout_venv  # noqa: E402

use_checkout_venv()

from scripts.fakerustc import clean_env, ltoguard_cmd, make_fake_rustc, read_log  # noqa: E402
from scripts.processes import Procs, cpu_seconds  # noqa: E402

ALLOWED_PREFIXES = ("mutex.lock", "slot-", "events-")
POLL = 0.1  # seconds between the monitor's looks at tickets and CPU times
SETTLE = 0.3  # seconds of a waiter's start-up not counted as waiting
MIN_WINDOW = 1.0  # seconds of waiting before a waiter's CPU share is counted


def leftovers(state: Path) -> list[str]:
    """Files that should not outlive the processes that made them."""
    try:
        names = os.listdir(state)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith(ALLOWED_PREFIXES))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


def admission_latencies(
    log: list[dict[str, Any]], n: int, enqueued: dict[str, float], since: float = 0.0
) -> list[float]:
    """Seconds from a compile's end to the next compile's start, counted only when all
    n slots were busy and some waiter was already queued (ticket seen by the monitor)
    and not yet started: the release that waiter was waiting for. Only releases at
    or after `since` count."""
    events = sorted(
        (e["t"], 0 if e["what"] == "end" else 1, e) for e in log if e["what"] in ("start", "end")
    )
    running = 0
    started: set[str] = set()
    out: list[float] = []
    pending_end: float | None = None
    for t, _, e in events:
        if e["what"] == "start":
            if pending_end is not None:
                out.append(t - pending_end)
                pending_end = None
            running += 1
            started.add(e["name"])
        else:
            if (
                running == n
                and t >= since
                and pending_end is None
                and any(q < t and name not in started for name, q in enqueued.items())
            ):
                pending_end = t
            running -= 1
    return out


def run_round(
    *,
    procs: int,
    slots: int,
    rng: random.Random,
    max_duration: float,
    kill: int = 0,
    bound: float | None = None,
    base: Path | None = None,
    settle: float = SETTLE,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ltoguard-stress-", dir=base) as d:
        tmp = Path(d)
        state = tmp / "state"
        rustc = make_fake_rustc(tmp)
        env = clean_env(tmp, state, LTOGUARD_SLOTS=str(slots))
        durations = [rng.uniform(0.0, max_duration) for _ in range(procs)]
        exits = [3 if rng.random() < 0.1 else 0 for _ in range(procs)]
        if bound is None:
            # Generous: serialised work, plus start-up of every Python on 2 cores.
            bound = 60.0 + 3.0 * sum(durations) / slots + 0.5 * procs
        to_kill = set(rng.sample(range(procs), min(kill, procs)))
        # Over the expected wall time: start-up of every Python (~0.1 s of a core
        # each here) and then the serialised compiles.
        span = 0.05 * procs + sum(durations) / slots
        kill_at = {i: rng.uniform(0.0, span) for i in to_kill}
        runner = Procs()
        errfiles = []
        try:
            t0 = time.monotonic()
            ps = []
            for i in range(procs):
                err = open(tmp / f"err-{i}.txt", "wb")  # noqa: SIM115 - closed below
                errfiles.append(err)
                e = dict(
                    env,
                    FAKE_NAME=f"bin{i}",
                    FAKE_SLEEP=f"{durations[i]:.3f}",
                    FAKE_EXIT=str(exits[i]),
                )
                ps.append(
                    runner.start(
                        ltoguard_cmd(rustc, f"bin{i}"),
                        e,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        cwd=str(tmp),
                    )
                )
            by_pid = {p.pid: i for i, p in enumerate(ps)}
            samples: dict[int, list[tuple[float, float]]] = {}
            killed: set[int] = set()
            enqueued: dict[str, float] = {}
            deadline = t0 + bound
            while any(p.poll() is None for p in ps) and time.monotonic() < deadline:
                now = time.monotonic()
                for i in list(to_kill - killed):
                    if now - t0 >= kill_at[i] and ps[i].poll() is None:
                        try:
                            os.killpg(ps[i].pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        killed.add(i)
                try:
                    names = os.listdir(state)
                except FileNotFoundError:
                    names = []
                for n in names:
                    if not (n.startswith("q-") and n.endswith(".json")):
                        continue
                    pid = int(n[:-5].rsplit("-", 1)[1])
                    if pid not in by_pid or by_pid[pid] in killed:
                        continue
                    try:
                        sample = (time.monotonic(), cpu_seconds(pid))
                    except OSError:  # gone between the listing and the read
                        continue
                    enqueued.setdefault(f"bin{by_pid[pid]}", time.time())
                    samples.setdefault(pid, []).append(sample)
                time.sleep(POLL)
            wall = time.monotonic() - t0
            hung = [i for i, p in enumerate(ps) if p.poll() is None]
        finally:
            runner.cleanup()
            for f in errfiles:
                f.close()
        codes = [p.returncode for p in ps]
        wrong = [
            (i, codes[i], exits[i])
            for i in range(procs)
            if i not in killed and i not in hung and codes[i] != exits[i]
        ]
        counter = (
            json.loads((tmp / "counter.json").read_text() or "{}")
            if (tmp / "counter.json").exists()
            else {}
        )
        log = read_log(tmp / "log.jsonl")
        lat = admission_latencies(log, slots, enqueued)
        # Once every invocation has queued or started: the first releases of a round
        # come while dozens of interpreters still start on the same cores.
        first_start: dict[str, float] = {}
        for e in log:
            if e["what"] == "start":
                first_start.setdefault(e["name"], e["t"])
        never = float("inf")
        arrived = [
            min(enqueued.get(f"bin{i}", never), first_start.get(f"bin{i}", never))
            for i in range(procs)
            if i not in killed
        ]
        steady = admission_latencies(log, slots, enqueued, since=max(arrived, default=never))
        cpu = []
        for seen in samples.values():
            # Skip the first `settle` s after the ticket appears: the first admission
            # attempt imports the memory modules (tens of ms of CPU, once), and while
            # dozens of processes start at once that spreads over about a second.
            settled = [x for x in seen if x[0] >= seen[0][0] + settle]
            if settled and settled[-1][0] - settled[0][0] >= MIN_WINDOW:
                (ta, ca), (tb, cb) = settled[0], settled[-1]
                cpu.append((cb - ca) / (tb - ta))
        bad_stderr = []
        for i in range(procs):
            for line in (tmp / f"err-{i}.txt").read_bytes().decode(errors="replace").splitlines():
                if not line.startswith("ltoguard: "):
                    bad_stderr.append((i, line))
        left = leftovers(state)
        killed_pids = {str(ps[i].pid) for i in killed}
        stale_records = [  # a killed holder's record, a killed waiter's ticket
            n
            for n in left
            if n.startswith(("run-", "q-")) and n[:-5].rsplit("-", 1)[-1] in killed_pids
        ]
        slot_files = (
            [n for n in os.listdir(state) if n.startswith("slot-")] if state.exists() else []
        )
        return {
            "procs": procs,
            "slots": slots,
            "wall": wall,
            "max_running": int(counter.get("max", 0)),
            "started": len({e["pid"] for e in log if e["what"] == "start"}),
            "hung": hung,
            "killed": len(killed),
            "wrong_exit": wrong,
            "latencies": lat,
            "steady_latencies": steady,
            "waiter_cpu": cpu,
            "bad_stderr": bad_stderr,
            "leftovers": [n for n in left if n not in stale_records],
            "stale_records": stale_records,
            "slot_files": len(slot_files),
        }


def ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--max-duration", type=float, default=0.4, help="seconds per fake compile, max")
    ap.add_argument("--kill", type=int, default=0, help="invocations SIGKILLed per round")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", metavar="FILE", help="also write every round's figures here")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}; {args.rounds} rounds x {args.procs} processes; kill {args.kill}/round")
    head = (
        f"{'round':>5} {'N':>2} {'wall s':>7} {'max run':>7} {'started':>7} {'killed':>6}"
        f" {'hung':>4} {'bad exit':>8} {'lat med ms':>10} {'lat p99 ms':>10}"
        f" {'wait cpu mean%':>14} {'max%':>6} {'leftover':>8}"
    )
    print(head)
    results = []
    failed = False
    for r in range(args.rounds):
        n = rng.randint(1, 4)
        res = run_round(
            procs=args.procs, slots=n, rng=rng, max_duration=args.max_duration, kill=args.kill
        )
        results.append(res)
        cpu = res["waiter_cpu"]
        ok = (
            res["max_running"] <= n
            and not res["hung"]
            and not res["wrong_exit"]
            and not res["leftovers"]
            and not res["bad_stderr"]
            and res["slot_files"] <= n
        )
        failed |= not ok
        print(
            f"{r + 1:>5} {n:>2} {res['wall']:>7.1f} {res['max_running']:>7} {res['started']:>7}"
            f" {res['killed']:>6} {len(res['hung']):>4} {len(res['wrong_exit']):>8}"
            f" {ms(statistics.median(res['latencies']) if res['latencies'] else float('nan')):>10}"
            f" {ms(percentile(res['latencies'], 0.99)):>10}"
            f" {100 * statistics.mean(cpu) if cpu else float('nan'):>14.2f}"
            f" {100 * max(cpu) if cpu else float('nan'):>6.2f} {len(res['leftovers']):>8}"
            + ("" if ok else "  FAIL")
        )
        for key in ("hung", "wrong_exit", "leftovers", "bad_stderr"):
            if res[key]:
                print(f"      {key}: {res[key][:5]}")
    lat = [x for res in results for x in res["latencies"]]
    steady = [x for res in results for x in res["steady_latencies"]]
    cpu = [x for res in results for x in res["waiter_cpu"]]
    total = sum(res["procs"] for res in results)
    print(
        f"total: {total} invocations, {sum(res['killed'] for res in results)} killed,"
        f" {sum(len(res['hung']) for res in results)} hung,"
        f" {sum(len(res['wrong_exit']) for res in results)} wrong exit statuses,"
        f" max running above N in {sum(res['max_running'] > res['slots'] for res in results)} rounds;"
        f" admission latency median {ms(statistics.median(lat)) if lat else '-'} ms,"
        f" p99 {ms(percentile(lat, 0.99))} ms, max {ms(max(lat, default=float('nan')))} ms"
        f" over {len(lat)} releases (once all had queued: median"
        f" {ms(statistics.median(steady)) if steady else '-'} ms,"
        f" p99 {ms(percentile(steady, 0.99))} ms, max {ms(max(steady, default=float('nan')))} ms"
        f" over {len(steady)});"
        f" waiter CPU mean {100 * statistics.mean(cpu) if cpu else 0:.2f}%,"
        f" p99 {100 * percentile(cpu, 0.99) if cpu else 0:.2f}%,"
        f" max {100 * max(cpu) if cpu else 0:.2f}% over {len(cpu)} waiters"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": seed, "rounds": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
