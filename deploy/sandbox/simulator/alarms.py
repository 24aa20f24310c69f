"""CloudWatch alarms in the sandbox, and the bridge that turns them into Alertmanager alerts.

Two jobs AWS does that moto's server does not:
- **evaluate**: moto stores alarms (PutMetricAlarm, DescribeAlarms, SetAlarmState) but never evaluates
  them, so `AlarmEvaluator` plays CloudWatch's evaluator for the simple metric alarms the sandbox defines:
  it reads the alarm's metric back from moto with GetMetricStatistics and sets the alarm's state when it
  changes, with a reason in CloudWatch's words.
- **deliver**: a real account routes an alarm through SNS to an HTTPS subscriber; the sandbox's
  `AlarmBridge` polls DescribeAlarms instead and posts each alarm in ALARM to Alertmanager's v2 API as an
  alert, re-posting while it lasts and ending it when the alarm leaves ALARM. Alertmanager then groups and
  routes it to the agent's webhook like any Prometheus alert, so the agent needs no CloudWatch intake.

Neither reads the cluster or the faults: what fires is what the published metrics show.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from deploy.sandbox.simulator.cloudwatch import ALB_NAMESPACE, load_balancer

log = logging.getLogger(__name__)

ALARM_SOURCE = "cloudwatch"
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def alb_5xx_alarm(cluster: str, threshold: float = 20.0) -> dict[str, Any]:
    """PutMetricAlarm arguments for the entry load balancer's own 5xx, as a platform team writes it.

    `threshold` is 5xx answered by the balancer itself per minute; a healthy balancer answers none, so 20
    a minute (a third of a request a second) is already a fault, not noise.
    """
    return {
        "AlarmName": f"{cluster}-inference-alb-elb-5xx",
        "AlarmDescription": "The inference load balancer is answering requests with 5xx of its own",
        "Namespace": ALB_NAMESPACE,
        "MetricName": "HTTPCode_ELB_5XX_Count",
        "Dimensions": [{"Name": "LoadBalancer", "Value": load_balancer(cluster)}],
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": threshold,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "ActionsEnabled": True,
        "Tags": [{"Key": "severity", "Value": "critical"}, {"Key": "cluster", "Value": cluster}],
    }


class AlarmEvaluator:
    """Evaluate moto's metric alarms the way CloudWatch would, and record state changes in moto."""

    def __init__(self, cw: Any) -> None:
        self.cw = cw

    def ensure(self, alarm: dict[str, Any]) -> None:
        self.cw.put_metric_alarm(**alarm)

    def evaluate(self, until: float) -> dict[str, str]:
        """Evaluate every metric alarm over the periods ending at `until` (epoch s); returns name → state."""
        states: dict[str, str] = {}
        for a in self.cw.describe_alarms(AlarmTypes=["MetricAlarm"])["MetricAlarms"]:
            if "MetricName" not in a or a["ComparisonOperator"] not in _COMPARE:
                continue  # metric-math and anomaly alarms are not played here
            period, n = int(a["Period"]), int(a["EvaluationPeriods"])
            end = dt.datetime.fromtimestamp(until // period * period, dt.UTC)
            # GetMetricData, not GetMetricStatistics: moto's GetMetricStatistics also sums metrics that carry
            # more dimensions than asked (every target group under a LoadBalancer), CloudWatch's does not.
            result = self.cw.get_metric_data(
                MetricDataQueries=[{"Id": "m", "MetricStat": {
                    "Metric": {"Namespace": a["Namespace"], "MetricName": a["MetricName"],
                               "Dimensions": a.get("Dimensions", [])},
                    "Period": period, "Stat": a["Statistic"]}}],
                StartTime=end - dt.timedelta(seconds=period * n), EndTime=end - dt.timedelta(seconds=1),
            )["MetricDataResults"][0]
            values = [float(v) for _, v in sorted(zip(result["Timestamps"], result["Values"], strict=True))]
            breach = _COMPARE[a["ComparisonOperator"]]
            breaching = [v for v in values if breach(v, float(a["Threshold"]))]
            missing_breaches = a.get("TreatMissingData") == "breaching"
            if len(breaching) + (n - len(values) if missing_breaches else 0) >= n:
                state = "ALARM"
            elif values or a.get("TreatMissingData") in ("notBreaching", None):
                state = "OK"
            else:
                state = a["StateValue"]
            states[a["AlarmName"]] = state
            if state != a["StateValue"]:
                shown = ", ".join(f"{v:g}" for v in values) or "no datapoints"
                reason = (f"Threshold Crossed: {len(values)} datapoint(s) [{shown}] "
                          f"{'were' if state == 'ALARM' else 'were not'} {a['ComparisonOperator']} "
                          f"the threshold ({float(a['Threshold']):g}).")
                self.cw.set_alarm_state(AlarmName=a["AlarmName"], StateValue=state, StateReason=reason,
                                        StateReasonData=json.dumps({"recentDatapoints": values}))
        return states


def _label(name: str) -> str:
    """A CloudWatch dimension name as a Prometheus label name (`LoadBalancer` → `load_balancer`)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def alert_for(alarm: dict[str, Any], tags: dict[str, str], ends_at: dt.datetime | None = None) -> dict[str, Any]:
    """The Alertmanager v2 alert for a CloudWatch alarm (labels from its metric, dimensions and tags)."""
    labels = {"alertname": alarm["AlarmName"], "source": ALARM_SOURCE, "aws_namespace": alarm.get("Namespace", ""),
              "metric_name": alarm.get("MetricName", ""), "severity": tags.get("severity", "warning")}
    if "cluster" in tags:
        labels["cluster"] = tags["cluster"]
    for d in alarm.get("Dimensions", []):
        labels[_label(d["Name"])] = d["Value"]
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {"summary": alarm.get("AlarmDescription", alarm["AlarmName"]),
                        "description": alarm.get("StateReason", ""),
                        "alarm_arn": alarm.get("AlarmArn", "")},
        "startsAt": alarm["StateUpdatedTimestamp"].astimezone(dt.UTC).isoformat(),
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return alert


class AlarmDeliveryError(RuntimeError):
    """Alertmanager did not take the alerts; the next poll posts them again."""


class AlarmBridge:
    """Post CloudWatch alarms in ALARM to Alertmanager (`POST /api/v2/alerts`); end them when they clear."""

    def __init__(self, cw: Any, alertmanager_url: str, *, timeout_s: float = 5.0) -> None:
        self.cw = cw
        if not alertmanager_url.startswith(("http://", "https://")):
            raise ValueError(f"Alertmanager URL must be http(s), got {alertmanager_url!r}")
        self.url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self._firing: dict[str, dict[str, Any]] = {}  # alarm name → the alert last posted

    def poll(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Post what is in ALARM (again: Alertmanager resolves alerts nobody re-posts) and end what left it.

        Returns the alerts posted. A failed post raises and is retried at the next poll: nothing is lost,
        the alarm is still in ALARM in CloudWatch.
        """
        now = now or dt.datetime.now(dt.UTC)
        alarms = self.cw.describe_alarms(StateValue="ALARM", AlarmTypes=["MetricAlarm"])["MetricAlarms"]
        posted: list[dict[str, Any]] = []
        firing: dict[str, dict[str, Any]] = {}
        for a in alarms:
            tags = {t["Key"]: t["Value"] for t in self.cw.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"]}
            firing[a["AlarmName"]] = alert_for(a, tags)
        for name, alert in self._firing.items():
            if name not in firing:
                posted.append(alert | {"endsAt": now.isoformat()})
        posted.extend(firing.values())
        if posted:
            self._post(posted)
        self._firing = firing
        return posted

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        req = urllib.request.Request(self.url, data=json.dumps(alerts).encode(),  # noqa: S310 - scheme checked
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - scheme checked
                resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            raise AlarmDeliveryError(f"POST {self.url} ({len(alerts)} alerts): HTTP {e.code}") from e
        except OSError as e:
            raise AlarmDeliveryError(f"POST {self.url} ({len(alerts)} alerts): {e}") from e
