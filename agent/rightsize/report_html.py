"""The HTML cost report: one self-contained file with matplotlib charts embedded as PNG data URIs.

Readable offline (no scripts, no fonts or images fetched), so it can be mailed, archived or
attached. Charts: spend per day by model, GPUs allocated vs busy, and current vs recommended
monthly cost per workload.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from agent.rightsize.engine import Confidence
from agent.rightsize.report import money, per_million
from agent.rightsize.service import RightsizeRun


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def spend_chart(run: RightsizeRun) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    days = [dt.datetime.fromtimestamp(t, dt.UTC) for t in run.cost.days]
    models = sorted(run.cost.daily_by_model, key=lambda m: -sum(run.cost.daily_by_model[m]))
    if days and models:
        ax.stackplot(days, *  # type: ignore[arg-type]
                     [run.cost.daily_by_model[m] for m in models], labels=models, alpha=0.85)
        ax.legend(loc="upper left", fontsize=7, ncols=2)
    ax.set_title("GPU spend per day by model (USD)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    return _png(fig)


def utilization_chart(run: RightsizeRun) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    pts = run.cost.utilization
    if pts:
        t = [dt.datetime.fromtimestamp(p[0], dt.UTC) for p in pts]
        ax.fill_between(t, [p[1] for p in pts], step="pre", alpha=0.3,  # type: ignore[arg-type]
                        label="GPUs allocated")
        ax.plot(t, [p[2] for p in pts],  # type: ignore[arg-type]
                lw=1, color="tab:red", label="GPUs busy (engine active)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("GPU utilization vs allocation")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    return _png(fig)


def recommendation_chart(run: RightsizeRun) -> str:
    recs = [r for r in run.recommendations if r.current is not None and r.confidence != Confidence.INSUFFICIENT]
    recs = recs[:20]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.45 * len(recs) + 1)))
    if recs:
        names = [f"{r.namespace}/{r.name}" for r in recs]
        y = list(range(len(recs)))
        ax.barh([i + 0.2 for i in y], [r.monthly_cost_current for r in recs], height=0.4, label="current")
        ax.barh([i - 0.2 for i in y], [r.monthly_cost_current - r.monthly_savings for r in recs], height=0.4,
                label="recommended (incl. scale-down windows)")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    ax.set_title("Monthly cost per workload: current vs recommended (USD)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
td.n{text-align:right}img{max-width:100%;display:block;margin:1em 0}.note{color:#666;font-size:12px}"""


def to_html(run: RightsizeRun) -> str:
    c = run.cost
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.key)}</td><td class=n>{r.gpu_hours:,.1f}</td><td class=n>{r.cost:,.2f}</td>"
        f"<td class=n>{r.idle_cost:,.2f}</td><td class=n>{per_million(r.cost_per_million_tokens)}</td></tr>"
        for r in c.by_model)
    workloads = "".join(
        f"<tr><td>{e(w.namespace)}/{e(w.name)}</td><td>{e(w.source)}"
        f"{e(' (' + ', '.join(sorted(w.sources)) + ')') if w.sources else ''}</td>"
        f"<td class=n>{w.gpu_hours:,.1f}</td><td class=n>{w.cost:,.2f}</td><td class=n>{w.idle_cost:,.2f}</td>"
        f"<td class=n>{per_million(w.cost_per_million_tokens)}</td>"
        f"<td class=n>{per_million(w.cost_per_million_requests)}</td></tr>"
        for w in c.workloads)
    recs = []
    for r in run.recommendations:
        cur = e(r.current.describe()) if r.current else "—"
        new = e(r.recommended.describe()) if r.recommended else "—"
        recs.append(f"<tr><td>{e(r.namespace)}/{e(r.name)}</td><td>{cur}</td><td>{new}</td>"
                    f"<td class=n>{money(r.monthly_savings)}</td><td>{e(r.slo_risk.value)}</td>"
                    f"<td>{e(r.confidence.value)}</td><td>{e(r.reason)}</td></tr>")
    notes = "".join(f"<p class=note>{e(n)}</p>" for n in run.notes + c.notes)
    start, end = run.start.strftime("%Y-%m-%d %H:%M"), run.end.strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GPU cost report — {e(run.cluster)}</title>
<style>{CSS}</style></head><body>
<h1>GPU cost and right-sizing — {e(run.cluster)}</h1>
<p>{start} → {end} UTC ({e(run.window)}); {run.queries} Prometheus queries.</p>
<table><tr><th>node pools</th><th>allocated</th><th>idle (allocated, not busy)</th><th>unallocated</th>
<th>savings found</th></tr><tr><td class=n>{money(c.node_cost)}</td><td class=n>{money(c.workload_cost)}</td>
<td class=n>{money(c.idle_cost)}</td><td class=n>{money(c.unallocated_cost)}</td>
<td class=n>{money(run.total_savings)}/mo</td></tr></table>
<h2>Spend</h2><img id="chart-spend" alt="GPU spend per day by model" src="{spend_chart(run)}">
<h2>Utilization</h2><img id="chart-utilization" alt="GPU utilization vs allocation" src="{utilization_chart(run)}">
<table><tr><th>model</th><th>GPU-hours</th><th>cost</th><th>idle</th><th>$/M tokens</th></tr>{rows}</table>
<table><tr><th>workload</th><th>data from</th><th>GPU-hours</th><th>cost</th><th>idle</th><th>$/M tokens</th>
<th>$/M requests</th></tr>{workloads}</table>
<h2>Recommendations</h2>
<img id="chart-recommendations" alt="current vs recommended monthly cost" src="{recommendation_chart(run)}">
<table><tr><th>workload</th><th>current</th><th>recommended</th><th>saves /mo</th><th>SLO risk</th>
<th>confidence</th><th>why</th></tr>{''.join(recs)}</table>
{notes}
</body></html>
"""
