"""Verify node: watch the rollout and compare SLO signals with the baseline; roll back on a regression.

A regression after a change that is not itself a rollback is undone automatically under the original
approval (policy must still allow the rollback). Missing data is inconclusive, never a pass; without a
verifier the change is reported applied and unverified.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from langgraph.runtime import Runtime

from agent.change.models import ChangeStage, ChangeStatus
from agent.change.state import ChangeContext, ChangeState
from agent.change.verdict import Outcome


async def verify_change(state: ChangeState, runtime: Runtime[ChangeContext]) -> dict[str, Any]:
    ctx = runtime.context
    ex = ctx.executor
    cid = state["change_id"]
    ch = ex.ledger.get(cid)
    if ch is None:
        return {"stage": ChangeStage.FAILED, "detail": f"no change {cid}"}
    if ctx.verify is None:
        return {"stage": ChangeStage.UNVERIFIED,
                "detail": "no verifier configured (Prometheus and a reader identity)"}
    if ctx.notify is not None:
        await ctx.notify(cid, ChangeStage.VERIFYING, f"{cid}: watching the rollout, then TTFT p95, errors and queue")
    row = ex.ledger.execution(cid)
    applied_at = dt.datetime.fromisoformat(row.finished_at) if row is not None and row.finished_at else ch.created_at
    v = await ctx.verify(ch, applied_at)
    summary = v.summary()
    ch = ex.record_verification(ch, v.outcome.value, summary)
    if v.outcome == Outcome.PASS:
        return {"stage": ChangeStage.VERIFIED, "verification": summary}
    if v.outcome == Outcome.REGRESSION and ch.rollback_of is None:
        if ctx.notify is not None:
            await ctx.notify(cid, ChangeStage.ROLLING_BACK, f"{cid}: verification failed ({summary}); rolling back")
        rb = await ex.auto_rollback(ch, summary)
        if rb is not None and rb.status == ChangeStatus.APPLIED:
            return {"stage": ChangeStage.ROLLED_BACK, "verification": summary,
                    "detail": f"rolled back by {rb.change_id}"}
        return {"stage": ChangeStage.REGRESSION, "verification": summary,
                "detail": "automatic rollback was not possible" if rb is None else f"rollback {rb.status.value}"}
    stage = ChangeStage.REGRESSION if v.outcome == Outcome.REGRESSION else ChangeStage.INCONCLUSIVE
    return {"stage": stage, "verification": summary}
