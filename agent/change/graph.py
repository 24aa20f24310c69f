"""Wire the change graph. Wiring only (each node wrapped in its trace span).

- change: await_approval (interrupt until approved) → execute → verify_change (auto-rollback on regression).
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agent.change.models import ChangeStage
from agent.change.nodes.await_approval import await_approval
from agent.change.nodes.execute import execute
from agent.change.nodes.verify_change import verify_change
from agent.change.state import ChangeContext, ChangeState
from agent.telemetry import traced_node


def _after_approval(state: ChangeState) -> str:
    stage = state.get("stage")
    if stage == ChangeStage.AWAITING_APPROVAL:
        return "await_approval"  # a decision came in but the approvals are not complete: hold again
    return "execute" if stage == ChangeStage.APPROVED else END


def _after_execute(state: ChangeState) -> str:
    return "verify_change" if state.get("stage") == ChangeStage.APPLIED else END


def build_change_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    g = StateGraph(ChangeState, context_schema=ChangeContext)
    g.add_node("await_approval", traced_node("await_approval", await_approval))
    g.add_node("execute", traced_node("execute", execute))
    g.add_node("verify_change", traced_node("verify_change", verify_change))
    g.add_edge(START, "await_approval")
    g.add_conditional_edges("await_approval", _after_approval, ["await_approval", "execute", END])
    g.add_conditional_edges("execute", _after_execute, ["verify_change", END])
    g.add_edge("verify_change", END)
    return g.compile(checkpointer=checkpointer)
