"""scripts/tune_policy.py: policies compared over every recorded trace."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from scripts import simulate, tune_policy


def test_the_current_policy_beats_the_old_one_on_every_trace_kind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tune_policy.main(["--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["policy"], r["estimates"]) for r in rows] == [
        (tune_policy.current(), "cold"),
        (tune_policy.current(), "warm"),
        (tune_policy.OLD, "cold"),
        (tune_policy.OLD, "warm"),
    ]
    new = {r["estimates"]: r for r in rows[:2]}
    old = {r["estimates"]: r for r in rows[2:]}
    for mode in ("cold", "warm"):
        assert new[mode]["kills"] == 0 and new[mode]["cpu_lost_pct"] < 0.5
        assert new[mode]["total_s"] < 0.9 * old[mode]["total_s"]
        # No cell got much slower (real-6-bins at 800 MiB: +5%, one early pause more).
        for cell, (wall, _) in new[mode]["cells"].items():
            assert wall <= old[mode]["cells"][cell][0] * 1.06, cell
    assert len(new["cold"]["cells"]) == 12


def test_a_bad_policy_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert tune_policy.main(["1.0:40"]) == 2
    assert "'1.0:40' is not H:D:M or H:D:M:flat" in capsys.readouterr().err
    assert tune_policy.main(["1.0:40:1:round"]) == 2


def test_a_stretched_job_runs_longer_along_the_same_profile() -> None:
    [job, *_] = simulate.load_trace(tune_policy.TRACES / "real-6-bins-600MiB.jsonl")
    slow = simulate.stretched(job, 1.5)
    assert slow.run_s == pytest.approx(job.run_s * 1.5)
    assert slow.peak == job.peak and slow.name == job.name
    assert slow.memory_at(job.run_s * 0.75) == job.memory_at(job.run_s * 0.5)


def test_the_duration_spread_is_each_run_over_its_job_s_median() -> None:
    def run(**seconds: float) -> list[simulate.TraceJob]:
        [job, *_] = simulate.load_trace(tune_policy.TRACES / "real-6-bins-600MiB.jsonl")
        return [simulate.stretched(replace(job, name=n), s / job.run_s) for n, s in seconds.items()]

    spread = simulate.duration_spread([run(a=10, b=4), run(a=20, c=7), run(a=30)])
    assert spread == pytest.approx([0.5, 1.0, 1.5])  # b and c ran once: they say nothing


def test_jittered_warm_replays_are_repeatable_and_not_the_exact_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warm replay that knows each job's timing exactly is the optimistic case; the
    jittered ones vary it as measured, the same way on every run of the script."""
    shutil.copy(tune_policy.TRACES / "real-6-bins-600MiB.jsonl", tmp_path)
    rows: dict[str, list[dict[str, list[float]]]] = {}
    for jitter in ("0", "3", "3"):
        args = [tune_policy.current(), "--traces", str(tmp_path), "--json", "--jitter", jitter]
        args += ["--spread-from", str(tune_policy.TRACES)]  # one trace has no spread
        assert tune_policy.main(args) == 0
        [_, warm] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        rows.setdefault(jitter, []).append(warm["cells"])
    assert rows["3"][0] == rows["3"][1]
    assert rows["3"][0] != rows["0"][0]
    assert len(rows["3"][0]) == 3  # its three caps
    assert tune_policy.main(["--traces", str(tmp_path), "--jitter", "3"]) == 2
    assert "no job ran in two traces of one workspace" in capsys.readouterr().err
    assert tune_policy.main(["--jitter", "-1"]) == 2


def test_cargos_orders_drawn_again_are_repeatable_and_the_same_cold_and_warm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With few bins of different lengths cargo's order moves the LTO phase: replays
    over orders drawn again give other figures, the same on every run of the script."""
    shutil.copy(tune_policy.TRACES / "real-6-bins-600MiB.jsonl", tmp_path)
    rows = []
    for orders in ("0", "4", "4"):
        args = [tune_policy.current(), "--traces", str(tmp_path), "--json", "--orders", orders]
        assert tune_policy.main(args) == 0
        rows.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert rows[1] == rows[2]
    assert [r["cells"] for r in rows[1]] != [r["cells"] for r in rows[0]]
    assert [r["orders"] for r in rows[1]] == [4, 4]
    jobs = simulate.load_trace(tmp_path / "real-6-bins-600MiB.jsonl")
    cold = tune_policy.replays(tmp_path / "x.jsonl", jobs, "cold", 0, (), 3)
    warm = tune_policy.replays(tmp_path / "x.jsonl", jobs, "warm", 2, (0.9, 1.1), 3)
    names = [[j.name for j in r] for r in cold]
    assert len(warm) == 6 and [[j.name for j in r] for r in warm] == names + names
    assert len({tuple(n) for n in names}) > 1
    assert tune_policy.main(["--orders", "-1"]) == 2
