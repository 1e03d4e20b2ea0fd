"""`ltoguard report`'s page: one self-contained HTML file of a build.

In the spirit of ``cargo build --timings``: a summary, one bar per guarded job
(waiting, then running, coloured by outcome), the memory the guarded jobs held
over time against the budget, and a table. Inline CSS and SVG only: no scripts,
no fonts, no URLs, so the file can be attached to a CI run and opened anywhere.
SVG ``<title>`` elements give tooltips without JavaScript.
"""

from __future__ import annotations

import html
import os
import time

from ltoguard import events as ev
from ltoguard.commands.common import fmt_age, fmt_bytes, fmt_when
from ltoguard.commands.report_data import (
    Attempt,
    attempts,
    budget_series,
    memory_series,
    samples,
    summary,
    times,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

COLOURS = {
    "ok": "#3b82c4",
    "failed": "#d14b4b",
    "oom": "#e8912d",
    "interrupted": "#8a8f98",
}
UNKNOWN_COLOUR = "#6b7280"
WAIT_COLOUR = "#d9dde3"
STOPPED_COLOUR = "#9db4cc"  # an attempt stopped to free memory, then queued again
# What an attempt that was not the last led to, for its tooltip.
THEN = {
    "requeue": "stopped to free memory, queued again",
    "rerun alone": "killed out of memory, queued to rerun alone",
}

# Geometry of the charts (px). The page is laid out for a 1200 px wide chart.
LABEL_W = 190
PLOT_W = 960
ROW_H = 22
AXIS_H = 26
MEM_H = 220

# ---------------------------------------------------------------------------
# the charts


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def _nice_step(span: float, max_ticks: int = 12) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if span / step <= max_ticks:
            return float(step)
    return span / max_ticks


def _nice_size_step(highest: float, max_lines: int = 6) -> float:
    """A power-of-two size step (256 MiB, 512 MiB, 1 GiB...) giving at most max_lines grid lines."""
    step = 1024.0 * 1024
    while highest / step > max_lines:
        step *= 2
    return step


def _tick_label(t: float) -> str:
    if t == 0:
        return "0"
    if t < 60:
        return f"{t:g}s"
    m, s = divmod(int(t), 60)
    if m < 60:
        return f"{m}m" if s == 0 else f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h" if m == 0 else f"{h}h{m:02d}m"


def _axis(t0: float, span: float, y: float, height: float) -> list[str]:
    """Vertical grid lines and time labels across a plot."""
    out = []
    step = _nice_step(span)
    k = 0
    while k * step <= span + 1e-9:
        x = LABEL_W + PLOT_W * (k * step) / span
        out.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + height:.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{y - 6:.1f}" class="tick" text-anchor="middle">{_tick_label(k * step)}</text>'
        )
        k += 1
    return out


def _attempt_tip(crate: str, n: int, of: int, t: Attempt) -> str:
    waited = (t.admitted if t.admitted is not None else t.ended) - t.queued
    tip = f"{crate}, attempt {n} of {of}: waited {fmt_age(waited)}"
    if t.admitted is not None:
        tip += f", ran {fmt_age(t.ended - t.admitted)}"
        if t.paused:
            tip += f" (paused {fmt_age(t.paused)} of it)"
    return tip + (f"; then {THEN[t.then]}" if t.then in THEN else "")


def _stripes(start: float, stop: float, step: float = 4.0) -> list[float]:
    out = []
    while start < stop:
        out.append(start)
        start += step
    return out


