"""Signals: 14 days of history that agree with the live simulator, and CloudWatch through moto."""

from __future__ import annotations

import time
from typing import Any

import boto3

from tests.integration.promql import query, query_range, wait_until

DAY = 86400


def test_fourteen_days_of_dcgm_vllm_and_kube_series(sandbox: dict[str, Any]) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    end = time.time()
    start = end - 14 * DAY
    for promql in (
        'avg(DCGM_FI_DEV_GPU_UTIL)',
        'sum(rate(vllm:generation_tokens_total[10m]))',
        'sum(kube_pod_container_resource_requests{resource="nvidia_com_gpu"})',
    ):
        series = query_range(prom, promql, start, end, 3600)
        assert series, f"no data for {promql}"
        ts = [float(t) for t, _ in series[0]["values"]]
        assert ts[0] <= start + 2 * 3600, f"{promql}: history starts {(ts[0] - start) / 3600:.1f}h late"
        assert ts[-1] >= end - 3600, f"{promql}: no recent data"
        assert len(ts) >= 14 * 24 - 2, f"{promql}: gaps in history ({len(ts)} hourly points)"


def test_history_has_a_diurnal_shape(sandbox: dict[str, Any]) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    end = time.time() - 3600
    series = query_range(prom, 'sum(rate(vllm:request_success_total{namespace="llm-prod"}[10m]))',
                         end - 3 * DAY, end, 900)
    values = [float(v) for _, v in series[0]["values"]]
    assert max(values) > 2 * min(values), "traffic should swing between day and night"


def test_live_samples_keep_arriving(sandbox: dict[str, Any]) -> None:
    prom = sandbox["endpoints"]["prometheus"]

    def newest() -> float:
        res = query(prom, 'max(timestamp(vllm:num_requests_running))')
        return float(res[0]["value"][1])

    first = newest()
    wait_until(lambda: newest() > first, 30, "a newer vLLM sample")
    res = query(prom, 'count(up{job=~"fleet-simulator|kube-state-metrics"} == 1)')
    assert float(res[0]["value"][1]) == 2


def test_cloudwatch_series_through_moto(sandbox: dict[str, Any]) -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=sandbox["endpoints"]["cloudwatch"],
                      aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    metrics = cw.list_metrics(Namespace="AWS/ApplicationELB", MetricName="RequestCount")["Metrics"]
    assert metrics, "the simulator publishes load-balancer series per model endpoint"
    dims = metrics[0]["Dimensions"]
    end = time.time()
    resp = cw.get_metric_data(
        MetricDataQueries=[{"Id": "rc", "MetricStat": {
            "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount", "Dimensions": dims},
            "Period": 300, "Stat": "Sum"}}],
        StartTime=end - DAY, EndTime=end,
    )
    values = resp["MetricDataResults"][0]["Values"]
    assert values and sum(values) > 0
    gpu = cw.list_metrics(Namespace="ContainerInsights", MetricName="node_gpu_utilization")["Metrics"]
    assert gpu, "Container Insights GPU utilisation per node"
