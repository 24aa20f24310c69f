"""The post-incident report: what happened, in order, what the agent saw and did, and how long each step took.

Built from the records alone (the incident and its alerts, the triage report, the change requests with
their approvals and executions, the audit events), so it can be produced at any time after the fact and
always says the same. Pure: gathering the records is the caller's job (`App.incident_report`); this module
orders them, computes the durations and renders Markdown, HTML and JSON. It must not call anything.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.change.ledger import Execution
from agent.change.models import Approval, ChangeRequest
from agent.config import TracingConfig
from agent.models import EvidenceStatus, Incident, IncidentStatus, TriageReport
from agent.telemetry import trace_url

Kind = Literal["alert", "incident", "triage", "proposal", "change", "approval", "execution", "verification",
               "resolution"]


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: dt.datetime
    kind: Kind
    text: str


class EvidenceLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    tool: str
    status: str
    summary: str
    query: str | None = None


class PostIncidentReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    incident_id: str
    title: str
    severity: str
    status: str
    first_alert_at: dt.datetime
    resolved_at: dt.datetime | None
    timeline: list[TimelineEntry]
    top_hypothesis: str | None
    evidence: list[EvidenceLine]
    not_checked: list[str] = Field(description="Evidence the agent could not gather, with why.")
    changes: list[dict[str, Any]]
    time_to_detect_s: float | None = Field(description="First alert → incident opened by the agent.")
    time_to_triage_s: float | None = Field(description="Incident opened → first triage report.")
    time_to_mitigate_s: float | None = Field(description="Incident opened → first change applied (or resolved).")
    trace_url: str | None
    trace_id: str | None
    audit_records: list[dict[str, Any]] = Field(description="seq, kind, action, decision and hash of each record.")


def build(incident: Incident, report: TriageReport | None, changes: list[ChangeRequest],
          approvals: dict[str, list[Approval]], executions: dict[str, Execution | None],
          audit: list[dict[str, Any]], tracing: TracingConfig) -> PostIncidentReport:
    """Order the incident's records into a timeline and compute time to detect / triage / mitigate."""
    first_alert = min((a.starts_at for a in incident.alerts), default=incident.created_at)
    tl: list[TimelineEntry] = []
    for a in sorted(incident.alerts, key=lambda a: a.starts_at):
        tl.append(TimelineEntry(at=a.starts_at, kind="alert",
                                text=f"{a.labels.get('alertname', 'alert')} fired ({_labels(a.labels)})"))
    tl.append(TimelineEntry(at=incident.created_at, kind="incident",
                            text=f"incident {incident.id} opened ({incident.severity.value})"))
    if report is not None:
        top = report.top
        tl.append(TimelineEntry(at=report.finished, kind="triage", text=(
            f"triage by the {report.reasoner} reasoner: {report.status}, {len(report.evidence)} evidence queries"
            + (f"; top hypothesis: {top.title} ({top.confidence:.0%})" if top else ""))))
        for p in report.proposals:
            tl.append(TimelineEntry(at=report.finished, kind="proposal", text=f"proposed {p.kind.value}: {p.reason}"))
    mitigated: dt.datetime | None = None
    for ch in sorted(changes, key=lambda c: c.created_at):
        tl.append(TimelineEntry(at=ch.created_at, kind="change", text=(
            f"change request {ch.id} ({ch.spec.action.value} {_target(ch)}): policy rule {ch.policy_rule or '-'}, "
            f"{ch.approvals_required} approval(s) needed")))
        for ap in approvals.get(ch.id, []):
            tl.append(TimelineEntry(at=ap.at, kind="approval",
                                    text=f"{ap.decision}d by {ap.approver} ({ap.role}) via {ap.via}"
                                         + (f" as {ap.identity}" if ap.identity not in ("", ap.approver) else "")))
        ex = executions.get(ch.id)
        if ex is not None:
            claimed = _parse(ex.claimed_at)
            detail = f" ({ex.detail[:200]})" if ex.detail and ex.state != "applied" else ""
            tl.append(TimelineEntry(at=claimed, kind="execution",
                                    text=f"execution of {ch.id} by {ex.owner}: {ex.state}{detail}"))
            finished = _parse(ex.finished_at) if ex.finished_at else None
            if finished is not None and ex.state in ("applied", "done", "verified") and mitigated is None:
                mitigated = finished
        if ch.result.get("verification"):
            # when: the executor's verification audit record; else the end of the execution it verified
            rec = next((r for r in audit if r.get("kind") == "verification" and r.get("action") == f"verify {ch.id}"),
                       None)
            at = _parse(str(rec["at"])) if rec else (_parse(ex.finished_at) if ex is not None and ex.finished_at
                                                     else ch.created_at)
            tl.append(TimelineEntry(at=at, kind="verification",
                                    text=f"verification of {ch.id}: {ch.result['verification']} ({ch.status.value})"))
    resolved_at: dt.datetime | None = None
    if incident.status == IncidentStatus.RESOLVED:
        resolved_at = max((a.ends_at for a in incident.alerts if a.ends_at), default=incident.updated_at)
        tl.append(TimelineEntry(at=resolved_at, kind="resolution", text="every alert resolved"))
    mitigated = mitigated or resolved_at
    tl.sort(key=lambda e: e.at)
    evidence = [EvidenceLine(title=e.title, tool=e.tool, status=e.status.value, summary=e.summary,
                             query=str(e.params.get("query")) if e.params.get("query") else None)
                for e in (report.evidence if report else [])]
    not_checked = [f"{e.title}: {e.summary}" for e in (report.evidence if report else [])
                   if e.status in (EvidenceStatus.ERROR, EvidenceStatus.SKIPPED)]
    trace_id = report.trace_id if report else None
    return PostIncidentReport(
        incident_id=incident.id, title=incident.title, severity=incident.severity.value, status=incident.status.value,
        first_alert_at=first_alert, resolved_at=resolved_at, timeline=tl,
        top_hypothesis=(f"{report.top.title} ({report.top.confidence:.0%})" if report and report.top else None),
        evidence=evidence, not_checked=not_checked,
        changes=[{"id": c.id, "action": c.spec.action.value, "target": _target(c), "status": c.status.value,
                  "verification": c.result.get("verification")} for c in changes],
        time_to_detect_s=_secs(first_alert, incident.created_at),
        time_to_triage_s=_secs(incident.created_at, report.finished) if report else None,
        time_to_mitigate_s=_secs(incident.created_at, mitigated) if mitigated else None,
        trace_url=trace_url(tracing, trace_id=trace_id) or trace_url(tracing, incident_id=incident.id),
        trace_id=trace_id,
        audit_records=[{k: r.get(k) for k in ("seq", "at", "kind", "actor", "action", "decision", "hash")}
                       for r in audit],
    )


