"""`ltoguard report`: build selection, figures, and the HTML page, from synthetic events."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ltoguard import events
from ltoguard.commands import report, report_data, report_html, report_svg

MiB = 1 << 20
T0 = 1_760_000_000.0
VOID = {"meta", "br", "hr", "img", "input", "link"}


def job(
    crate: str,
    queued: float,
    admitted: float,
    finished: float,
    *,
    ws: str = "/w/demo",
    peak: int = 600 * MiB,
    outcome: str = "ok",
    **kw: Any,
) -> dict[str, Any]:
    samples = [[round(t, 2), peak // 2] for t in _frange(admitted, finished, 1.0)]
    samples.append([finished, 0])
    e = {
        "v": 1, "kind": "rustc", "crate": crate, "types": ["bin"], "lto": "fat",
        "workspace": ws, "cwd": ws, "pid": 100, "queued": queued, "admitted": admitted,
        "finished": finished, "waited": admitted - queued, "peak": peak,
        "estimate": 700 * MiB, "estimate_basis": "history",
        "exit": 0 if outcome == "ok" else 1, "reruns": 0, "requeues": 0,
        "outcome": outcome, "budget": None, "available_at_admit": None,
        "samples": samples, "mem_source": "host (MemAvailable)",
    }  # fmt: skip
    e.update(kw)
    return e


def _frange(a: float, b: float, step: float) -> list[float]:
    out, t = [], a
    while t < b:
        out.append(t)
        t += step
    return out


def build(ws: str = "/w/demo", t0: float = T0) -> list[dict[str, Any]]:
    """Three bins, one slot's worth of memory for two: the third waits."""
    return [
        job("alpha", t0, t0, t0 + 20, ws=ws),
        job("beta", t0 + 1, t0 + 1, t0 + 25, ws=ws, budget=1500 * MiB),
        job("gamma", t0 + 2, t0 + 20, t0 + 40, ws=ws, outcome="failed", budget=1400 * MiB),
    ]


