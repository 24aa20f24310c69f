"""Await-approval node: hold the change with LangGraph's `interrupt()` until enough approvals are in.

The decision itself is recorded by the executor (bound to the spec digest and the target fingerprint,
checked for role, self-approval and expiry) *before* the graph is resumed, so a crash between the two
loses nothing: the ledger is the truth and this node only reads it. Resuming with a decision that did
not complete the approvals interrupts again.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent.change.models import ChangeStage, ChangeStatus
from agent.change.state import ChangeContext, ChangeState

TERMINAL = {ChangeStatus.REJECTED: ChangeStage.REJECTED, ChangeStatus.DENIED: ChangeStage.DENIED,
            ChangeStatus.EXPIRED: ChangeStage.EXPIRED, ChangeStatus.FAILED: ChangeStage.FAILED}


async def await_approval(state: ChangeState, runtime: Runtime[ChangeContext]) -> dict[str, Any]:
    ex = runtime.context.executor
    cid = state["change_id"]
    ch = ex.ledger.get(cid)
    if ch is None:
        return {"stage": ChangeStage.FAILED, "detail": f"no change {cid} in the ledger"}
    if ch.status in TERMINAL:
        return {"stage": TERMINAL[ch.status], "detail": ch.policy_reason if ch.status == ChangeStatus.DENIED
                else f"{ch.id} is {ch.status.value}"}
    if ch.status != ChangeStatus.PENDING_APPROVAL:
        return {"stage": ChangeStage.APPROVED, "detail": f"{ch.id} is {ch.status.value}"}
    approvals = [a for a in ex.ledger.approvals(cid) if a.decision == "approve"]
    if runtime.context.notify is not None:
        await runtime.context.notify(cid, ChangeStage.AWAITING_APPROVAL,
                                     f"{ch.id} needs {ch.approvals_required - len(approvals)} more approval(s) "
                                     f"from {', '.join(ch.approver_roles)}")
    interrupt({"change_id": cid, "needs": ch.approvals_required, "have": len(approvals),
               "roles": ch.approver_roles})
    # Resumed: somebody decided. Re-read the ledger; the router sends us back here if still pending.
    ch = ex.ledger.get(cid)
    assert ch is not None
    n = len([a for a in ex.ledger.approvals(cid) if a.decision == "approve"])
    if ch.status in TERMINAL:
        return {"stage": TERMINAL[ch.status], "detail": f"{ch.id} is {ch.status.value}", "approvals_seen": n}
    if ch.status == ChangeStatus.PENDING_APPROVAL:
        return {"stage": ChangeStage.AWAITING_APPROVAL, "approvals_seen": n}
    return {"stage": ChangeStage.APPROVED, "detail": f"{n} approval(s) in", "approvals_seen": n}
