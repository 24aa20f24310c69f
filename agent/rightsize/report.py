"""The cost report as Markdown, JSON and Slack Block Kit (HTML with charts lives in `report_html`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from agent.rightsize.changes import PlannedChanges, button_value, change_specs, reason_for
from agent.rightsize.engine import Confidence, Recommendation
from agent.rightsize.posts import ButtonForPost
from agent.rightsize.service import RightsizeRun

CREATE_ACTION_ID = "rightsize_create_change"


def money(x: float) -> str:
    return f"-${-x:,.0f}" if x < 0 else f"${x:,.0f}"


def _day(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def rec_line(r: Recommendation) -> str:
    if r.confidence == Confidence.INSUFFICIENT:
        return f"{r.namespace}/{r.name}: {r.reason}"
    return (f"{r.namespace}/{r.name}: {r.reason}; {money(r.monthly_cost_current)}/mo → "
            f"{money(r.monthly_cost_recommended)}/mo, saves {money(r.monthly_savings)}/mo; SLO risk "
            f"{r.slo_risk.value}; confidence {r.confidence.value}")


def to_markdown(run: RightsizeRun) -> str:
    c = run.cost
    out = [f"# GPU cost and right-sizing — {run.cluster}",
           f"{_day(run.start)} → {_day(run.end)} ({run.window}, {run.step_s / 60:g}-minute steps; "
           f"{run.queries} Prometheus queries in {run.query_seconds:.1f}s)", "",
           "## Spend", "",
           "| | USD |", "|---|---:|",
           f"| node pools | {c.node_cost:,.2f} |", f"| allocated to workloads | {c.workload_cost:,.2f} |",
           f"| … of which idle (allocated, GPUs not busy) | {c.idle_cost:,.2f} |",
           f"| unallocated node capacity | {c.unallocated_cost:,.2f} |",
           f"| reconciliation error (nodes − workloads − unallocated) | {c.reconciliation_error:,.2f} |", "",
           "| model | GPU-hours | cost | idle | $/M tokens | $/M requests |", "|---|---:|---:|---:|---:|---:|"]
    for m in c.by_model:
        out.append(f"| {m.key} | {m.gpu_hours:,.1f} | {m.cost:,.2f} | {m.idle_cost:,.2f} | "
                   f"{per_million(m.cost_per_million_tokens)} | {per_million(m.cost_per_million_requests)} |")
    for title, rows in (("team", c.by_team), ("namespace", c.by_namespace)):
        out += ["", f"| {title} | GPU-hours | cost | idle |", "|---|---:|---:|---:|"]
        out += [f"| {x.key} | {x.gpu_hours:,.1f} | {x.cost:,.2f} | {x.idle_cost:,.2f} |" for x in rows]
    out += ["", "| workload | source | GPU-hours | cost | idle | GPU busy | $/M tokens | $/M requests |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for wc in c.workloads:
        busy = f"{wc.gpu_busy_mean:.0%}" if wc.gpu_busy_mean is not None else "—"
        src = wc.source + (f" ({', '.join(sorted(wc.sources))})" if wc.sources else "")
        out.append(f"| {wc.namespace}/{wc.name} | {src} | {wc.gpu_hours:,.1f} | {wc.cost:,.2f} | "
                   f"{wc.idle_cost:,.2f} | {busy} | {per_million(wc.cost_per_million_tokens)} | "
                   f"{per_million(wc.cost_per_million_requests)} |")
    out += ["", f"## Recommendations (total savings {money(run.total_savings)}/month)", "",
            "| workload | current | recommended | $/mo now | $/mo after | saves | SLO risk | confidence |",
            "|---|---|---|---:|---:|---:|---|---|"]
    for r in run.recommendations:
        if r.confidence == Confidence.INSUFFICIENT or r.current is None:
            out.append(f"| {r.namespace}/{r.name} | — | — | — | — | — | — | {r.confidence.value} |")
            continue
        rec = r.recommended.describe() if r.recommended else "—"
        out.append(f"| {r.namespace}/{r.name} | {r.current.describe()} | {rec} | {r.monthly_cost_current:,.0f} | "
                   f"{r.monthly_cost_recommended:,.0f} | {r.monthly_savings:,.0f} | {r.slo_risk.value} | "
                   f"{r.confidence.value} |")
    out.append("")
    for r in run.recommendations:
        out.append(f"- **{r.namespace}/{r.name}** ({r.id}): {r.reason}")
        if r.slo_risk_reason:
            out.append(f"  - SLO risk {r.slo_risk.value}: {r.slo_risk_reason}")
        if r.current is not None and r.recommended is not None and r.recommended != r.current:
            out.append(f"  - cost now: {r.current.cost_arithmetic()}; after: {r.recommended.cost_arithmetic()}")
            if (cap := r.evidence.get("capacity_per_replica_after_rps")) is not None:
                fit = f"; memory: {r.evidence['memory_fit']}" if "memory_fit" in r.evidence else ""
                out.append(f"  - capacity after: {cap} req/s per replica (observed "
                           f"{r.evidence.get('capacity_per_replica_rps')} × relative throughput × compute share × "
                           f"headroom){fit}")
            if trends := r.evidence.get("capacity_trends"):
                out.append(f"  - saturation trends: {trends}")
        for w in r.scale_windows:
            out.append(f"  - {w.days} {w.start_hour_utc:02d}:00–{w.end_hour_utc:02d}:00 UTC: {w.replicas} replica(s), "
                       f"saves {money(w.monthly_savings)}/mo")
        for res in (r.cpu, r.memory):
            if res is not None:
                cur = _amount(res.resource, res.current) if res.current is not None else "unset"
                out.append(f"  - {res.resource} request {cur} → {_amount(res.resource, res.target)} (range "
                           f"{_amount(res.resource, res.lower)}–{_amount(res.resource, res.upper)})"
                           f"{' — ' + res.note if res.note else ''}")
    for n in dict.fromkeys(run.notes + c.notes):  # the cost report repeats the history's notes
        out.append(f"> note: {n}")
    return "\n".join(out) + "\n"


def per_million(x: float | None) -> str:
    return f"{x:,.3f}" if x else "—"


def _amount(resource: str, v: float) -> str:
    return f"{v:.2f} cores" if resource == "cpu" else f"{v / 2**30:.1f} GiB"


def to_json(run: RightsizeRun) -> str:
    doc = run.model_dump(mode="json")
    doc["total_savings"] = round(run.total_savings, 2)
    return json.dumps(doc, indent=2)


def top_savings(run: RightsizeRun, top: int,
                max_capacity_drop: float | None = None) -> list[tuple[Recommendation, PlannedChanges]]:
    """The recommendations the Slack report lists (the first `top` with savings), with the changes each makes."""
    out: list[tuple[Recommendation, PlannedChanges]] = []
    for r in run.recommendations:
        if len(out) >= top:
            break
        if r.monthly_savings > 0 and r.confidence != Confidence.INSUFFICIENT:
            out.append((r, change_specs(r, run.cluster, max_capacity_drop=max_capacity_drop)))
    return out


def slack_buttons(run: RightsizeRun, *, top: int = 5, max_capacity_drop: float | None = None) -> list[ButtonForPost]:
    """What each "Create change request" button of `slack_blocks(run, top=top)` may propose."""
    return [ButtonForPost(r.id, planned.specs[0], reason_for(r, planned.specs[0]))
            for r, planned in top_savings(run, top, max_capacity_drop) if planned.specs]


def slack_blocks(run: RightsizeRun, *, top: int = 5, report_url: str | None = None,
                 max_capacity_drop: float | None = None) -> list[dict[str, Any]]:
    """Block Kit: the spend summary and the top savings, each with a "Create change request" button
    (for a scale-down, the first step `max_capacity_drop` allows)."""
    c = run.cost
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"GPU cost report — {run.cluster}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*{run.window}* to {_day(run.end)}: node pools *{money(c.node_cost)}*, allocated "
            f"{money(c.workload_cost)} (idle {money(c.idle_cost)}), unallocated {money(c.unallocated_cost)}.\n"
            f"Right-sizing could save *{money(run.total_savings)}/month*.")}},
    ]
    shown = 0
    for r, planned in top_savings(run, top, max_capacity_drop):
        shown += 1
        block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*{r.namespace}/{r.name}* — saves *{money(r.monthly_savings)}/mo*\n{r.reason}\n"
            f"SLO risk {r.slo_risk.value}, confidence {r.confidence.value}")[:3000]}}
        if planned.specs:
            block["accessory"] = {"type": "button", "action_id": CREATE_ACTION_ID,
                                  "text": {"type": "plain_text", "text": "Create change request"},
                                  "value": button_value(r, planned.specs[0])}
        blocks.append(block)
        if planned.note:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": planned.note[:3000]}]})
    if not shown:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "No savings found this time."}})
    if report_url:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{report_url}|Full report>"}]})
    return blocks
