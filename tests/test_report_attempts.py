"""`ltoguard report` draws each attempt of a job: a job stopped to free memory and
queued again is two bars with its second wait between them, and the table's
waited + ran is the job's bar."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ltoguard import events
from ltoguard.commands import report_data, report_html, report_svg
from ltoguard.commands.common import fmt_age
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc, pid_alive, wait_for
from tests.test_report import T0, check_page, job


def requeued() -> dict[str, Any]:
    """beta: admitted at 1, stopped at 6 to make room for alpha, queued again,
    admitted again at 20 and done at 30, paused 2 s in its second run."""
    return job(
        "beta", T0 + 1, T0 + 1, T0 + 30, waited=15.0, paused_s=2.0, requeues=1,
        attempts=[
            [T0 + 1, T0 + 1, T0 + 6, 0.0, "requeue"],
            [T0 + 6.01, T0 + 20, T0 + 30, 2.0, "done"],
        ],
    )  # fmt: skip


def rects(page: str, crate: str) -> list[tuple[str, float, float]]:
    """(class, x, width) of the rects in one job's row."""
    row = page.split(f">{crate}</text>", 1)[1].split("</g>", 1)[0]
    return [
        (m[3], float(m[1]), float(m[2]))
        for m in re.findall(
            r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*class="(\w+)"', row
        )
        for m in [("", *m)]
    ]


def test_each_attempt_is_drawn_apart() -> None:
    es = [job("alpha", T0, T0, T0 + 20), requeued()]
    page = report_html.render_html(es, "/w/demo")
    check_page(page)
    drawn = rects(page, "beta")
    assert [c for c, _, _ in drawn] == ["run", "wait", "run"]
    scale = report_svg.PLOT_W / 30.0  # the page spans T0 .. T0+30
    first, wait, second = drawn
    assert first[1] == pytest.approx(report_svg.LABEL_W + 1 * scale, abs=0.1)
    assert first[2] == pytest.approx(5 * scale, abs=0.1)  # ends at 6, not at 30
    assert wait[1] == pytest.approx(report_svg.LABEL_W + 6.01 * scale, abs=0.1)
    assert second[1] == pytest.approx(report_svg.LABEL_W + 20 * scale, abs=0.1)
    assert report_svg.STOPPED_COLOUR in page.split(">beta</text>", 1)[1].split("</g>", 1)[0]
    assert 'class="paused"' in page  # the second run was paused for part of it
    assert "attempt 1 of 2" in page and "then stopped to free memory, queued again" in page


def table_row(page: str, crate: str) -> list[str]:
    row = page.split(f"<td>{crate}</td>", 1)[1].split("</tr>", 1)[0]
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


@pytest.mark.parametrize("logged", [True, False], ids=["attempts", "older log"])
def test_waited_plus_ran_is_the_bar(logged: bool) -> None:
    e = requeued()
    if not logged:
        del e["attempts"]
    waited, ran, paused = report_data.times(e)
    assert waited + ran == pytest.approx(29.0)  # queued at 1, finished at 30
    assert waited == pytest.approx(13.99 if logged else 15.0)
    assert paused == 2.0
    page = report_html.render_html([e], "/w/demo")
    cells = table_row(page, "beta")
    assert cells[1:4] == [fmt_age(waited), fmt_age(ran), "2.0s"]


def test_interrupted_while_waiting_is_a_wait_only() -> None:
    e = job("gamma", T0, T0, T0 + 8, outcome="interrupted", attempts=[[T0]])
    (t,) = report_data.attempts(e)
    assert (t.queued, t.admitted, t.ended) == (T0, None, T0 + 8)
    assert report_data.times(e)[:2] == (8.0, 0.0)
    page = report_html.render_html([e], None)
    check_page(page)
    assert [c for c, _, _ in rects(page, "gamma")] == ["wait"]


@pytest.mark.parametrize(
    "raw",
    [
        "nonsense",
        [["x"], 5, None],
        [[T0 + 1e6, T0 - 1e6, T0 - 5, True, 3]],  # out of the job's span, wrong types
    ],
)
def test_a_malformed_attempts_field_stays_within_the_job(raw: object) -> None:
    e = job("delta", T0, T0 + 2, T0 + 10, attempts=raw)
    for t in report_data.attempts(e):
        assert T0 <= t.queued <= t.ended <= T0 + 10
        assert t.admitted is None or t.queued <= t.admitted <= t.ended
    waited, ran, _ = report_data.times(e)
    assert waited + ran == pytest.approx(10.0) and waited >= 0 and ran >= 0
    check_page(report_html.render_html([e], None))


def test_a_guarded_job_logs_its_attempts(tmp_path: Path) -> None:
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    r = subprocess.run(
        ltoguard_cmd(rustc, "app"), env=clean_env(tmp_path, state), cwd=str(tmp_path),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    name = state / events.current_name(os.geteuid())
    (e,) = [json.loads(line) for line in name.read_text().splitlines()]
    (a,) = e["attempts"]
    q, admitted, ended, paused, then = a
    assert e["queued"] <= q <= admitted <= ended <= e["finished"]
    assert (paused, then) == (0.0, "done")


def test_a_job_stopped_and_queued_again_logs_both_attempts(tmp_path: Path, procs: Procs) -> None:
    # The pausing test's set-up: paused, then stopped at critical memory, then alone.
    from tests.test_pause import ALONE, CRITICAL, PAUSE, compiler, control, start, state
    from tests.test_pause import events as logged

    release = tmp_path / "release"
    p = start(procs, tmp_path, FAKE_UNTIL=str(release))
    first = compiler(tmp_path)
    control(tmp_path, PAUSE)
    assert wait_for(lambda: state(first) == "T")
    release.touch()
    control(tmp_path, CRITICAL)
    assert wait_for(lambda: not pid_alive(first))
    control(tmp_path, ALONE)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    [e] = logged(tmp_path)
    tries = report_data.attempts(e)
    assert len(tries) == e["requeues"] + 1 >= 2
    assert [t.then for t in tries] == ["requeue"] * (len(tries) - 1) + ["done"]
    assert tries[0].paused > 0 and tries[0].ended <= tries[1].queued
    assert sum(t.paused for t in tries) == pytest.approx(e["paused_s"], abs=0.01)
    waited, ran, _ = report_data.times(e)
    assert waited == pytest.approx(e["waited"], abs=0.01)
    assert waited + ran == pytest.approx(e["finished"] - e["queued"])