def _job_bars(
    e: dict[str, Any], y: float, x: Callable[[float], float], crate: str, outcome: str
) -> list[str]:
    """A job's attempts: each its wait, then its run (striped if it was paused)."""
    parts = []
    tries = attempts(e)
    last = len(tries) - 1
    for i, t in enumerate(tries):
        title = f"<title>{esc(_attempt_tip(crate, i + 1, len(tries), t))}</title>"
        wait_end = t.admitted if t.admitted is not None else t.ended
        if wait_end > t.queued:
            parts.append(
                f'<rect x="{x(t.queued):.1f}" y="{y + 4}" width="{max(1.0, x(wait_end) - x(t.queued)):.1f}"'
                f' height="{ROW_H - 8}" class="wait">{title if len(tries) > 1 else ""}</rect>'
            )
        if t.admitted is None:
            continue
        if i == last:
            colour = COLOURS.get(outcome, UNKNOWN_COLOUR)
        else:
            colour = COLOURS["oom"] if t.then == "rerun alone" else STOPPED_COLOUR
        w = max(2.0, x(t.ended) - x(t.admitted))
        box = f'x="{x(t.admitted):.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" rx="2"'
        parts.append(
            f'<rect {box} fill="{colour}" class="run">{title if len(tries) > 1 else ""}</rect>'
        )
        if t.paused > 0:
            # Stripes drawn, not a pattern (the page references nothing, not even
            # url(#id)); in the bar's lower part, under its label.
            x0, x1 = x(t.admitted), x(t.admitted) + w
            d = "".join(
                f"M{sx:.1f},{y + ROW_H / 2 + 5:.1f}V{y + ROW_H - 3}"
                for sx in _stripes(x0 + 2, x1 - 1)
            )
            parts.append(f'<path d="{d}" class="paused"/>')
        dur = fmt_age(max(0.0, t.ended - t.admitted))
        if i == last and w > 8 * len(dur) + 8:
            parts.append(
                f'<text x="{x(t.admitted) + 5:.1f}" y="{y + ROW_H / 2 + 4:.1f}" class="inbar">{esc(dur)}</text>'
            )
    return parts


def timeline_svg(events: list[dict[str, Any]], t0: float, span: float) -> str:
    height = AXIS_H + ROW_H * len(events) + 8
    width = LABEL_W + PLOT_W + 20

    def x(t: float) -> float:
        return LABEL_W + PLOT_W * max(0.0, t - t0) / span

    parts = [
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' role="img" aria-label="guarded jobs over time">',
        *_axis(t0, span, AXIS_H, ROW_H * len(events)),
    ]
    for i, e in enumerate(events):
        y = AXIS_H + i * ROW_H
        crate = ev.text(e, "crate", "?")
        outcome = ev.text(e, "outcome", "unknown")
        waited, ran, paused = times(e)
        tries = len(attempts(e))
        tip = (
            f"{crate}: waited {fmt_age(waited)}, ran {fmt_age(ran)}"
            + (f" (paused {fmt_age(paused)} of it)" if paused else "")
            + (f" in {tries} attempts" if tries > 1 else "")
            + f", peak {fmt_bytes(int(ev.num(e, 'peak') or 0))},"
            f" estimate {fmt_bytes(int(ev.num(e, 'estimate') or 0))}, {outcome}"
            f" (exit {exit_text(e.get('exit'))})"
        )
        parts.append(f'<g class="job" data-outcome="{esc(outcome)}"><title>{esc(tip)}</title>')
        if i % 2:
            parts.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW_H}" class="stripe"/>')
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" class="label" text-anchor="end">{esc(crate)}</text>'
        )
        parts += _job_bars(e, y, x, crate, outcome)
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


BUDGET_SCALE = 3.0  # a budget above this many times the peak is named, not drawn


def _budget_marks(
    shown: list[tuple[float, float]],
    above: list[float],
    end: float,
    x: Callable[[float], float],
    y: Callable[[float], float],
    y0: float,
) -> list[str]:
    """The budget each admission saw, as steps; or its name, when it is off the scale."""
    parts = []
    if above:
        parts.append(
            # Under the plot, right-aligned: above it the time axis is labelled.
            f'<text x="{LABEL_W + PLOT_W}" y="{y0 + MEM_H + 18}" class="tick" text-anchor="end">'
            f"budget seen at admission: {esc(fmt_bytes(int(min(above))))} and up, above this"
            " scale</text>"
        )
    if shown:
        d = []
        for i, (t, b) in enumerate(shown):
            nxt = shown[i + 1][0] if i + 1 < len(shown) else end
            d.append(f"M{x(t):.1f},{y(b):.1f}H{x(nxt):.1f}")
        parts.append(
            f'<path d="{"".join(d)}" class="budget"><title>budget seen at each admission</title></path>'
        )
    return parts


