"""`ltoguard report` tells the truth: one build per cargo run,
what each job built, a memory axis that fits, kills "avoided" only where memory
really lacked, and the page under the target directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ltoguard import events
from ltoguard.commands import report, report_data, report_html, report_svg
from ltoguard.sizes import MiB
from tests.test_report import T0, build, job


def test_one_build_per_cargo_run_however_close() -> None:
    first = [dict(e, build="100-5") for e in build(t0=T0)]
    second = [dict(e, build="200-9") for e in build(t0=T0 + 45)]  # 5 s after the first ended
    got = events.group_builds(first + second)
    assert [len(b) for b in got] == [3, 3]
    assert {e["build"] for e in got[-1]} == {"200-9"}


def test_one_cargo_run_stays_one_build_across_a_long_pause() -> None:
    slow = build(t0=T0) + [job("delta", T0 + 500, T0 + 500, T0 + 520)]
    got = events.group_builds([dict(e, build="100-5") for e in slow])
    assert [len(b) for b in got] == [4]


def test_events_without_a_cargo_id_fall_back_to_time() -> None:
    old = build(t0=T0) + build(t0=T0 + 45)  # an old log: within 60 s counts as one
    assert [len(b) for b in events.group_builds(old)] == [6]
    assert [len(b) for b in events.group_builds(build(t0=T0) + build(t0=T0 + 3600))] == [3, 3]


@pytest.mark.parametrize(
    ("kind", "types", "shown"),
    [
        ("rustc", ["bin"], "bin"),
        ("rustc", ["test"], "test"),
        ("rustc", ["cdylib"], "cdylib"),
        ("rustc", ["staticlib"], "staticlib"),
        ("rustc", [], "bin"),
        ("run", ["run"], "run"),
        ("link", ["link"], "link"),
        ("rustc", "junk", "bin"),
    ],
)
def test_kind_says_what_was_built(kind: str, types: Any, shown: str) -> None:
    assert events.kind_of({"kind": kind, "types": types}) == shown


def test_the_table_shows_the_kind() -> None:
    es = [dict(e, types=["test"]) for e in build()]
    page = report_html.render_html(es, "/w/demo")
    assert page.count("<td>test</td>") == 3 and "<td>rustc</td>" not in page


def test_avoided_counts_only_what_the_machine_could_not_hold() -> None:
    # gamma waited 18 s; beside alpha and beta (600 MiB each) it needed 1800 MiB.
    tight = build()
    assert report_data.held_back(tight, None) is None
    assert report_data.summary(tight)["held_back"] == 1  # budget 1400 MiB: would not fit
    # The same jobs under LTOGUARD_MEMORY=1400M on a host with 20 GiB free: they
    # would have fit; the wait was the setting's, not a kill avoided.
    roomy = [dict(e, physical=20 << 30) for e in build()]
    assert report_data.summary(roomy)["held_back"] == 0


def test_memory_axis_fits_the_jobs_not_a_huge_host() -> None:
    huge = [dict(e, budget=23 << 30) if e.get("budget") else e for e in build()]
    svg = report_svg.memory_svg(huge, T0, 40.0)
    assert 'class="budget"' not in svg  # not drawn on a scale that would flatten the jobs
    assert "above this scale" in svg
    assert "20 GiB" not in svg and "GiB</text>" not in svg.split("above")[0]  # ticks in MiB
    near = report_svg.memory_svg(build(), T0, 40.0)
    assert 'class="budget"' in near and "above this scale" not in near


def test_default_output_is_the_workspace_target_dir(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "target").mkdir(parents=True)
    es = build(ws=str(ws))
    assert report.default_out(es, {}) == str(ws / "target" / "ltoguard-report.html")
    (tmp_path / "elsewhere").mkdir()
    env = {"CARGO_TARGET_DIR": str(tmp_path / "elsewhere")}
    assert report.default_out(es, env) == str(tmp_path / "elsewhere" / "ltoguard-report.html")
    env = {"CARGO_TARGET_DIR": "../elsewhere"}  # relative: to the workspace, as cargo reads it
    assert os.path.normpath(report.default_out(es, env)) == str(
        tmp_path / "elsewhere" / "ltoguard-report.html"
    )
    gone = build(ws=str(tmp_path / "cleaned"))
    assert report.default_out(gone, {}) == os.path.join(os.getcwd(), "ltoguard-report.html")


def test_each_jobs_own_peak_is_drawn_where_the_samples_miss_it() -> None:
    """A fat-LTO compile's last rise is shorter than the logged samples' second: the
    chart marks each job's peak over its run, and its axis reaches it."""
    alone = [job("alpha", T0, T0, T0 + 20, peak=600 * MiB)]  # samples at 300 MiB
    svg = report_svg.memory_svg(alone, T0, 20.0)
    assert svg.count('class="peak"') == 1
    assert "alpha: peak 600 MiB" in svg
    ticks = [t.rsplit(">", 1)[1] for t in svg.split("</text>") if 'class="tick"' in t]
    assert "512 MiB" in ticks  # the axis reaches past the samples' 300 MiB
    assert report_data.peak_marks(alone) == [(T0, T0 + 20, 600.0 * MiB, "alpha")]
    assert report_data.peak_marks([dict(alone[0], peak=None)]) == []  # none recorded
    # Stopped and queued again: its mark spans its last run, not the wait between.
    twice = dict(
        alone[0],
        attempts=[[T0, T0, T0 + 5, 0.0, "requeue"], [T0 + 5, T0 + 12, T0 + 20, 0.0, "done"]],
    )
    assert report_data.peak_marks([twice]) == [(T0 + 12, T0 + 20, 600.0 * MiB, "alpha")]
    # Stopped, queued again, then interrupted while it waited: over the run it had.
    cut = dict(alone[0], attempts=[[T0, T0 + 1, T0 + 10, 0.0, "requeue"], [T0 + 10]])
    assert report_data.peak_marks([cut]) == [(T0 + 1, T0 + 10, 600.0 * MiB, "alpha")]
