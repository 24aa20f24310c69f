"""Diagnose node: hand the gathered evidence to the reasoner, which ranks hypotheses."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.triage.state import TriageContext, TriageState


async def diagnose(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    ctx = runtime.context
    books = [b for b in ctx.runbooks if b.id in state.get("runbook_ids", [])]
    hypotheses, narrative = await ctx.reasoner.diagnose(state, books, ctx.runner)
    return {"hypotheses": hypotheses, "narrative": narrative}
