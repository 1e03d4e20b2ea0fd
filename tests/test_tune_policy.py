"""scripts/tune_policy.py: policies compared over every recorded trace."""

from __future__ import annotations

import json

import pytest

from scripts import tune_policy


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
