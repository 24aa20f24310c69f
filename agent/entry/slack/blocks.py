"""Block Kit rendering: incidents, triage details, change requests, command replies. Pure functions.

Everything here turns typed records into Slack message payloads (`{"text", "blocks"}`) and does no
I/O, so what a user sees is unit tested without Slack. Text that came from outside (alert titles,
labels, evidence summaries) is escaped: `<!channel>` or a link in an alert annotation renders as
text, never as a mention or a link the agent vouches for.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import Any

from agent.change.models import Approval, ChangeRequest, ChangeStatus
from agent.models import Incident, TriageReport

Message = dict[str, Any]

ACTION_APPROVE = "change_approve"
ACTION_REJECT = "change_reject"
# On a deployment's progress messages: each click proposes a change request (never acts by itself).
ACTION_PROMOTE = "rollout_promote"
ACTION_ABORT = "rollout_abort"
MAX_DIFF_CHARS = 2500  # a section's text is capped at 3000 characters by Slack
MAX_SECTION_CHARS = 2900


class Stage(enum.StrEnum):
    """Where an incident stands, as its top message shows it."""

    TRIAGING = "triaging"
    TRIAGED = "triaged"  # triage done, nothing to change (or only "page a human")
    CHANGE_PROPOSED = "change proposed"
    APPROVED = "approved"
    EXECUTING = "executing"
    APPLIED = "applied, not verified"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled back"
    FAILED = "change failed"
    REJECTED = "change rejected"
    RESOLVED = "resolved"


STAGE_ICON = {
    Stage.TRIAGING: ":mag:", Stage.TRIAGED: ":clipboard:", Stage.CHANGE_PROPOSED: ":raised_hand:",
    Stage.APPROVED: ":white_check_mark:", Stage.EXECUTING: ":gear:", Stage.APPLIED: ":grey_question:",
    Stage.VERIFIED: ":white_check_mark:",
    Stage.ROLLED_BACK: ":leftwards_arrow_with_hook:", Stage.FAILED: ":x:", Stage.REJECTED: ":no_entry_sign:",
    Stage.RESOLVED: ":large_green_circle:",
}
SEVERITY_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


def esc(text: str) -> str:
    """Escape text for mrkdwn: `&`, `<` and `>` are the only control characters Slack defines."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION_CHARS)}}


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(t, 2000)} for t in texts if t][:10]}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f"*{k}*\n{v}", 2000)} for k, v in pairs][:10]}


def _utc(t: dt.datetime) -> str:
    return f"{t.astimezone(dt.UTC):%H:%M} UTC"


# ---- the incident's top message ---------------------------------------------------------------------

def incident_message(incident: Incident, stage: Stage, report: TriageReport | None, note: str = "") -> Message:
    """The top message of an incident: edited in place as the incident moves through its stages."""
    sev = incident.severity.value
    affected = report.affected if report else {}
    models = affected.get("models") or sorted({a.labels["model_name"] for a in incident.alerts
                                               if "model_name" in a.labels})
    namespaces = affected.get("namespaces") or sorted({a.labels["namespace"] for a in incident.alerts
                                                       if "namespace" in a.labels})
    if report is None:
        summary = "_Triage is running: gathering evidence from the runbooks that match this alert…_"
    else:
        summary = esc(report.summary) or f"Triage finished: {report.status}."
    title = f"{STAGE_ICON[stage]} {SEVERITY_ICON.get(sev, ':white_circle:')} *{esc(incident.title)}*"
    blocks: list[dict[str, Any]] = [
        _section(title),
        _fields([("Severity", sev), ("Status", f"*{stage.value}*"),
                 ("Models", esc(", ".join(models)) or "—"), ("Namespaces", esc(", ".join(namespaces)) or "—")]),
        _section(summary),
    ]
    if note:
        blocks.append(_section(note))
    firing = sum(1 for a in incident.alerts if a.status == "firing")
    blocks.append(_context(f"incident `{incident.id}` · {firing}/{len(incident.alerts)} alerts firing · "
                           f"opened {_utc(incident.created_at)} · details and questions in the thread"))
    return {"text": f"[{stage.value}] {incident.title} ({sev})", "blocks": blocks}


