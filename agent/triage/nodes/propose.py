"""Propose node: typed change requests from the top hypothesis's runbook remediations.

Triage only proposes. A remediation applies when its hypothesis is the top one, confident enough,
and its `when` condition holds; its parameters are filled from evidence (e.g. the revision to roll
back to). When nothing safe applies, the proposal is "page a human". Executing any of this is the
guarded executor's job, after policy and approval.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.models import ActionKind, Category, Hypothesis, ObjectRef, ProposedAction
from agent.triage.conditions import compile_condition, compile_value, evaluate, evaluate_value
from agent.triage.features import CULPRIT_KINDS, MIN_CONFIDENCE, feature_map
from agent.triage.render import render
from agent.triage.runbooks import Remediation, Runbook
from agent.triage.state import TriageContext, TriageState


def _param(value: Any, feats: dict[str, Any]) -> Any:
    """A string parameter is a value expression over features; numbers and booleans are literal."""
    if isinstance(value, str):
        v = evaluate_value(compile_value(value), feats)
        return int(v) if isinstance(v, float) and v.is_integer() else v
    return value


def _target(rem: Remediation, feats: dict[str, Any]) -> ObjectRef | None:
    if not rem.target or not (name := feats.get(f"ctx.{rem.target}")):
        return None
    kind = CULPRIT_KINDS.get(rem.target, "Deployment")
    ns = feats.get("ctx.namespace") if kind in ("Deployment", "Pod", "HorizontalPodAutoscaler") else None
    return ObjectRef(kind=kind, name=str(name), namespace=ns)


def proposals_for(top: Hypothesis | None, books: list[Runbook], feats: dict[str, Any]) -> list[ProposedAction]:
    if top is None:
        return [ProposedAction(kind=ActionKind.PAGE_HUMAN, reason="no runbook covers this alert")]
    if top.category == Category.HEALTHY:
        return [ProposedAction(kind=ActionKind.NONE, reason="no anomaly in the evidence", hypothesis_id=top.id)]
    if top.confidence < MIN_CONFIDENCE:
        return [ProposedAction(kind=ActionKind.PAGE_HUMAN, hypothesis_id=top.id,
                               reason=f"evidence is inconclusive (top hypothesis {top.confidence:.0%})")]
    out: list[ProposedAction] = []
    for book in books:
        for rem in book.remediations:
            if rem.hypothesis != top.id:
                continue
            if rem.when and evaluate(compile_condition(rem.when), feats).value is not True:
                continue
            params = {k: _param(v, feats) for k, v in rem.params.items()}
            if any(v is None for v in params.values()):
                continue  # a parameter the evidence could not supply: never guess it
            target = _target(rem, feats)
            if rem.target and target is None:
                continue
            action = ProposedAction(kind=rem.action, target=target, params=params,
                                    reason=render(rem.reason, feats), hypothesis_id=top.id)
            if action not in out:
                out.append(action)
    if not out:
        out.append(ProposedAction(kind=ActionKind.PAGE_HUMAN, hypothesis_id=top.id,
                                  reason=f"{top.title}: no safe automated remediation applies"))
    return out


async def propose(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    books = [b for b in runtime.context.runbooks if b.id in state.get("runbook_ids", [])]
    hyps = state.get("hypotheses", [])
    feats = feature_map(state)
    # The policy's limits as `policy.*` features, so a runbook can size a step the policy allows
    # (e.g. a scale-down that removes no more than policy.max_capacity_drop of the capacity at once).
    feats.update({f"policy.{k}": v for k, v in runtime.context.limits.items()})
    return {"proposals": proposals_for(hyps[0] if hyps else None, books, feats)}
