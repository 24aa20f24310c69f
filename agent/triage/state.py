"""The triage graph's state and run-scoped context.

State is what a checkpoint keeps (plain typed values, JSON-serialisable); `TriageContext` is what a
run needs but must never be checkpointed (clients, the tool runner, the reasoner, the runbooks).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from agent.guard.runner import ToolRunner
from agent.models import Evidence, Hypothesis, Incident, ObjectRef, ProposedAction, TriageReport, Untrusted
from agent.triage.runbooks import Runbook


class TriageState(TypedDict, total=False):
    incident: Incident
    started: dt.datetime
    context: dict[str, str]  # namespace, model_name, deployment, node, ... resolved from alerts and the cluster
    runbook_ids: list[str]
    evidence: list[Evidence]
    hypotheses: list[Hypothesis]
    proposals: list[ProposedAction]
    untrusted: list[Untrusted]
    narrative: str
    report: TriageReport


class Reasoner(Protocol):
    """Turns evidence into ranked hypotheses and a narrative. Rules by default; an LLM optionally."""

    name: str

    async def diagnose(self, state: TriageState, books: list[Runbook], runner: ToolRunner) -> tuple[
        list[Hypothesis], str]: ...


@dataclass(frozen=True)
class PriorChange:
    """A change already executed for this incident (plain data: triage never imports the change flow)."""

    action: str
    target: ObjectRef
    status: str  # applied, verified, rolled_back ... as the change ledger says


@dataclass
class TriageContext:
    runner: ToolRunner
    runbooks: list[Runbook]
    reasoner: Reasoner
    actor: str = "agent:rules"
    lookback_s: int = 3 * 3600
    now: dt.datetime | None = None  # fixed "now" for replayed evals; None = wall clock
    extra: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)  # the policy's, for runbook params (policy.<key>)
    rate_window_s: int = 60  # `{rate_window}` in runbook queries: the shortest rate() window with 4 scrapes
    # Changes already executed for this incident: a re-triage after a remediation that did not resolve it
    # pages a human rather than change the same object again (no flip-flop).
    prior_changes: list[PriorChange] = field(default_factory=list)