def memory_svg(events: list[dict[str, Any]], t0: float, span: float) -> str:
    mem = memory_series(events)
    budgets = budget_series(events)
    peak = max([v for _, v in mem] + [1.0])
    # The axis fits the jobs' memory; the budget line is drawn when it is on the
    # same scale, else named under the chart (a 24 GiB host would flatten 400 MiB
    # jobs to nothing).
    shown = [(t, b) for t, b in budgets if b <= BUDGET_SCALE * peak]
    above = [b for _, b in budgets if b > BUDGET_SCALE * peak]
    highest = max([peak] + [b for _, b in shown])
    step = _nice_size_step(highest)
    top = max(highest * 1.05, step)
    width = LABEL_W + PLOT_W + 20
    y0 = AXIS_H
    height = y0 + MEM_H + (26 if above else 10)

    def x(t: float) -> float:
        return LABEL_W + PLOT_W * min(1.0, max(0.0, (t - t0) / span))

    def y(v: float) -> float:
        return y0 + MEM_H * (1 - v / top)

    parts = [
        f'<svg class="memory" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' role="img" aria-label="memory over time">',
        *_axis(t0, span, y0, MEM_H),
    ]
    v = 0.0
    while v <= top:
        parts.append(
            f'<line x1="{LABEL_W}" y1="{y(v):.1f}" x2="{LABEL_W + PLOT_W}" y2="{y(v):.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{fmt_bytes(int(v))}</text>'
        )
        v += step
    if mem:
        d = [f"M{x(mem[0][0]):.1f},{y(0):.1f}"]
        for i, (t, v) in enumerate(mem):
            if i:
                d.append(f"H{x(t):.1f}")
            d.append(f"V{y(v):.1f}")
        d.append(f"V{y(0):.1f}Z")
        parts.append(
            f'<path d="{"".join(d)}" class="area"><title>memory held by guarded jobs (sampled)</title></path>'
        )
    parts += _budget_marks(shown, above, t0 + span, x, y, y0)
    parts.append(
        f'<line x1="{LABEL_W}" y1="{y(0):.1f}" x2="{LABEL_W + PLOT_W}" y2="{y(0):.1f}" class="baseline"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


CSS = (
    """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:24px 32px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{color:#52606d;font-size:12px}
.legend span{display:inline-block;margin-right:16px;font-size:12px;color:#3e4c59}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg{display:block;margin:6px 0;font-size:12px}
svg .grid{stroke:#e4e7eb;stroke-width:1}svg .baseline{stroke:#9aa5b1;stroke-width:1}
svg .tick{fill:#7b8794;font-size:11px}svg .label{fill:#1f2933}
svg .stripe{fill:#f7f8fa}svg .wait{fill:"""
    + WAIT_COLOUR
    + """}
svg .inbar{fill:#fff;font-size:11px}svg .paused{stroke:#fff;stroke-opacity:.6;stroke-width:1.5}
svg .area{fill:#3b82c4;fill-opacity:.35;stroke:#3b82c4;stroke-width:1.2}
svg .budget{fill:none;stroke:#d14b4b;stroke-width:2;stroke-dasharray:6 4}
svg g.job:hover .run{opacity:.8}
table{border-collapse:collapse;margin-top:6px}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th{background:#f5f7fa;font-weight:600}td:first-child,th:first-child{text-align:left}
td.outcome-failed,td.outcome-oom{color:#b42318;font-weight:600}
.note{color:#7b8794;font-size:12px}
"""
)


def exit_text(code: object) -> str:
    if isinstance(code, bool) or not isinstance(code, int):
        return "?"
    if code < 0:
        import signal

        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)


def _card(value: str, label: str, title: str = "") -> str:
    t = f' title="{esc(title)}"' if title else ""
    return f'<div class="card"{t}><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def _cards(s: dict[str, Any], span: float) -> list[str]:
    """The summary figures at the top of the page."""
    peak = fmt_bytes(int(s["peak_total"])) if s["peak_total"] else "n/a"
    budget = (
        f"tightest budget {fmt_bytes(int(s['budget_min']))}"
        if s["budget_min"]
        else "no budget recorded"
    )
    avoided = "n/a" if s["held_back"] is None else str(s["held_back"])
    return [
        _card(str(s["jobs"]), "guarded jobs"),
        _card(fmt_age(span), "from first queued to last finished"),
        _card(fmt_age(s["total_wait"]), "total wait"),
        _card(str(s["serialised"]), f"jobs serialised (waited > {ev.SERIALISED_WAIT:g}s)"),
        _card(
            avoided,
            "OOM kills likely avoided",
            "jobs held back whose measured peak would not have fit beside the jobs then running",
        ),
        _card(str(s["oom_reruns"]), "OOM reruns performed"),
        _card(str(s["requeues"]), "requeues (stopped to free memory)"),
        _card(
            peak,
            f"peak memory of guarded jobs; {budget}",
            "the larger of the running jobs' sampled sum and the largest single job's"
            " peak (its high-water mark, which catches spikes between samples)",
        ),
    ]


