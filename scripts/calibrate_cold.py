#!/usr/bin/env python3
"""Measure LTO peaks against their inputs, and fit the cold estimate (ltoguard/inputs.py).

Builds workspaces through ltoguard with fresh state and cache directories each (no
history), one LTO job at a time (LTOGUARD_SLOTS=1: nothing is stopped or paused,
so every peak is a whole compile's), and reads each guarded job's event: the
inputs the cold estimate saw (linked rlib bytes, crate count, own source bytes,
metadata bytes, the workspace's generic code), its profile, and the peak anonymous
memory of its process tree. Then it fits

    peak = BASE + PER_CODE_BYTE * code * (CODE_DEBUG_FACTOR, fitted per debug level)
         + PER_GENERIC_BYTE * generic * (1 + source / GENERIC_USE_SOURCE)
                                       * (GENERIC_DEBUG_FACTOR if debug)

code being the linked rlibs' bytes less their metadata (object code or bitcode) and
generic the workspace crates' metadata beyond their object code (inputs.closure):
the line by least squares on the points without generic code or debug info, the
generic term by least squares on what is left of the points with generic code and
no debug info, each debug factor as the median growth of its debug points (the code's
per level: 1, limited or line tables only; 2, full). It
prints every point with the error of the shipped constants (which add a small term
per byte of the crate's own source), of the line finished siblings' misses scale
(inputs.line: the whole line doubled with debug info, as every estimate was until
2026-12-06), and of the fit (its code term only: own source is not fitted). A peak
does not depend on what else runs beside it, so this may run while the machine is
busy (its timings are not figures).

    python3 scripts/calibrate_cold.py --json data.json           # generated workspaces
    python3 scripts/calibrate_cold.py --generic --json g.json    # + generic-heavy bins
    python3 scripts/calibrate_cold.py --realcrates --json d.json # + Debian's crates
    python3 scripts/calibrate_cold.py --from data.json           # refit saved points

The real-crate sets need Debian's packaged crates (scripts/gen_realcrates.py says
which `apt-get install librust-...-dev`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from ltoguard import inputs as model  # noqa: E402
from scripts.bench_memory import ltoguard_path  # noqa: E402

MiB = 1024 * 1024
GENERIC_SOURCE_CAP = 32 * 1024  # own source counted that far at most: beyond, not measured
# (name, generator, arguments): sizes chosen to spread the linked code over a wide range.
GENERATED = [
    ("gen-u2", "gen_workspace", ["--bins", "3", "--libs", "4", "--size", "2"]),
    ("gen-u6", "gen_workspace", ["--bins", "3", "--libs", "4", "--size", "6"]),
    ("gen-u14", "gen_workspace", ["--bins", "3", "--libs", "5", "--size", "14"]),
    ("gen-u30", "gen_workspace", ["--bins", "2", "--libs", "4", "--size", "30"]),
    ("gen-u4-debug", "gen_workspace", ["--bins", "3", "--libs", "4", "--size", "4", "--debug"]),
    ("gen-u12-debug", "gen_workspace", ["--bins", "2", "--libs", "4", "--size", "12", "--debug"]),
    ("gen-u4-lines", "gen_workspace", ["--bins", "3", "--libs", "4", "--size", "4", "--debug", "line-tables-only"]),
    ("gen-u12-limited", "gen_workspace", ["--bins", "2", "--libs", "4", "--size", "12", "--debug", "1"]),
]  # fmt: skip
# Binaries whose code is mostly a workspace library's generic code, instantiated at
# their own types (scripts/gen_generic.py): the library's rlib has little object code.
GENERIC = [
    ("gen-g8-t2", "gen_generic", ["--bins", "3", "--algos", "8", "--types", "2"]),
    ("gen-g16-t3", "gen_generic", ["--bins", "2", "--algos", "16", "--types", "3"]),
    ("gen-g40-t1", "gen_generic", ["--bins", "2", "--algos", "40", "--types", "1"]),
    ("gen-g40-t4", "gen_generic", ["--bins", "2", "--algos", "40", "--types", "4"]),
    ("gen-g8-t6", "gen_generic", ["--bins", "2", "--algos", "8", "--types", "6"]),
    (
        "gen-g24-t2-debug",
        "gen_generic",
        ["--bins", "4", "--algos", "24", "--types", "2", "--debug"],
    ),
    (
        "gen-g16-t3-debug",
        "gen_generic",
        ["--bins", "2", "--algos", "16", "--types", "3", "--debug"],
    ),
    (
        "gen-g40-t4-debug",
        "gen_generic",
        ["--bins", "2", "--algos", "40", "--types", "4", "--debug"],
    ),
]
REAL = [
    ("real-6", "gen_realcrates", ["--bins", "6"]),
    ("real-small-12", "gen_realcrates", ["--bins", "12", "--small"]),
    ("real-6-debug", "gen_realcrates", ["--bins", "4", "--debug", "--seed", "7"]),
    # The same crates at each debug level: their bitcode carries its debug info.
    ("real-6-lines", "gen_realcrates", ["--bins", "6", "--debug", "line-tables-only"]),
    ("real-6-limited", "gen_realcrates", ["--bins", "6", "--debug", "1"]),
    ("real-6-full", "gen_realcrates", ["--bins", "6", "--debug", "2"]),
]


def build(name: str, gen: str, args: list[str], work: Path) -> list[dict[str, Any]]:
    ws, state, cache = work / name, work / f"{name}-state", work / f"{name}-cache"
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    script = CHECKOUT / "scripts" / f"{gen}.py"
    subprocess.run([sys.executable, str(script), str(ws), *args], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTOGUARD_", "RUSTC_"))}
    env.update(
        RUSTC_WORKSPACE_WRAPPER=ltoguard_path(),
        LTOGUARD_DIR=str(state),
        XDG_CACHE_HOME=str(cache),  # where ltoguard keeps its history
        LTOGUARD_SLOTS="1",
        CARGO_TARGET_DIR=str(ws / "target"),
        CARGO_TERM_COLOR="never",
    )
    shutil.rmtree(ws / "target", ignore_errors=True)
    done = subprocess.run(
        ["cargo", "build", "--release", "-j2"], cwd=ws, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"calibrate: error: the build of {name} failed")
    points = []
    for path in sorted(state.glob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            ev = json.loads(line)
            if ev.get("inputs") and ev.get("peak") and ev.get("outcome") == "ok":
                prof = ev.get("profile") or {}
                points.append(
                    {
                        "set": name,
                        "crate": ev["crate"],
                        "lto": ev.get("lto", ""),
                        "debug": prof.get("debug", ""),
                        "inputs": ev["inputs"],
                        "peak": ev["peak"],
                    }
                )
    return points


def scaled_line(p: dict[str, Any]) -> float:
    """The line siblings' misses scale (inputs.line), the cold estimate until 2026-12-06."""
    return float(model.line(p["inputs"], debuginfo=p["debug"]))


