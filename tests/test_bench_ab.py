"""scripts/bench_ab.py's order of builds and its summary (the builds themselves need
root and a memory cgroup: see docs/benchmarks.md for its figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

MiB = 1 << 20


def test_rows_take_turns_starting_a_round() -> None:
    ab = load_script("bench_ab")
    got = ab.order(["plain", "cold", "warm"], 4)
    assert got == [
        (0, "plain"), (0, "cold"), (0, "warm"),
        (1, "cold"), (1, "warm"), (1, "plain"),
        (2, "warm"), (2, "plain"), (2, "cold"),
        (3, "plain"), (3, "cold"), (3, "warm"),
    ]  # fmt: skip


def _b(k: int, row: str, wall: float, ok: bool = True, kills: int = 0) -> dict[str, Any]:
    return {
        "round": k,
        "row": row,
        "wall": wall,
        "ok": ok,
        "kills": kills,
        "code": 0 if ok else 101,
    }


def test_each_build_is_compared_with_the_plain_build_of_its_round() -> None:
    ab = load_script("bench_ab")
    builds = [
        _b(0, "plain", 10.0), _b(0, "cold", 11.0),
        _b(1, "plain", 20.0), _b(1, "cold", 21.0),  # a slow round: the ratio stays near 1
        _b(2, "plain", 10.0, ok=False, kills=1), _b(2, "cold", 12.0),  # no plain to compare
        _b(3, "plain", 10.0), _b(3, "cold", 30.0, ok=False),  # a failed build: no ratio
    ]  # fmt: skip
    stats = ab.summary(builds, ["plain", "cold"])
    assert stats["plain"]["failed"] == 1 and stats["plain"]["oom_kills"] == 1
    assert stats["plain"]["vs_plain"] == [1.0, 1.0, 1.0]
    cold = stats["cold"]
    assert cold["builds"] == 4 and cold["failed"] == 1
    assert cold["wall"] == [12.0, 11.0, 21.0]
    assert cold["vs_plain"] == pytest.approx([1.075, 1.05, 1.1])  # rounds 0 and 1 only
    text = ab.table(stats, 517 * MiB)
    assert "| cold | 4 | 12.0 (11.0-21.0) | 1.075 (1.050-1.100) | 0 | 1 |" in text
    assert "@ 517 MiB" in text


def test_a_row_without_a_finished_build_says_so() -> None:
    ab = load_script("bench_ab")
    stats = ab.summary(
        [_b(0, "plain", 10.0), _b(0, "warm", 9.0, ok=False, kills=2)], ["plain", "warm"]
    )
    assert stats["warm"]["wall"] is None and stats["warm"]["vs_plain"] is None
    assert "| warm | 1 | - | - | 2 | 1 |" in ab.table(stats, 300 * MiB)


def test_rows_come_once_each_plain_first() -> None:
    ab = load_script("bench_ab")
    _args, rows, cap = ab.parse(["ws", "517M", "--rows", "warm,cold,warm"])
    assert rows == ["plain", "warm", "cold"] and cap == 517 * MiB


def test_a_workspace_that_cannot_be_timed_says_why(tmp_path: Path) -> None:
    ab = load_script("bench_ab")
    args, rows, _cap = ab.parse([str(tmp_path), "300M"])
    assert ab.unusable(args, rows) == f"no Cargo.toml in {tmp_path}"
    (tmp_path / "Cargo.toml").write_text("[workspace]\n")
    assert "names no file" in ab.unusable(args, rows)  # nothing would rebuild


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    ab = load_script("bench_ab")
    bad = (
        (["ws", "517M", "--rows", "plain,hot"], "(not hot)"),
        (["ws", "517M", "--rounds", "0"], "--rounds must be at least 1"),
        (["ws", "lots"], "like 517M"),
        (["ws", "0M"], "above 0"),
    )
    for argv, what in bad:
        with pytest.raises(SystemExit) as exc:
            ab.main(argv)
        assert exc.value.code == 2
        assert what in capsys.readouterr().err
