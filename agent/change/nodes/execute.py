"""Execute node: hand the approved change to the guarded executor (exactly once, whatever re-runs it).

The executor re-checks policy, approvals and the target's fingerprint now, claims the change in the
ledger and writes. A LangGraph re-run of this node after a crash lands in the executor's reconcile path,
never in a second write.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.change.executor.outcome import ExecutionRefused
from agent.change.models import ChangeStage, ChangeStatus
from agent.change.state import ChangeContext, ChangeState


async def execute(state: ChangeState, runtime: Runtime[ChangeContext]) -> dict[str, Any]:
    ctx = runtime.context
    cid = state["change_id"]
    if ctx.notify is not None:
        await ctx.notify(cid, ChangeStage.EXECUTING, f"{cid}: the guarded executor is applying it")
    try:
        result = await ctx.executor.execute(cid, actor=ctx.actor)
    except ExecutionRefused as e:
        return {"stage": ChangeStage.REFUSED, "detail": str(e)}
    if result.status == ChangeStatus.APPLIED:
        return {"stage": ChangeStage.APPLIED, "detail": "applied" if result.applied_now else "already applied"}
    if result.status in (ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK):
        return {"stage": ChangeStage(result.status.value), "detail": "finished before"}
    if result.status == ChangeStatus.EXECUTING:
        return {"stage": ChangeStage.EXECUTING_ELSEWHERE, "detail": f"claimed by {result.detail.get('owner')}"}
    return {"stage": ChangeStage.FAILED, "detail": str(result.detail.get("error", result.status.value))}
