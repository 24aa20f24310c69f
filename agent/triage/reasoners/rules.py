"""The rules reasoner: scores each runbook hypothesis from evidence features, deterministically.

A hypothesis's confidence is the weight of its supporting clauses that hold, less the weight of the
clauses against it that hold, over the weight it could have had. A clause whose features are missing
(the query failed or was skipped) is neither for nor against: it is listed as missing, and it lowers
the confidence ceiling, so a triage with Prometheus down says what it could not see instead of
guessing. This reasoner needs no API key and is the baseline every eval reports.
"""

from __future__ import annotations

from typing import Any

from agent.guard.runner import ToolRunner
from agent.models import Category, Hypothesis, ObjectRef
from agent.triage.conditions import compile_condition, evaluate
from agent.triage.features import CULPRIT_KINDS, MIN_CONFIDENCE, NAMESPACED_KINDS, feature_map
from agent.triage.render import render
from agent.triage.runbooks import HypothesisSpec, Runbook
from agent.triage.state import TriageState


def score(spec: HypothesisSpec, feats: dict[str, Any]) -> Hypothesis | None:
    if spec.requires:
        req = evaluate(compile_condition(spec.requires), feats)
        if req.value is False:
            return None
    supporting: list[str] = []
    against: list[str] = []
    missing: list[str] = []
    got = total = 0.0
    unknown_weight = 0.0
    for clause in spec.supports:
        total += clause.weight
        r = evaluate(compile_condition(clause.when), feats)
        if r.value:
            got += clause.weight
            supporting.append(render(clause.says, feats))
        elif r.value is None:
            unknown_weight += clause.weight
            missing.extend(m for m in r.missing if m not in missing)
    for clause in spec.against:
        r = evaluate(compile_condition(clause.when), feats)
        if r.value:
            got -= clause.weight
            against.append(render(clause.says, feats))
    if total == 0:
        return None
    confidence = max(0.0, min(1.0, got / total))
    culprit = None
    if spec.culprit and (name := feats.get(f"ctx.{spec.culprit}")):
        kind = CULPRIT_KINDS.get(spec.culprit, "Deployment")
        ns = feats.get("ctx.namespace") if kind in NAMESPACED_KINDS else None
        culprit = ObjectRef(kind=kind, name=str(name), namespace=ns)
    return Hypothesis(id=spec.id, category=spec.category, title=render(spec.title, feats), confidence=confidence,
                      culprit=culprit, supporting=supporting, against=against,
                      missing=[_missing_sentence(m, feats) for m in missing])


def _missing_sentence(feature: str, feats: dict[str, Any]) -> str:
    evidence_id = feature.split(".", 1)[0]
    status = feats.get(f"{evidence_id}.status")
    how = {"error": "failed", "skipped": "was skipped", "empty": "found no data"}.get(str(status), "was not gathered")
    return f"{feature} (evidence '{evidence_id}' {how})"


def rank(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    best: dict[str, Hypothesis] = {}
    for h in hypotheses:  # the same hypothesis from two runbooks: keep the stronger reading
        if h.id not in best or h.confidence > best[h.id].confidence:
            best[h.id] = h
    # "Nothing is wrong" can only be as confident as every specific explanation is doubtful.
    specific = max((h.confidence for h in best.values() if h.category != Category.HEALTHY), default=0.0)
    for hid, h in best.items():
        if h.category == Category.HEALTHY:
            best[hid] = h.model_copy(update={"confidence": round(min(h.confidence, 1.0 - specific), 3)})
    return sorted(best.values(), key=_order)


def _order(h: Hypothesis) -> tuple[float, bool, int, bool, str]:
    """Most confident first. On a tie at an actionable confidence, a specific explanation beats "healthy":
    healthy's confidence is capped at 1 − the best specific one, so a tie means the fault is at least as
    likely as nothing, and healthy's many routine checks must not outvote it by count. Below that, the
    hypothesis with more supporting facts first, and healthy before an equally weak specific one."""
    specific_first = h.confidence >= MIN_CONFIDENCE and h.category == Category.HEALTHY
    return (-h.confidence, specific_first, -len(h.supporting), h.category != Category.HEALTHY, h.id)


class RulesReasoner:
    name = "rules"

    async def diagnose(self, state: TriageState, books: list[Runbook], runner: ToolRunner) -> tuple[
            list[Hypothesis], str]:
        feats = feature_map(state)
        scored = [h for b in books for spec in b.hypotheses if (h := score(spec, feats)) is not None]
        ranked = rank(scored)
        return ranked, narrate(ranked)


def narrate(ranked: list[Hypothesis]) -> str:
    if not ranked:
        return "No runbook hypothesis applies to this alert; the evidence is listed below."
    top = ranked[0]
    if top.category == Category.HEALTHY or top.confidence < MIN_CONFIDENCE:
        if top.category == Category.HEALTHY:
            return f"No anomaly: {top.title}. " + " ".join(top.supporting[:3])
        return (f"Inconclusive: the strongest hypothesis, {top.title}, has only {top.confidence:.0%} confidence."
                + (f" Missing evidence: {', '.join(top.missing[:3])}." if top.missing else ""))
    because = "; ".join(top.supporting[:4])
    doubt = f" Against it: {'; '.join(top.against[:2])}." if top.against else ""
    return f"Most likely: {top.title} ({top.confidence:.0%}). Evidence: {because}.{doubt}"
