"""Wire the triage graph. Wiring only (each node wrapped in its trace span).

- triage: intake → gather → diagnose → propose → report.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agent.telemetry import traced_node
from agent.triage.nodes.diagnose import diagnose
from agent.triage.nodes.gather import gather
from agent.triage.nodes.intake import intake
from agent.triage.nodes.propose import propose
from agent.triage.nodes.report import report
from agent.triage.state import TriageContext, TriageState


def build_triage_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    g = StateGraph(TriageState, context_schema=TriageContext)
    g.add_node("intake", traced_node("intake", intake))
    g.add_node("gather", traced_node("gather", gather))
    g.add_node("diagnose", traced_node("diagnose", diagnose))
    g.add_node("propose", traced_node("propose", propose))
    g.add_node("report", traced_node("report", report))
    g.add_edge(START, "intake")
    g.add_edge("intake", "gather")
    g.add_edge("gather", "diagnose")
    g.add_edge("diagnose", "propose")
    g.add_edge("propose", "report")
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)

