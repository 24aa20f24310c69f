"""Diagnose node: hand the gathered evidence to the reasoner, which ranks hypotheses.

Whatever the reasoner says, a firing critical alert far outside its objective is not "healthy"
(see `agent.triage.objectives`).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.triage.features import feature_map
from agent.triage.objectives import breaches, rule_out_healthy
from agent.triage.state import TriageContext, TriageState


async def diagnose(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    ctx = runtime.context
    books = [b for b in ctx.runbooks if b.id in state.get("runbook_ids", [])]
    hypotheses, narrative = await ctx.reasoner.diagnose(state, books, ctx.runner)
    found = breaches(state["incident"], books, feature_map(state))
    hypotheses, narrative = rule_out_healthy(hypotheses, narrative, found)
    return {"hypotheses": hypotheses, "narrative": narrative}
