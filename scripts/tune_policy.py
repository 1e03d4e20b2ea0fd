#!/usr/bin/env python3
"""Compare admission policies by replaying every trace under tests/data/traces at
caps from "one job fits" to "two fit" (scripts/simulate.py, ltoguard's own rules).

Each policy is HEADROOM:FLOOR_DIVISOR:MARGIN_FLOORS (the learned estimates' lead,
the critical floor's divisor, the admission margin in floors), with ":flat" at the
end for the policy before curves and backfill (estimates all along, first come first
served); each is replayed as
a first build (--estimates cold) and as a second (warm). Printed per policy: the
sum of the replayed LTO phases, kills, stops, pauses, CPU lost, and per trace and
cap the phase's seconds and the share of it with two jobs running.

Usage: tune_policy.py [POLICY...] [--traces DIR] [--json]
                      [--jitter N [--spread-from DIR]] [--curve-slack X] [--orders N]
Default policies: the one ltoguard runs with, and the one before 2026-12-04.

A warm replay learns each job's peak and curve from the very run it replays, so it
knows every job's timing exactly, which no second build does. ``--jitter N`` replays
each warm cell N times with every job's duration (and its curve) stretched by the
ratio of two runs drawn from the spread measured in the traces of ``--spread-from``
(default: ``--traces``): each run of a job over the median of its runs, over the
traces of one workspace (a trace's name less its cap; simulate.duration_spread).
Kills and stops are then counted over the N replays, seconds averaged over them.

cargo takes a workspace's binaries in a random order in each build (they tie in its
queue), and with a few bins of different lengths that order alone moves the LTO
phase (docs/benchmarks.md, "cargo's order"). ``--orders N`` replays every cell (cold and warm, each
jittered run) in N of cargo's orders drawn again (simulate.reordered, seeded by the
trace's name: cold and warm see the same orders, each of a trace's jobs started on
the n-th end of the replay rather than a given job's end); seconds are averaged
over all of a cell's replays, kills, stops and pauses summed over them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ltoguard import admission
from ltoguard.estimates import HISTORY_HEADROOM
from ltoguard.sizes import MiB
from scripts import simulate

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
TRACES = DATA / "traces"
# Caps per trace, MiB: from where the largest job just fits beside the rest of the
# build to where most pairs fit.
CAPS = {
    "real-100-bins": (600, 700, 800),
    "gen-many-50-bins": (430, 520, 700),
    "real-6-bins": (500, 600, 800),
    "gen-generic-4-bins-debug": (1000, 1200, 1600),
}
OLD = "1.1:10:1:flat"


def current() -> str:
    d = admission.DEFAULT
    return f"{HISTORY_HEADROOM:g}:{d.critical_floor_divisor}:{d.margin_floors:g}"


def caps_of(path: Path) -> Sequence[int]:
    for prefix, caps in CAPS.items():
        if path.name.startswith(prefix):
            return caps
    cap = simulate.cap_from_name(path)
    return (cap // MiB,) if cap else ()


def spread(traces: Sequence[Path]) -> list[float]:
    """simulate.duration_spread of ``traces``, taken by workspace (a trace's name less
    its cap: ``sweepA-many-186MiB`` is a build of ``sweepA-many``)."""
    families: dict[str, list[list[simulate.TraceJob]]] = {}
    for path in traces:
        families.setdefault(path.stem.rsplit("-", 1)[0], []).append(simulate.load_trace(path))
    return sorted(r for runs in families.values() for r in simulate.duration_spread(runs))


def replays(
    path: Path,
    jobs: list[simulate.TraceJob],
    estimates: str,
    jitter: int,
    ratios: Sequence[float],
    orders: int = 0,
) -> list[list[simulate.TraceJob]]:
    """The runs a cell replays: the trace itself, or for a warm cell with ``jitter``,
    that many runs of it with each job's duration varied, and with ``orders``, each
    of those in that many of cargo's orders drawn again (the module's docstring)."""
    out = [jobs]
    if estimates == "warm" and jitter:
        out = []
        for k in range(jitter):
            rng = random.Random(f"{path.name}:{k}")
            out.append(
                [simulate.stretched(j, rng.choice(ratios) / rng.choice(ratios)) for j in jobs]
            )
    if orders:
        # Each draw seeded on its own: cold and warm (each jittered run) the same orders.
        rngs = [f"{path.name}:orders:{i}" for i in range(orders)]
        out = [simulate.reordered(run, random.Random(seed)) for run in out for seed in rngs]
    return out


def run(
    policy: str,
    estimates: str,
    traces: Sequence[Path],
    jitter: int = 0,
    slack: float | None = None,
    ratios: Sequence[float] = (),
    orders: int = 0,
) -> dict[str, object]:
    """One policy replayed over ``traces`` (``jitter``, ``ratios``, ``orders``: the
    module's docstring; ``slack``: Limits.curve_slack, else its default)."""
    headroom, divisor, margin, *flat = policy.split(":")
    slacks = {} if slack is None else {"curve_slack": slack}
    limits = admission.Limits(
        critical_floor_divisor=int(divisor), margin_floors=float(margin), **slacks
    )
    total = lost = cpu = 0.0
    kills = stops = pauses = 0
    cells = {}
    for path in traces:
        jobs = simulate.load_trace(path)
        runs = replays(path, jobs, estimates, jitter, ratios, orders)
        for cap in caps_of(path):
            walls = twos = 0.0
            for replayed in runs:
                r = simulate.simulate(
                    replayed,
                    cap * MiB,
                    estimates=estimates,
                    limits=limits,
                    headroom=float(headroom),
                    use_curves=not flat,
                    backfill=not flat,
                    learned=jobs,
                )
                walls += r.wall / len(runs)
                twos += (r.overlap_s / r.wall if r.wall else 0.0) / len(runs)
                kills += r.kills + r.failed
                stops += r.stops
                pauses += r.pauses
                lost += r.cpu_lost
                cpu += r.cpu
            total += walls
            cells[f"{path.stem.rsplit('-', 1)[0]}@{cap}"] = [round(walls, 1), round(twos, 2)]
    return {
        "policy": policy,
        "estimates": estimates,
        "jitter": jitter if estimates == "warm" else 0,
        "orders": orders,
        "curve_slack": limits.curve_slack,
        "total_s": round(total, 1),
        "kills": kills,
        "stops": stops,
        "pauses": pauses,
        "cpu_lost_pct": round(100 * lost / cpu, 2) if cpu else 0.0,
        "cells": cells,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tune_policy.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", nargs="*", help="HEADROOM:FLOOR_DIVISOR:MARGIN_FLOORS[:flat]")
    ap.add_argument("--traces", type=Path, default=TRACES)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jitter", type=int, default=0, metavar="N", help="warm replays per cell")
    ap.add_argument("--spread-from", type=Path, default=None, metavar="DIR")
    ap.add_argument(
        "--curve-slack", type=float, default=None, metavar="X", help="Limits.curve_slack"
    )
    ap.add_argument(
        "--orders", type=int, default=0, metavar="N", help="cargo's orders drawn per replay"
    )
    args = ap.parse_args(argv)
    for name in ("jitter", "orders"):
        if getattr(args, name) < 0:
            print(f"tune_policy.py: error: --{name} must be 0 or more", file=sys.stderr)
            return 2
    policies = args.policy or [current(), OLD]
    traces = sorted(args.traces.glob("*.jsonl"))
    if not traces:
        print(f"tune_policy.py: error: no .jsonl trace in {args.traces}", file=sys.stderr)
        return 2
    ratios: list[float] = []
    if args.jitter:
        source = args.spread_from or args.traces
        ratios = spread(sorted(source.glob("*.jsonl")))
        if not ratios:
            print(
                f"tune_policy.py: error: --jitter: no job ran in two traces of one workspace"
                f" in {source} (pass --spread-from)",
                file=sys.stderr,
            )
            return 2
    for policy in policies:
        parts = policy.split(":")
        if len(parts) not in (3, 4) or parts[3:] not in ([], ["flat"]):
            print(f"tune_policy.py: error: {policy!r} is not H:D:M or H:D:M:flat", file=sys.stderr)
            return 2
        for estimates in ("cold", "warm"):
            row = run(policy, estimates, traces, args.jitter, args.curve_slack, ratios, args.orders)
            if args.json:
                print(json.dumps(row))
                continue
            table = row["cells"]
            assert isinstance(table, dict)
            cells = " ".join(f"{k}:{w:g}s/{two:.2f}" for k, (w, two) in table.items())
            print(
                f"{policy:12} {estimates:5} total {row['total_s']:7.1f}s kills {row['kills']}"
                f" stops {row['stops']} pauses {row['pauses']} lost {row['cpu_lost_pct']}%"
                f"  {cells}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