def _parse(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _secs(a: dt.datetime, b: dt.datetime) -> float:
    return round(max(0.0, (b - a).total_seconds()), 1)


def _labels(labels: dict[str, str]) -> str:
    keep = ("namespace", "model_name", "deployment", "Hostname")
    return ", ".join(f"{k}={labels[k]}" for k in keep if k in labels) or "no labels"


def _target(ch: ChangeRequest) -> str:
    t = ch.spec.target
    return f"{t.kind}/{t.namespace + '/' if t.namespace else ''}{t.name}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def _ts(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- rendering ----------------------------------------------------------------------------------------

def to_json(r: PostIncidentReport) -> str:
    return json.dumps(r.model_dump(mode="json"), indent=2)


def to_markdown(r: PostIncidentReport) -> str:
    out = [f"# Post-incident report: {r.title}", "",
           f"**Incident** `{r.incident_id}` · **severity** {r.severity} · **status** {r.status} · "
           f"first alert {_ts(r.first_alert_at)}" + (f" · resolved {_ts(r.resolved_at)}" if r.resolved_at else ""), "",
           f"**Time to detect** {duration(r.time_to_detect_s)} · **to triage** {duration(r.time_to_triage_s)} · "
           f"**to mitigate** {duration(r.time_to_mitigate_s)}", ""]
    if r.top_hypothesis:
        out += [f"**Top hypothesis:** {r.top_hypothesis}", ""]
    out += ["## Timeline", ""] + [f"- `{_ts(e.at)}` **{e.kind}** — {e.text}" for e in r.timeline] + [""]
    out += ["## Evidence", ""] + [f"- **{e.title}** ({e.tool}, {e.status}): {e.summary}"
                                  + (f"  \n  `{e.query}`" if e.query else "") for e in r.evidence] + [""]
    out += ["## What the agent could not check", ""] + ([f"- {x}" for x in r.not_checked] or ["- nothing: every "
                                                                                                "evidence query ran"])
    out += ["", "## Changes", ""] + ([f"- `{c['id']}` {c['action']} {c['target']}: {c['status']}"
                                      + (f", verification {c['verification']}" if c["verification"] else "")
                                      for c in r.changes] or ["- none"])
    out += ["", "## Links", "", f"- Trace: {r.trace_url or 'tracing is off (tracing.enabled)'}",
            f"- Audit records: {len(r.audit_records)} (`opsagent audit show --incident {r.incident_id}`); seq "
            + ", ".join(str(a["seq"]) for a in r.audit_records[:50]) + ("…" if len(r.audit_records) > 50 else "")]
    return "\n".join(out) + "\n"


def slack_blocks(r: PostIncidentReport) -> dict[str, Any]:
    """The report as one thread message: the durations, the timeline (the first 25 steps), the links."""
    lines = [f"`{e.at.astimezone(dt.UTC):%H:%M:%S}` *{e.kind}* — {_esc(e.text)}" for e in r.timeline[:25]]
    more = (f"\n…and {len(r.timeline) - 25} more (`opsagent incident report {r.incident_id}`)"
            if len(r.timeline) > 25 else "")
    links = [f"<{r.trace_url}|trace>"] if r.trace_url else []
    links.append(f"{len(r.audit_records)} audit records (`opsagent audit show --incident {r.incident_id}`)")
    head = (f"*Post-incident report* · detect {duration(r.time_to_detect_s)} · triage {duration(r.time_to_triage_s)}"
            f" · mitigate {duration(r.time_to_mitigate_s)}")
    unchecked = ("\n*Could not check:* " + "; ".join(_esc(x) for x in r.not_checked[:5])) if r.not_checked else ""
    return {"text": f"Post-incident report for {r.incident_id}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": head}},
                       {"type": "section", "text": {"type": "mrkdwn", "text": ("\n".join(lines) + more)[:2900]}},
                       {"type": "context", "elements": [{"type": "mrkdwn",
                                                         "text": (" · ".join(links) + unchecked)[:2900]}]}]}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


