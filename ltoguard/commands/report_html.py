"""`ltoguard report`'s page: one self-contained HTML file of a build.

In the spirit of ``cargo build --timings``: a summary, one row per guarded job
(each attempt waiting, then running, coloured by how it ended; report_svg), the
memory the guarded jobs held over time against the budget, and a table. Inline CSS
and SVG only: no scripts, no fonts, no URLs, so the file can be attached to a CI
run and opened anywhere.
SVG ``<title>`` elements give tooltips without JavaScript.
"""

from __future__ import annotations

import os
import time

from ltoguard import events as ev
from ltoguard.commands.common import fmt_age, fmt_bytes, fmt_when
from ltoguard.commands.report_data import samples, summary, times
from ltoguard.commands.report_svg import (
    COLOURS,
    STOPPED_COLOUR,
    WAIT_COLOUR,
    esc,
    exit_text,
    memory_svg,
    timeline_svg,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
svg .peak{fill:none;stroke:#1f4e79;stroke-width:1.5;stroke-dasharray:2 2}
svg .budget{fill:none;stroke:#d14b4b;stroke-width:2;stroke-dasharray:6 4}
svg g.job:hover .run{opacity:.8}
table{border-collapse:collapse;margin-top:6px}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th{background:#f5f7fa;font-weight:600}td:first-child,th:first-child{text-align:left}
td.outcome-failed,td.outcome-oom{color:#b42318;font-weight:600}
.note{color:#7b8794;font-size:12px}
"""
)


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
<div class="legend"><span><i style="background:#9cc1e3"></i>held by guarded jobs (process trees, sampled)</span><span><i style="background:#1f4e79"></i>each job's own peak over its run, not stacked (its high-water mark: spikes between samples)</span><span><i style="background:#d14b4b"></i>budget seen at admission (free memory + guarded jobs' use)</span></div>
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
