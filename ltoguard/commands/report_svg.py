"""`ltoguard report`'s charts: the jobs' timeline (each attempt's wait and run) and
the memory the guarded jobs held against the budget, as inline SVG.

No scripts, no URLs, not even ``url(#id)``: the page must open anywhere. SVG
``<title>`` elements give the tooltips.
"""

from __future__ import annotations

import html

from ltoguard import events as ev
from ltoguard.commands.common import fmt_age, fmt_bytes
from ltoguard.commands.report_data import (
    Attempt,
    attempts,
    budget_series,
    memory_series,
    peak_marks,
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
    peaks = peak_marks(events)
    peak = max([v for _, v in mem] + [p for _, _, p, _ in peaks] + [1.0])
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
    for a, b, p, crate in peaks:
        parts.append(
            f'<path d="M{x(a):.1f},{y(p):.1f}H{x(b):.1f}" class="peak"><title>{esc(crate)}: peak'
            f" {esc(fmt_bytes(int(p)))} (its high-water mark: it catches what samples miss)</title></path>"
        )
    parts += _budget_marks(shown, above, t0 + span, x, y, y0)
    parts.append(
        f'<line x1="{LABEL_W}" y1="{y(0):.1f}" x2="{LABEL_W + PLOT_W}" y2="{y(0):.1f}" class="baseline"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


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
