"""Wire the graphs. Wiring only.

- triage: intake → gather → diagnose → propose → report.
- change: await_approval (interrupt until approved) → execute → verify_change (auto-rollback on regression).
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agent.nodes.await_approval import await_approval
from agent.nodes.diagnose import diagnose
from agent.nodes.execute import execute
from agent.nodes.gather import gather
from agent.nodes.intake import intake
from agent.nodes.propose import propose
from agent.nodes.report import report
from agent.nodes.verify_change import verify_change
from agent.state import ChangeContext, ChangeState, TriageContext, TriageState


def build_triage_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    g = StateGraph(TriageState, context_schema=TriageContext)
    g.add_node("intake", intake)
    g.add_node("gather", gather)
    g.add_node("diagnose", diagnose)
    g.add_node("propose", propose)
    g.add_node("report", report)
    g.add_edge(START, "intake")
    g.add_edge("intake", "gather")
    g.add_edge("gather", "diagnose")
    g.add_edge("diagnose", "propose")
    g.add_edge("propose", "report")
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)


def _after_approval(state: ChangeState) -> str:
    stage = state.get("stage")
    if stage == "awaiting_approval":
        return "await_approval"  # a decision came in but the approvals are not complete: hold again
    return "execute" if stage == "approved" else END


def _after_execute(state: ChangeState) -> str:
    return "verify_change" if state.get("stage") == "applied" else END


def build_change_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    g = StateGraph(ChangeState, context_schema=ChangeContext)
    g.add_node("await_approval", await_approval)
    g.add_node("execute", execute)
    g.add_node("verify_change", verify_change)
    g.add_edge(START, "await_approval")
    g.add_conditional_edges("await_approval", _after_approval, ["await_approval", "execute", END])
    g.add_conditional_edges("execute", _after_execute, ["verify_change", END])
    g.add_edge("verify_change", END)
    return g.compile(checkpointer=checkpointer)