def triage_details(report: TriageReport, trace_link: str | None = None) -> Message:
    """The triage, posted in the incident's thread: hypotheses with their evidence, then the proposals (and a
    link to the triage's trace when tracing is on and `tracing.ui_url` is set)."""
    lines = [f"*Triage* ({report.reasoner}, {len(report.evidence)} evidence queries, "
             f"{(report.finished - report.started).total_seconds():.1f}s): {esc(report.summary)}"]
    blocks = [_section(lines[0])]
    for h in report.hypotheses[:3]:
        body = [f"*{esc(h.title)}* — {h.confidence:.0%} ({h.category.value})"]
        body += [f"• {esc(s)}" for s in h.supporting[:5]]
        body += [f"◦ against: {esc(s)}" for s in h.against[:3]]
        body += [f"◦ missing: {esc(s)}" for s in h.missing[:3]]
        blocks.append(_section("\n".join(body)))
    ev = [f"• {esc(e.title)}: {esc(e.summary)}" for e in report.evidence[:10]]
    if ev:
        blocks.append(_section("*Evidence*\n" + "\n".join(ev)))
    if report.proposals:
        props = [f"• {p.kind.value} {esc(str(p.target or ''))} {esc(str(p.params or ''))} — {esc(p.reason)}"
                 for p in report.proposals]
        blocks.append(_section("*Proposed*\n" + "\n".join(props)))
    if report.runbooks:
        blocks.append(_context("runbooks: " + ", ".join(report.runbooks)))
    if trace_link:
        blocks.append(_context(f"<{trace_link}|Trace of this triage>"))
    return {"text": f"Triage: {report.summary}", "blocks": blocks}


# ---- change requests ------------------------------------------------------------------------------

STATUS_LINE = {
    ChangeStatus.PENDING_APPROVAL: ":hourglass_flowing_sand: waiting for approval",
    ChangeStatus.APPROVED: ":white_check_mark: approved",
    ChangeStatus.REJECTED: ":no_entry_sign: rejected — it will not run",
    ChangeStatus.DENIED: ":no_entry: denied by policy — it cannot run",
    ChangeStatus.EXECUTING: ":gear: executing",
    ChangeStatus.APPLIED: ":arrows_counterclockwise: applied — verifying",
    ChangeStatus.VERIFIED: ":white_check_mark: applied and verified",
    ChangeStatus.ROLLED_BACK: ":leftwards_arrow_with_hook: verification failed — rolled back",
    ChangeStatus.FAILED: ":x: failed",
    ChangeStatus.EXPIRED: ":hourglass: expired",
}


