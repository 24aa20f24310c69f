"""CloudWatch evidence for the load-balancer runbook: features across target groups, the alarm's labels."""

from __future__ import annotations

import datetime as dt

from agent.triage.features import extract
from agent.triage.nodes.intake import context_from_labels
from tools.cloudwatch.tools import CloudWatchMetricDataResult, CloudWatchSeries
from tools.timeseries import summarize

END = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _series(group: str, values: list[float]) -> CloudWatchSeries:
    t0 = END.timestamp() - 60 * len(values)
    return CloudWatchSeries(dimensions={"TargetGroup": group}, status="Complete",
                            summary=summarize([(t0 + 60 * i, v) for i, v in enumerate(values)]))


def _result(*series: CloudWatchSeries) -> CloudWatchMetricDataResult:
    return CloudWatchMetricDataResult(namespace="AWS/ApplicationELB", metric_name="UnHealthyHostCount",
                                      stat="Maximum", start=END - dt.timedelta(minutes=15), end=END, period_s=60,
                                      period_reason="asked", metrics_total=len(series), more_available=False,
                                      series=list(series))


def test_an_unhealthy_target_in_any_group_is_seen_not_only_the_first_group() -> None:
    f = extract(_result(_series("tg-a", [0.0] * 10), _series("tg-b", [0.0] * 8 + [2.0, 1.0]),
                        _series("tg-c", [])), {})
    assert f["series"] == 2 and f["max_all"] == 2.0 and f["last_sum"] == 1.0
    assert f["recent"] == 0.0  # the first group's own features are unchanged


def test_the_alarms_load_balancer_label_becomes_context_for_its_queries() -> None:
    ctx = context_from_labels({"alertname": "x-inference-alb-elb-5xx", "load_balancer": "app/k8s-x-inference/0a1b",
                               "cluster": "x", "aws_namespace": "AWS/ApplicationELB"})
    assert ctx == {"load_balancer": "app/k8s-x-inference/0a1b", "cluster": "x"}