def predicted(p: dict[str, Any], consts: dict[str, float] | None = None) -> float:
    if consts is None:
        return float(model.predict(p["inputs"], debuginfo=p["debug"]))
    level = model.debug_level(p["debug"])
    debug = level > 0
    line = consts["code"] * _code(p) * (consts[f"debug{level}"] if debug else 1.0)
    generic = consts["generic"] * _generic(p) * (1 + _uses_source(p) / consts["use_source"])
    return consts["base"] + line + generic * (consts["generic_debug"] if debug else 1.0)


def fit(points: list[dict[str, Any]]) -> dict[str, float]:
    """The line (base + code * c) by least squares on the points without generic code
    or debug info (the own-source term had no measurable weight there); the generic
    term (g + g * source / u, times a per-byte weight) by least squares on what the
    line leaves of the points with generic code and without debug info; each debug
    factor as the median of its debug points' growth over the plain prediction."""
    plain = [p for p in points if not model.debug_on(p["debug"]) and not _generic(p)]
    if plain:
        rows = [[1.0, _code(p) / MiB] for p in plain]
        base, slope = least_squares(rows, [p["peak"] / MiB for p in plain])
        base *= MiB
    else:  # generic-heavy sets alone: their generic term over the shipped line
        base, slope = float(model.BASE), model.PER_CODE_BYTE
    consts = {"base": base, "code": slope, "generic": 0.0, "use_source": 1.0}
    heavy = [p for p in points if not model.debug_on(p["debug"]) and _generic(p)]
    if heavy:
        rows = [[_generic(p), _generic(p) * _uses_source(p)] for p in heavy]
        left = [p["peak"] - consts["base"] - slope * _code(p) for p in heavy]
        per_byte, per_source = least_squares(rows, left)
        consts["generic"] = per_byte
        consts["use_source"] = per_byte / per_source if per_source > 0 else float("inf")
    for level in (1, 2):
        factors = sorted(
            (p["peak"] - consts["base"]) / max(1.0, slope * _code(p))
            for p in points
            if model.debug_level(p["debug"]) == level and not _generic(p)
        )
        consts[f"debug{level}"] = (
            factors[len(factors) // 2] if factors else model.CODE_DEBUG_FACTOR[level]
        )
        consts[f"debug{level}_max"] = factors[-1] if factors else consts[f"debug{level}"]
    generic_factors = sorted(
        (p["peak"] - consts["base"] - consts[f"debug{model.debug_level(p['debug'])}"] * slope * _code(p))
        / max(1.0, predicted(p, {**consts, "debug1": 1.0, "debug2": 1.0, "generic_debug": 1.0})
              - consts["base"] - slope * _code(p))
        for p in points
        if model.debug_on(p["debug"]) and _generic(p) and heavy
    )  # fmt: skip
    consts["generic_debug"] = generic_factors[len(generic_factors) // 2] if generic_factors else 1.0
    consts["generic_debug_max"] = generic_factors[-1] if generic_factors else 1.0
    return consts


def least_squares(rows: list[list[float]], ys: list[float]) -> list[float]:
    """The coefficients minimising the squared error of rows x coef against ys (the
    normal equations, solved by elimination: a few unknowns, no numpy needed)."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda k: abs(a[k][col]))
        a[col], a[pivot], b[col], b[pivot] = a[pivot], a[col], b[pivot], b[col]
        if abs(a[col][col]) < 1e-12:  # a feature without spread: no weight
            a[col][col] = 1.0
        for k in range(n):
            if k != col:
                f = a[k][col] / a[col][col]
                a[k] = [x - f * y for x, y in zip(a[k], a[col])]
                b[k] -= f * b[col]
    return [b[i] / a[i][i] for i in range(n)]


def _code(p: dict[str, Any]) -> float:
    return float(p["inputs"]["deps"] - p["inputs"].get("meta", 0))


def _generic(p: dict[str, Any]) -> float:
    return float(p["inputs"].get("generic", 0))


def _uses_source(p: dict[str, Any]) -> float:
    return float(min(p["inputs"]["source"], GENERIC_SOURCE_CAP))


def _err(est: float, peak: float) -> str:
    return f"{est / MiB:.0f} ({(est - peak) / peak:+.0%})"


def report(points: list[dict[str, Any]], consts: dict[str, float]) -> str:
    lines = [
        "| set | job | debug | rlibs | linked MiB | of it metadata | generic MiB | source KiB"
        " | peak MiB | line MiB (err) | shipped MiB (err) | fit MiB (err) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        peak = p["peak"]
        lines.append(
            f"| {p['set']} | {p['crate']} | {p['debug'] or 'no'} "
            f"| {p['inputs']['crates']} | {p['inputs']['deps'] / MiB:.1f} "
            f"| {p['inputs'].get('meta', 0) / MiB:.1f} | {_generic(p) / MiB:.2f} "
            f"| {p['inputs']['source'] / 1024:.0f} | {peak / MiB:.0f} "
            f"| {_err(scaled_line(p), peak)} | {_err(predicted(p), peak)} "
            f"| {_err(predicted(p, consts), peak)} |"
        )
    lines.append("")
    lines.append(
        f"fit: BASE {consts['base'] / MiB:.0f} MiB, PER_CODE_BYTE {consts['code']:.2f}, "
        f"CODE_DEBUG_FACTOR limited or lines {consts['debug1']:.2f} (median; at most"
        f" {consts['debug1_max']:.2f}), full {consts['debug2']:.2f} (at most"
        f" {consts['debug2_max']:.2f}); "
        f"PER_GENERIC_BYTE {consts['generic']:.1f}, GENERIC_USE_SOURCE "
        f"{consts['use_source']:.0f}, GENERIC_DEBUG_FACTOR {consts['generic_debug']:.2f}"
        f" (median; at most {consts['generic_debug_max']:.2f})"
    )
    for name, estimate in (("line", scaled_line), ("shipped", predicted)):
        errs = sorted((estimate(p) - p["peak"]) / p["peak"] for p in points)
        under = sum(1 for e in errs if e < 0)
        if errs:
            lines.append(
                f"{name} constants: {len(points)} jobs, error {errs[0]:+.0%} to {errs[-1]:+.0%}"
                f" (median {errs[len(errs) // 2]:+.0%}); {under} underestimated"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", type=Path, help="write the measured points here")
    p.add_argument("--from", dest="source", type=Path, help="refit points saved by --json")
    p.add_argument("--realcrates", action="store_true", help="also the Debian-crate workspaces")
    p.add_argument(
        "--generic", action="store_true", help="also the generic-heavy workspaces (gen_generic)"
    )
    p.add_argument("--only", help="comma-separated set names")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir, removed)")
    args = p.parse_args(argv)
    if args.source:
        points = json.loads(args.source.read_text())
    else:
        sets = GENERATED + (GENERIC if args.generic else []) + (REAL if args.realcrates else [])
        if args.only:  # any known set, whatever the flags
            wanted = set(args.only.split(","))
            sets = [s for s in GENERATED + GENERIC + REAL if s[0] in wanted]
            unknown = wanted - {s[0] for s in sets}
            if unknown:
                p.error(f"--only: no set named {', '.join(sorted(unknown))}")
        work = args.work or Path(tempfile.mkdtemp(prefix="ltoguard-calibrate-"))
        points = []
        try:
            for name, gen, gargs in sets:
                got = build(name, gen, gargs, work)
                print(f"calibrate: {name}: {len(got)} LTO jobs", file=sys.stderr)
                points += got
                if args.json:
                    args.json.write_text(json.dumps(points, indent=1))
        finally:
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    print(report(points, fit(points)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
