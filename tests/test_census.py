"""scripts/census.py's reading of processes and its choice of samples (the build
itself needs root and a memory cgroup: see docs/benchmarks.md for its figures)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from tests.conftest import load_script

MiB = 1 << 20


def test_census_counts_each_kind_of_process() -> None:
    census = load_script("census")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)  # past the interpreter's start-up
        got = census.census([str(sleeper.pid), str(sleeper.pid), "999999999"])
    finally:
        sleeper.kill()
        sleeper.wait()
    # A Python counts as ltoguard (in the builds measured, its only Pythons); a gone pid is skipped.
    assert list(got) == ["ltoguard"]
    count, anon, file = got["ltoguard"]
    assert count == 2 and anon > MiB and file > MiB


def test_notable_samples_are_the_fullest_and_a_lone_compile() -> None:
    census = load_script("census")

    def sample(t: float, anon: int, rustcs: int) -> dict[str, object]:
        procs = {"rustc": [rustcs, anon, 0]} if rustcs else {}
        return dict(t=t, usage=anon, anon=anon, mapped=0, cache=0, inactive_file=0, procs=procs)

    samples = [
        sample(0, 10, 0),
        sample(1, 50, 2),
        sample(2, 40, 1),
        sample(3, 30, 1),
        sample(4, 20, 1),
    ]
    picked = census.notable(samples)
    assert [(label, s["t"]) for label, s in picked] == [
        ("most anon", 1),
        ("most anon", 2),
        ("most anon", 3),
        ("one rustc", 3),
    ]
    assert "rustc x1" in census.describe(samples[2])


def test_the_cap_is_a_size_or_a_number_of_mib() -> None:
    census = load_script("census")
    assert census.cap_size("265") == 265 * MiB
    assert census.cap_size("265M") == 265 * MiB
    assert census.cap_size("1.5G") == 1536 * MiB
    with pytest.raises(argparse.ArgumentTypeError, match="invalid size '4Q'"):
        census.cap_size("4Q")


def test_what_follows_a_double_dash_goes_to_cargo() -> None:
    census = load_script("census")
    ours, cargo = census.split_cargo_args(["WS", "400M", "plain", "--", "--examples", "-p", "x"])
    assert ours == ["WS", "400M", "plain"] and cargo == ["--examples", "-p", "x"]
    assert census.split_cargo_args(["WS", "400M", "plain"]) == (["WS", "400M", "plain"], [])