def _legend() -> str:
    legend = "".join(
        f'<span><i style="background:{c}"></i>{esc(o)}</span>' for o, c in COLOURS.items()
    )
    stopped = (
        f'<span><i style="background:{STOPPED_COLOUR}"></i>stopped to free memory, queued again</span>'
        '<span><i style="background:repeating-linear-gradient(90deg,#3b82c4 0 2px,#b9d3ea 2px 4px)">'
        "</i>striped: paused for part of that run</span>"
    )
    return f'<span><i style="background:{WAIT_COLOUR}"></i>waiting</span>' + legend + stopped


def _row(e: dict[str, Any]) -> str:
    """One job's line of the table."""
    waited, ran, paused = times(e)
    outcome = ev.text(e, "outcome", "unknown")
    est = ev.num(e, "estimate")
    basis = ev.text(e, "estimate_basis")
    return (
        "<tr>"
        f"<td>{esc(ev.text(e, 'crate', '?'))}</td>"
        f"<td>{esc(ev.kind_of(e))}</td>"
        f"<td>{esc(fmt_age(waited))}</td>"
        f"<td>{esc(fmt_age(ran))}</td>"
        f"<td>{esc(fmt_age(paused) if paused else '-')}</td>"
        f"<td>{esc(fmt_bytes(int(ev.num(e, 'peak') or 0)))}</td>"
        f"<td>{esc(fmt_bytes(int(est)) if est is not None else '?')}"
        f"{esc(f' ({basis})' if basis else '')}</td>"
        f"<td>{esc(exit_text(e.get('exit')))}</td>"
        f'<td class="outcome-{esc(outcome)}">{esc(outcome)}</td>'
        f"<td>{esc(int(ev.num(e, 'reruns') or 0))}</td>"
        f"<td>{esc(int(ev.num(e, 'requeues') or 0))}</td>"
        "</tr>"
    )


def render_html(
    events: list[dict[str, Any]], workspace: str | None, now: float | None = None
) -> str:
    """The whole page for some events (at least one)."""
    from ltoguard import __version__

    events = sorted(events, key=ev.start_time)
    t0 = min(ev.start_time(e) for e in events)
    t1 = max([ev.end_time(e) for e in events] + [t for e in events for t, _ in samples(e)])
    span = max(t1 - t0, 1.0)
    sources = sorted({ev.text(e, "mem_source") for e in events} - {""})
    made = fmt_when(time.time() if now is None else now)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ltoguard build report: {esc(os.path.basename(workspace or "") or "build")}</title>
<style>{CSS}</style>
</head>
<body>
<h1>ltoguard build report</h1>
<p class="sub">{esc(workspace or "?")} &middot; {esc(fmt_when(t0))} to {esc(fmt_when(t1))}</p>
<div class="cards">
{"".join(_cards(summary(events), span))}
</div>
<h2>Guarded jobs</h2>
<div class="legend">{_legend()}</div>
{timeline_svg(events, t0, span)}
<h2>Memory</h2>
<div class="legend"><span><i style="background:#9cc1e3"></i>held by guarded jobs (process trees, sampled)</span><span><i style="background:#d14b4b"></i>budget seen at admission (free memory + guarded jobs' use)</span></div>
{memory_svg(events, t0, span)}
<p class="note">Memory source: {esc(", ".join(sources) or "not recorded")}.</p>
<h2>Jobs</h2>
<table>
<thead><tr><th>crate</th><th>kind</th><th title="every attempt's wait for admission">waited</th><th title="the rest of the bar: from each admission to the attempt's end, paused time included">ran</th><th title="of ran: paused to leave room for older jobs">paused</th><th>peak</th><th>estimate</th><th>exit</th><th>outcome</th><th>reruns</th><th>requeues</th></tr></thead>
<tbody>
{chr(10).join(_row(e) for e in events)}
</tbody>
</table>
<p class="note">Generated by ltoguard {esc(__version__)} on {esc(made)}.</p>
</body>
</html>
"""
