"""A firing critical alert whose own signal is far outside its objective is never answered "healthy".

The reasoners weigh the fleet's health checks against specific explanations, and with a polluted
baseline or an unexpected failure mode "nothing is wrong" can come out on top. That answer closes
incidents, so it is checked here in code, after any reasoner: when a runbook declares the objective
behind a firing critical alert (`slo:` in its front matter) and the alert's own signal is past
`far` × the objective's bound, every "healthy" hypothesis is ruled out. What is left is either a
specific explanation or an inconclusive report that pages a human with what was seen.

A CloudWatch alarm carries its own evaluation: its state reason ("Threshold Crossed: 1 datapoint [57.0
(…)] was greater than the threshold (20.0)") names the datapoints and the threshold, so an alarm whose
datapoints are `ALARM_FAR` × past its threshold is such a breach too — whether or not a runbook knows
the alarm.
"""

from __future__ import annotations

import re
from typing import Any

from agent.models import Category, Hypothesis, Incident
from agent.triage.conditions import compile_value, evaluate_value
from agent.triage.features import MIN_CONFIDENCE
from agent.triage.render import render
from agent.triage.runbooks import Runbook

ALARM_FAR = 2.0
_REASON = re.compile(r"Threshold Crossed:[^\[]*\[(?P<points>[^\]]*)\][^(]*?(?P<dir>greater|less)[^(]*\(\s*"
                     r"(?P<threshold>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\)", re.IGNORECASE)
_POINT = re.compile(r"(?:^|,)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def alarm_breach(reason: str) -> tuple[float, float] | None:
    """(worst datapoint, threshold) when a CloudWatch state reason shows datapoints far past the threshold."""
    m = _REASON.search(reason)
    if m is None:
        return None
    points = [float(p) for p in _POINT.findall(m["points"])]
    threshold = float(m["threshold"])
    if not points:
        return None
    if m["dir"].lower() == "greater":
        worst = max(points)
        far = worst > ALARM_FAR * threshold if threshold > 0 else worst > threshold
    else:
        worst = min(points)
        far = threshold > 0 and worst < threshold / ALARM_FAR
    return (worst, threshold) if far else None


def breaches(incident: Incident, books: list[Runbook], feats: dict[str, Any]) -> list[str]:
    """Sentences naming each firing critical alert whose own signal is far outside its objective."""
    found: list[str] = []
    for a in incident.alerts:
        if a.status != "firing" or a.labels.get("severity") != "critical":
            continue
        for text in (a.annotations.get("description", ""), a.annotations.get("StateReason", "")):
            seen = alarm_breach(text)
            if seen is not None:
                sentence = (f"{a.name}: its CloudWatch alarm saw {seen[0]:g} against a threshold of {seen[1]:g}")
                if sentence not in found:
                    found.append(sentence)
                break
        for b in books:
            for o in b.slo:
                if o.alertname != a.name:
                    continue
                value = evaluate_value(compile_value(o.signal), feats)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > o.far * o.max:
                    sentence = f"{a.name}: " + render(o.says, feats)
                    if sentence not in found:
                        found.append(sentence)
    return found


def rule_out_healthy(ranked: list[Hypothesis], narrative: str, found: list[str]) -> tuple[list[Hypothesis], str]:
    """Drop "healthy" to zero confidence (saying why) and rewrite the narrative if it said healthy."""
    if not found:
        return ranked, narrative
    why = "; ".join(found)
    was_healthy = bool(ranked) and ranked[0].category == Category.HEALTHY
    kept = [h for h in ranked if h.category != Category.HEALTHY]
    demoted = [h.model_copy(update={"confidence": 0.0, "against": [*h.against, f"the alert's own signal is far "
                                                                              f"outside its objective: {why}"]})
               for h in ranked if h.category == Category.HEALTHY]
    out = kept + demoted
    if not was_healthy:
        return out, narrative
    top = out[0] if out else None
    if top is not None and top.category != Category.HEALTHY and top.confidence >= MIN_CONFIDENCE:
        text = (f"Not healthy: {why}. Most likely: {top.title} ({top.confidence:.0%}). Evidence: "
                + "; ".join(top.supporting[:4]) + ".")
    else:
        best = f" The strongest explanation, {top.title}, has only {top.confidence:.0%} confidence." if top else ""
        text = (f"Inconclusive: {why}, yet no known failure mode explains it.{best} "
                "Page a human with the evidence below.")
    return out, text
