"""Report node: assemble the triage report (what broke, the evidence, the likely cause, proposals)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from langgraph.runtime import Runtime

from agent.models import Category, TriageReport
from agent.triage.features import MIN_CONFIDENCE
from agent.triage.state import TriageContext, TriageState


async def report(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    ctx = runtime.context
    incident = state["incident"]
    hyps = state.get("hypotheses", [])
    top = hyps[0] if hyps else None
    if top is None or top.confidence < MIN_CONFIDENCE:
        status = "inconclusive"
    elif top.category == Category.HEALTHY:
        status = "no_anomaly"
    else:
        status = "anomaly"
    c = state.get("context", {})
    affected = {
        "models": sorted({c["model_name"]} if c.get("model_name") else set()),
        "namespaces": sorted({c["namespace"]} if c.get("namespace") else set()),
        "deployments": sorted({c["deployment"]} if c.get("deployment") else set()),
        "nodes": sorted({c["node"]} if c.get("node") else set()),
    }
    finished = ctx.now or dt.datetime.now(dt.UTC)
    rep = TriageReport(
        incident_id=incident.id, title=incident.title, summary=state.get("narrative", ""), status=status,
        hypotheses=hyps, evidence=state.get("evidence", []), affected={k: v for k, v in affected.items() if v},
        proposals=state.get("proposals", []), runbooks=state.get("runbook_ids", []), reasoner=ctx.reasoner.name,
        untrusted=state.get("untrusted", []), started=state.get("started", finished), finished=finished,
        tool_calls=sum(1 for _ in state.get("evidence", [])),
    )
    return {"report": rep}
