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
Default policies: the one ltoguard runs with, and the one before 2026-12-04.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ltoguard import admission
from ltoguard.estimates import HISTORY_HEADROOM
from ltoguard.sizes import MiB
from scripts import simulate

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
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


def run(policy: str, estimates: str, traces: Sequence[Path]) -> dict[str, object]:
    headroom, divisor, margin, *flat = policy.split(":")
    limits = admission.Limits(critical_floor_divisor=int(divisor), margin_floors=float(margin))
    total = lost = cpu = 0.0
    kills = stops = pauses = 0
    cells = {}
    for path in traces:
        jobs = simulate.load_trace(path)
        for cap in caps_of(path):
            r = simulate.simulate(
                jobs,
                cap * MiB,
                estimates=estimates,
                limits=limits,
                headroom=float(headroom),
                use_curves=not flat,
                backfill=not flat,
            )
            total += r.wall
            kills += r.kills + r.failed
            stops += r.stops
            pauses += r.pauses
            lost += r.cpu_lost
            cpu += r.cpu
            two = r.overlap_s / r.wall if r.wall else 0.0
            cells[f"{path.stem.rsplit('-', 1)[0]}@{cap}"] = [round(r.wall, 1), round(two, 2)]
    return {
        "policy": policy,
        "estimates": estimates,
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
    args = ap.parse_args(argv)
    policies = args.policy or [current(), OLD]
    traces = sorted(args.traces.glob("*.jsonl"))
    if not traces:
        print(f"tune_policy.py: error: no .jsonl trace in {args.traces}", file=sys.stderr)
        return 2
    for policy in policies:
        parts = policy.split(":")
        if len(parts) not in (3, 4) or parts[3:] not in ([], ["flat"]):
            print(f"tune_policy.py: error: {policy!r} is not H:D:M or H:D:M:flat", file=sys.stderr)
            return 2
        for estimates in ("cold", "warm"):
            row = run(policy, estimates, traces)
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