def change_request(ch: ChangeRequest, approvals: Sequence[Approval], now: dt.datetime, outcome: str = "") -> Message:
    """A change request with what it does, why, its diff, risk and policy; buttons while it awaits approval."""
    b = ch.blast_radius
    approved = [a for a in approvals if a.decision == "approve"]
    live = [a for a in approved if a.expires_at > now]
    if ch.cost_delta_per_month is None:
        cost = "not estimated"
    else:
        cost = f"{'−' if ch.cost_delta_per_month < 0 else '+'}${abs(ch.cost_delta_per_month):,.0f}/month"
    if ch.status == ChangeStatus.PENDING_APPROVAL:
        needed = max(0, ch.approvals_required - len(live))
        approvals_text = (f"{needed} more from {', '.join(ch.approver_roles)} "
                          f"({len(live)}/{ch.approvals_required} in)")
    elif ch.approvals_required:
        approvals_text = f"{len(approved)}/{ch.approvals_required} ({', '.join(ch.approver_roles)})"
    else:
        approvals_text = "none required" if ch.status != ChangeStatus.DENIED else "—"
    expiry = (f"each approval is valid {ch.approval_ttl_s // 60} min and binds to this exact change and the "
              f"target's current state (generation {ch.fingerprint.generation})")
    what = f"*{ch.spec.action.value}* `{esc(str(ch.spec.target))}`"
    if ch.spec.params:
        what += " " + esc(", ".join(f"{k}={v}" for k, v in ch.spec.params.items()))
    blocks: list[dict[str, Any]] = [
        _section(f":memo: *Change request* `{ch.id}`: {what}\n*Why:* {esc(ch.reason)}"),
        _fields([
            ("Risk", ch.risk),
            ("Blast radius", f"{b.gpus} GPUs, {b.replicas} replicas, up to {b.capacity_drop:.0%} of capacity"
                             + (f" ({esc(', '.join(b.models))})" if b.models else "")),
            ("Predicted cost change", cost),
            ("Policy", f"`{ch.policy_rule or '—'}`: {esc(ch.policy_reason)}"),
            ("Approvals", approvals_text),
            ("Status", STATUS_LINE.get(ch.status, ch.status.value)),
        ]),
        _section("```" + esc(clip(ch.diff or "(no diff)", MAX_DIFF_CHARS)) + "```"),
    ]
    if b.per_model or b.left_in_place or b.at_risk:
        lines = [f"• {esc(m)} loses {d:.0%} of its serving replicas" for m, d in b.per_model.items()]
        lines += [f"• {esc(m)} keeps serving {d:.0%} of its replicas here (a drain would remove them)"
                  for m, d in b.at_risk.items()]
        lines += [f"• left on the node: {esc(x)}" for x in b.left_in_place]
        blocks.insert(2, _section(clip("*Pods on the node*\n" + "\n".join(lines), MAX_DIFF_CHARS)))
    decided = [f"{':white_check_mark:' if a.decision == 'approve' else ':no_entry_sign:'} "
               f"{a.decision}d by {_who(a)} ({a.role}) at {_utc(a.at)} via {a.via}" for a in approvals]
    if decided:
        blocks.append(_context(*decided))
    if outcome:
        blocks.append(_section(outcome))
    if ch.status == ChangeStatus.PENDING_APPROVAL:
        blocks.append({"type": "actions", "block_id": f"change:{ch.id}", "elements": [
            {"type": "button", "action_id": ACTION_APPROVE, "style": "primary", "value": ch.id,
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {"title": {"type": "plain_text", "text": "Approve this change?"},
                         "text": {"type": "mrkdwn", "text": f"{ch.spec.action.value} {esc(str(ch.spec.target))}"},
                         "confirm": {"type": "plain_text", "text": "Approve"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": ACTION_REJECT, "style": "danger", "value": ch.id,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    blocks.append(_context(expiry + f" · requested by {esc(ch.requester)} at {_utc(ch.created_at)}"))
    return {"text": f"Change request {ch.id}: {ch.spec.action.value} {ch.spec.target} — {ch.status.value}",
            "blocks": blocks}


# ---- slash command replies ------------------------------------------------------------------------

HELP = ("*`/ops` commands*\n"
        "• `/ops status` — open incidents and changes waiting for approval\n"
        "• `/ops incidents` — recent incidents\n"
        "• `/ops changes` — recent change requests\n"
        "• `/ops approve CHANGE_ID` — approve a change (same checks as the button)\n"
        "• `/ops deploy NAMESPACE/NAME --version V [--image IMAGE] [--strategy canary|rolling]` — request a "
        "deployment (preflight, then a change request for approval)\n"
        "• `/ops rollout promote|abort NAMESPACE/NAME [why]` — propose promoting a paused canary or aborting "
        "one (a change request for approval, like the buttons on a deployment's progress)\n"
        "• `/ops rightsize [MODEL | NAMESPACE/NAME]` — right-sizing recommendations (top savings without one)\n"
        "• `/ops help` — this text\n"
        "In an incident thread, mention me: `why?`, `what changed in the last hour?`, `show me TTFT for MODEL`, "
        "`roll back DEPLOYMENT to revision N`, `scale DEPLOYMENT to N`, `deploy V to NAMESPACE/NAME`.")


def status_text(open_incidents: Sequence[Incident], pending: Sequence[ChangeRequest]) -> str:
    lines = [f"*{len(open_incidents)} open incident(s), {len(pending)} change(s) awaiting approval*"]
    lines += [f"• {SEVERITY_ICON.get(i.severity.value, '')} `{i.id}` {esc(i.title)}" for i in open_incidents[:10]]
    lines += [f"• :hourglass_flowing_sand: `{c.id}` {c.spec.action.value} {esc(str(c.spec.target))}"
              for c in pending[:10]]
    return "\n".join(lines)


def incidents_text(items: Sequence[Incident]) -> str:
    if not items:
        return "No incidents."
    return "*Recent incidents*\n" + "\n".join(
        f"• `{i.id}` [{i.status.value}] {esc(i.title)} ({i.severity.value}, opened {_utc(i.created_at)})"
        for i in items[:20])


def changes_text(items: Sequence[ChangeRequest]) -> str:
    if not items:
        return "No change requests."
    return "*Recent change requests*\n" + "\n".join(
        f"• `{c.id}` [{c.status.value}] {c.spec.action.value} {esc(str(c.spec.target))} — {esc(c.policy_rule)}"
        for c in items[:20])


def _who(a: Approval) -> str:
    """A Slack mention when the person decided from Slack, else the person's name (approved from the CLI)."""
    return f"<@{a.identity.removeprefix('slack:')}>" if a.identity.startswith("slack:") else a.approver


def rollout_progress(text: str, namespace: str, name: str) -> Message:
    """A canary's progress line with Promote / Abort: each proposes a change request that needs approval."""
    target = f"{namespace}/{name}"
    return {"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": ACTION_PROMOTE, "value": target,
             "text": {"type": "plain_text", "text": "Promote"}},
            {"type": "button", "action_id": ACTION_ABORT, "style": "danger", "value": target,
             "text": {"type": "plain_text", "text": "Abort"}}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "Promote / Abort propose a change request: "
                                                                    "it runs only once policy's approvers approve."}]}]}
