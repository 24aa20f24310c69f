"""Wire the triage graph: intake → gather → diagnose → propose → report. Wiring only."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agent.nodes.diagnose import diagnose
from agent.nodes.gather import gather
from agent.nodes.intake import intake
from agent.nodes.propose import propose
from agent.nodes.report import report
from agent.state import TriageContext, TriageState


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