COLOURS = {"alert": "#d62728", "incident": "#ff7f0e", "triage": "#1f77b4", "proposal": "#9467bd",
           "change": "#8c564b", "approval": "#e377c2", "execution": "#7f7f7f", "verification": "#bcbd22",
           "resolution": "#2ca02c"}


def to_html(r: PostIncidentReport) -> str:
    """A self-contained page (no script, no external resource): the timeline as coloured rows."""
    e = html.escape
    rows = "".join(f'<tr class="step {x.kind}"><td>{e(_ts(x.at))}</td><td><span class="kind" style="background:'
                   f'{COLOURS[x.kind]}">{e(x.kind)}</span></td><td>{e(x.text)}</td></tr>' for x in r.timeline)
    ev = "".join(f"<tr><td>{e(x.title)}</td><td>{e(x.tool)}</td><td>{e(x.status)}</td><td>{e(x.summary)}</td>"
                 f"<td><code>{e(x.query or '')}</code></td></tr>" for x in r.evidence)
    nc = "".join(f"<li>{e(x)}</li>" for x in r.not_checked) or "<li>nothing: every evidence query ran</li>"
    ch = "".join(f"<li><code>{e(c['id'])}</code> {e(c['action'])} {e(c['target'])}: {e(c['status'])}</li>"
                 for c in r.changes) or "<li>none</li>"
    trace = (f'<a id="trace" href="{e(r.trace_url)}">trace</a>' if r.trace_url
             else '<span id="trace">tracing is off</span>')
    audit = ", ".join(str(a["seq"]) for a in r.audit_records)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Post-incident report {e(r.incident_id)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
.kind {{ color: #fff; padding: 4px 10px; border-radius: 4px; display: inline-block; min-width: 7em; }}
.figures span {{ display: inline-block; margin-right: 2em; font-size: 1.2em; }}
</style></head><body>
<h1>Post-incident report: {e(r.title)}</h1>
<p>Incident <code>{e(r.incident_id)}</code> · severity {e(r.severity)} · status {e(r.status)} ·
first alert {e(_ts(r.first_alert_at))}{(' · resolved ' + e(_ts(r.resolved_at))) if r.resolved_at else ''}</p>
<p class="figures"><span id="ttd">Time to detect: {e(duration(r.time_to_detect_s))}</span>
<span id="ttt">Time to triage: {e(duration(r.time_to_triage_s))}</span>
<span id="ttm">Time to mitigate: {e(duration(r.time_to_mitigate_s))}</span></p>
<p>Top hypothesis: {e(r.top_hypothesis or 'none')}</p>
<h2>Timeline</h2><table id="timeline"><tr><th>When</th><th>What</th><th></th></tr>{rows}</table>
<h2>Evidence</h2><table id="evidence"><tr><th>Evidence</th><th>Tool</th><th>Status</th><th>Found</th><th>Query</th></tr>
{ev}</table>
<h2>What the agent could not check</h2><ul id="not-checked">{nc}</ul>
<h2>Changes</h2><ul id="changes">{ch}</ul>
<h2>Links</h2><p>{trace} · audit records (seq): {e(audit) or 'none'}</p>
</body></html>
"""