class Checker(HTMLParser):
    """Balanced tags, and every URL-ish attribute collected."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def check_page(page: str) -> Checker:
    c = Checker()
    c.feed(page)
    c.close()
    assert c.errors == []
    assert c.stack == []
    assert page.startswith("<!DOCTYPE html>")
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"https?:|//[a-z]", page, re.IGNORECASE)
    assert not [a for a in c.attrs if a[0] in ("src", "href")]
    assert "url(" not in page and "@import" not in page
    assert {"link", "img", "iframe", "object", "embed"}.isdisjoint(c.tags)
    return c


def test_page_has_one_bar_per_job() -> None:
    es = build()
    page = report_html.render_html(es, "/w/demo")
    c = check_page(page)
    assert page.count('class="run"') == 3
    assert page.count('class="wait"') == 1  # only gamma waited
    assert c.tags.count("tr") == 1 + 3  # header + one row per job
    for crate in ("alpha", "beta", "gamma"):
        assert f">{crate}</text>" in page and f"<td>{crate}</td>" in page
    assert 'data-outcome="failed"' in page
    assert report_svg.COLOURS["failed"] in page


def test_page_shows_paused_time_per_job() -> None:
    es = [job("alpha", T0, T0, T0 + 30, paused_s=12.4), job("beta", T0, T0, T0 + 5)]
    page = report_html.render_html(es, "/w/demo")
    check_page(page)
    assert ">paused</th>" in page
    alpha = page.split("<td>alpha</td>", 1)[1].split("</tr>", 1)[0]
    beta = page.split("<td>beta</td>", 1)[1].split("</tr>", 1)[0]
    assert "<td>12s</td>" in alpha  # after ran (30s): paused 12s
    assert "<td>-</td>" in beta  # never paused (an event from before pausing, too)


def test_page_escapes_names() -> None:
    es = [job("<script>alert(1)</script>", T0, T0, T0 + 5, ws="/w/a&b")]
    page = report_html.render_html(es, "/w/a&b")
    check_page(page)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "/w/a&amp;b" in page


def test_summary_figures() -> None:
    s = report_data.summary(build())
    assert s["jobs"] == 3
    assert s["total_wait"] == pytest.approx(18.0)
    assert s["serialised"] == 1
    # alpha and beta each hold 300 MiB in their samples at once.
    assert s["peak_total"] == 600 * MiB
    assert s["budget_min"] == 1400 * MiB
    # gamma (600 MiB) waited while alpha and beta (1200 MiB peaks) ran: 1800 > 1400.
    assert s["held_back"] == 1


def test_peak_card_is_never_below_a_jobs_own_peak() -> None:
    # The samples saw 216 MiB; the job's high-water mark, 432 MiB (a spike between
    # samples at the end of fat LTO). The card must not show less than the table.
    es = [job("alpha", T0, T0, T0 + 20, peak=432 * MiB)]
    assert max(v for _, v in report_data.memory_series(es)) == 216 * MiB
    assert report_data.summary(es)["peak_total"] == 432 * MiB
    page = report_html.render_html(es, "/w/demo")
    assert "<b>432 MiB</b><span>peak memory of guarded jobs" in page


def test_held_back_needs_a_budget() -> None:
    es = [job("a", T0, T0, T0 + 10), job("b", T0, T0 + 10, T0 + 20)]
    assert report_data.summary(es)["held_back"] is None
    page = report_html.render_html(es, "/w/demo")
    assert "no budget recorded" in page


def test_memory_series_sums_overlapping_jobs() -> None:
    es: list[dict[str, Any]] = [
        {"admitted": 0.0, "samples": [[1e9, 100], [1e9 + 2, 300], [1e9 + 4, 0]]},
        {"admitted": 0.0, "samples": [[1e9 + 1, 50], [1e9 + 3, 0]]},
        {"admitted": 1e9 + 10, "samples": [[0.5, 7], [1.0, 0]]},  # offsets from admission
        {"samples": "garbage"},
        {"samples": [[1, 2, 3], ["x", 1], [True, 5]]},
    ]
    series = report_data.memory_series(es)
    values = dict(series)
    assert values[1e9] == 100
    assert values[1e9 + 1] == 150
    assert values[1e9 + 2] == 350
    assert values[1e9 + 3] == 300
    assert values[1e9 + 4] == 0
    assert values[1e9 + 10.5] == 7


def test_tolerates_sparse_events() -> None:
    es: list[dict[str, Any]] = [{"crate": "x", "finished": T0}, {"queued": T0 + 1}, {}]
    page = report_html.render_html([e for e in es if e], None)
    check_page(page)
    assert page.count('class="run"') == 2


# -- choosing the build -------------------------------------------------------------


def test_select_latest_build_of_cwd_workspace() -> None:
    old = build(t0=T0)
    new = build(t0=T0 + 3600)
    other = build(ws="/w/other", t0=T0 + 7200)
    chosen, ws = report_data.select(old + new + other, workspace=None, cwd="/w/demo/crates/app")
    assert ws == "/w/demo/crates/app"
    assert [e["queued"] for e in chosen] == [e["queued"] for e in new]


def test_select_falls_back_to_latest_workspace() -> None:
    es = build(t0=T0) + build(ws="/w/other", t0=T0 + 3600)
    chosen, ws = report_data.select(es, workspace=None, cwd="/somewhere/else")
    assert ws == "/w/other"
    assert {e["workspace"] for e in chosen} == {"/w/other"}
    assert len(chosen) == 3


def test_select_explicit_workspace_and_since() -> None:
    es = build(t0=T0) + build(t0=T0 + 3600) + build(ws="/w/other", t0=T0 + 7200)
    chosen, _ = report_data.select(es, workspace="/w/demo", cwd="/w/other")
    assert len(chosen) == 3 and min(e["queued"] for e in chosen) == T0 + 3600
    chosen, _ = report_data.select(es, workspace="/w/demo", cwd="/", since=T0)
    assert len(chosen) == 6
    chosen, _ = report_data.select(es, workspace="/w/nope", cwd="/")
    assert chosen == []


def test_parse_since() -> None:
    now = 2_000_000_000.0
    assert report.parse_since("30m", now) == now - 1800
    assert report.parse_since("2h", now) == now - 7200
    assert report.parse_since("1d", now) == now - 86400
    assert report.parse_since("90s", now) == now - 90
    assert report.parse_since("1700000000", now) == 1_700_000_000
    iso = dt.datetime(2024, 5, 1, 12, 0).timestamp()
    assert report.parse_since("2024-05-01T12:00", now) == iso
    today = dt.date.fromtimestamp(now)
    assert (
        report.parse_since("12:30", now)
        == dt.datetime(today.year, today.month, today.day, 12, 30).timestamp()
    )
    with pytest.raises(ValueError, match="--since"):
        report.parse_since("yesterday-ish", now)


# -- the command -------------------------------------------------------------------


@pytest.fixture
def state(state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return state_dir


def write_events(state: Path, es: list[dict[str, Any]]) -> None:
    state.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for e in es:
            events.append_event(fd, os.geteuid(), e)
    finally:
        os.close(fd)


def test_main_writes_default_file(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_events(state, build(t0=T0) + build(t0=T0 + 3600))
    assert report.main([]) == 0
    out = Path.cwd() / "ltoguard-report.html"
    assert capsys.readouterr().out == f"{out}\n"
    page = out.read_text()
    check_page(page)
    assert page.count('class="run"') == 3  # the latest build only


def test_main_out_and_since(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_events(state, build(t0=T0) + build(t0=T0 + 3600))
    target = tmp_path / "r.html"
    assert report.main(["--out", str(target), "--workspace", "/w/demo", "--since", str(T0)]) == 0
    assert capsys.readouterr().out == f"{target}\n"
    assert target.read_text().count('class="run"') == 6


def test_main_zero_events(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([]) == 1  # no state dir at all
    err = capsys.readouterr().err
    assert err.startswith("ltoguard: error: no guarded jobs recorded yet")
    assert not state.exists()
    state.mkdir(mode=0o700)
    assert report.main([]) == 1  # a state dir, no events
    assert capsys.readouterr().err.startswith("ltoguard: error: no guarded jobs recorded")
    write_events(state, build())
    assert report.main(["--workspace", "/w/elsewhere"]) == 1
    assert "for /w/elsewhere" in capsys.readouterr().err
    assert not (Path.cwd() / "ltoguard-report.html").exists()


def test_main_bad_since(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--since", "whenever"]) == 2
    assert "--since" in capsys.readouterr().err


def test_since_and_last_exclusive(state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        report.main(["--since", "1h", "--last"])
    assert exc.value.code == 2


def test_rows_match_event_log(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    es = build()
    es[2]["exit"] = -9
    es[2]["outcome"] = "oom"
    write_events(state, es)
    assert report.main(["--workspace", "/w/demo"]) == 0
    page = (Path.cwd() / "ltoguard-report.html").read_text()
    assert "<td>SIGKILL</td>" in page
    assert 'class="outcome-oom"' in page
    assert json.dumps("alpha") not in page  # no raw JSON dumped into the page
