"""scripts/calibrate_cold.py: the fit finds the constants its points were made with."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ltoguard.sizes import MiB
from tests.conftest import load_script


@pytest.fixture
def cal() -> ModuleType:
    return load_script("calibrate_cold")


def point(code: float, generic: float, source: int, debug: bool) -> dict[str, Any]:
    """A job whose peak follows the fitted model exactly: base 110 MiB, 25 per code
    byte (x 1.8 with debug info), 40 per generic byte per use, one more use per 2000
    bytes of own source (x 4 with debug info)."""
    uses = 1 + min(source, 32 * 1024) / 2000
    peak = 110 * MiB + 25 * code * MiB * (1.8 if debug else 1.0)
    peak += 40 * generic * MiB * uses * (4.0 if debug else 1.0)
    meta = 3 * MiB + generic * MiB
    inputs = {"deps": int(code * MiB + meta), "crates": 3, "source": source, "meta": int(meta)}
    return {
        "set": "s",
        "crate": "app",
        "lto": "fat",
        "debug": "2" if debug else "",
        "inputs": {**inputs, "generic": int(generic * MiB)},
        "peak": int(peak),
    }


def test_least_squares_solves_an_exact_system(cal: ModuleType) -> None:
    rows = [[1.0, x, y] for x, y in [(0, 0), (1, 0), (0, 1), (2, 3), (5, 1)]]
    ys = [3 + 2 * x - 0.5 * y for _, x, y in rows]
    assert cal.least_squares(rows, ys) == pytest.approx([3, 2, -0.5])
    # a feature without spread gets no weight instead of a division by zero
    assert cal.least_squares([[1.0, 0.0], [1.0, 0.0]], [4.0, 4.0]) == pytest.approx([4, 0])


def test_the_fit_recovers_the_constants_of_its_points(cal: ModuleType) -> None:
    model = cal.model
    lines = [point(c, 0, 8000, d) for c in (1, 4, 9) for d in (False, True)]
    heavy = [
        point(0, g, s, d) for g, s in [(0.3, 4000), (1, 2000), (0.5, 15000)] for d in (False, True)
    ]
    consts = cal.fit(lines + heavy)
    assert consts["base"] / MiB == pytest.approx(110)
    assert consts["code"] == pytest.approx(25)
    assert consts["debug2"] == pytest.approx(1.8) and consts["debug2_max"] == pytest.approx(1.8)
    assert consts["debug1"] == model.CODE_DEBUG_FACTOR[1]  # no point at that level: the shipped one
    assert consts["generic"] == pytest.approx(40)
    assert consts["use_source"] == pytest.approx(2000)
    assert consts["generic_debug"] == pytest.approx(4)
    for p in lines + heavy:
        assert cal.predicted(p, consts) == pytest.approx(p["peak"], rel=1e-5)


def test_without_generic_code_the_fit_is_the_line(cal: ModuleType) -> None:
    consts = cal.fit([point(c, 0, 5000, False) for c in (1, 3, 9)])
    assert consts["generic"] == 0
    assert consts["code"] == pytest.approx(25)


def test_generic_sets_alone_are_fitted_over_the_shipped_line(cal: ModuleType) -> None:
    # no point to fit the line on: the generic term is fitted over the shipped one
    model = load_script("calibrate_cold").model
    heavy = [point(0, g, s, False) for g, s in [(0.3, 4000), (1, 2000), (0.5, 15000)]]
    consts = cal.fit(heavy)
    assert consts["base"] == model.BASE and consts["debug2"] == model.CODE_DEBUG_FACTOR[2]
    assert consts["generic"] > 0


def test_the_report_has_every_point_and_each_estimates_error(
    cal: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    points = [point(1, 0, 9000, False), point(0.5, 2, 4000, False), point(0.5, 2, 4000, True)]
    saved = tmp_path / "points.json"
    saved.write_text(json.dumps(points))
    assert cal.main(["--from", str(saved)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| s |")]
    assert len(rows) == 3
    assert all(line.count("%)") == 3 for line in rows)  # line, shipped, fit
    assert "line constants: 3 jobs" in out and "shipped constants: 3 jobs" in out


def test_only_names_known_sets(cal: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cal.main(["--only", "no-such-set"])
    assert exc.value.code == 2
    assert "no-such-set" in capsys.readouterr().err
