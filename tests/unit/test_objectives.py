"""A firing critical alert far outside its objective is never answered "healthy": CloudWatch alarms too."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.models import Alert, Category, Hypothesis, Incident, IncidentStatus, Severity
from agent.triage.objectives import alarm_breach, breaches, rule_out_healthy

NOW = dt.datetime(2026, 12, 6, 13, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("reason", "expected"), [
    # CloudWatch's own wording, one and several datapoints
    ("Threshold Crossed: 1 out of the last 1 datapoints [57.0 (06/12/26 13:00:00)] was greater than the threshold "
     "(20.0) (minimum 1 datapoint for OK -> ALARM transition).", (57.0, 20.0)),
    ("Threshold Crossed: 2 datapoints [3.0 (06/12/26 12:59:00), 9.5 (06/12/26 12:58:00)] were greater than or "
     "equal to the threshold (4.0).", (9.5, 4.0)),
    # the sandbox's evaluator
    ("Threshold Crossed: 1 datapoint(s) [57] were GreaterThanThreshold the threshold (20).", (57.0, 20.0)),
    # a "less than" alarm: healthy hosts fell to 0 of a threshold of 2
    ("Threshold Crossed: 1 datapoint [0.0 (06/12/26 13:00:00)] was less than the threshold (2.0).", (0.0, 2.0)),
    # just past the threshold is an alarm, not a breach far outside it
    ("Threshold Crossed: 1 datapoint [25.0 (06/12/26 13:00:00)] was greater than the threshold (20.0).", None),
    ("Threshold Crossed: 1 datapoint [1.5 (06/12/26 13:00:00)] was less than the threshold (2.0).", None),
    ("the alarm fired", None),
    ("Threshold Crossed: no datapoints were received for 1 period and 1 missing datapoint was treated as "
     "[Breaching].", None),
])
def test_a_cloudwatch_state_reason_is_read_for_its_datapoints_and_threshold(
        reason: str, expected: tuple[float, float] | None) -> None:
    assert alarm_breach(reason) == expected


def _incident(severity: str, status: str, reason: str) -> Incident:
    alert = Alert(fingerprint="f1", status=status,
                  labels={"alertname": "prod-alb-elb-5xx", "severity": severity, "source": "cloudwatch"},
                  annotations={"description": reason}, starts_at=NOW)
    return Incident(id="inc-1", group_key="g", status=IncidentStatus(status), title="t",
                    severity=Severity(severity), labels=dict(alert.labels), alerts=[alert], created_at=NOW,
                    updated_at=NOW)


FAR = "Threshold Crossed: 1 datapoint [57.0 (06/12/26 13:00:00)] was greater than the threshold (20.0)."
HEALTHY = Hypothesis(id="healthy", category=Category.HEALTHY, title="the serving fleet is within its normal range",
                     confidence=0.62, supporting=["no model fails more than 0.001 of requests"])


def test_a_critical_alarm_far_past_its_threshold_rules_out_healthy_even_without_a_runbook() -> None:
    found = breaches(_incident("critical", "firing", FAR), [], {})
    assert found == ["prod-alb-elb-5xx: its CloudWatch alarm saw 57 against a threshold of 20"]
    ranked, narrative = rule_out_healthy([HEALTHY], "No anomaly: the serving fleet is within its normal range.", found)
    assert ranked[0].confidence == 0.0
    assert narrative.startswith("Inconclusive: prod-alb-elb-5xx") and "Page a human" in narrative


@pytest.mark.parametrize(("severity", "status"), [("warning", "firing"), ("critical", "resolved")])
def test_a_warning_or_a_resolved_alarm_does_not_overrule_the_reasoner(severity: str, status: str) -> None:
    assert breaches(_incident(severity, status, FAR), [], {}) == []
