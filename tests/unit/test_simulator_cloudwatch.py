"""CloudWatch from the simulator through moto's real server: ALB, Container Insights, logs."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import moto.server as moto_server  # the sandbox extra; `uv sync --all-extras` installs it
import pytest

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator.cloudwatch import (
    ALB_NAMESPACE,
    CI_NAMESPACE,
    CloudWatchPublisher,
    load_balancer,
    log_group,
    target_group,
)
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.synthetic import fleet_snapshot


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _client(service: Any, endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )


def _sum(cw: Any, name: str, dims: list[dict[str, str]], start: float, end: float) -> float:
    resp = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {"Namespace": ALB_NAMESPACE, "MetricName": name, "Dimensions": dims},
                    "Period": 300,
                    "Stat": "Sum",
                },
            }
        ],
        StartTime=dt.datetime.fromtimestamp(start, dt.UTC),
        EndTime=dt.datetime.fromtimestamp(end, dt.UTC),
    )
    return float(sum(resp["MetricDataResults"][0]["Values"]))


def test_history_and_live_minutes_reach_cloudwatch(endpoint: str) -> None:
    fleet, catalog = Fleet.load(), load_prices()
    placement = Placement(fleet, fleet_snapshot(fleet, catalog))
    pub = CloudWatchPublisher(fleet, endpoint)
    now = time.time()
    stats = pub.backfill(placement, end=now, days=0.25, log_hours=0.5, progress=lambda _m: None)
    assert stats["cloudwatch_datums"] > 0 and stats["cloudwatch_log_events"] > 0
    assert pub.publish(placement, now + 120) > 0

    cw = _client("cloudwatch", endpoint)
    metrics = cw.list_metrics(Namespace=ALB_NAMESPACE, MetricName="RequestCount")["Metrics"]
    groups = {d["Value"] for m in metrics for d in m["Dimensions"] if d["Name"] == "TargetGroup"}
    assert groups == {target_group(w.namespace, w.name) for w in fleet.workloads}
    dims = [
        {"Name": "LoadBalancer", "Value": load_balancer(fleet.cluster)},
        {"Name": "TargetGroup", "Value": target_group("llm-prod", "chat-primary")},
    ]
    assert _sum(cw, "RequestCount", dims, now - 6 * 3600, now + 300) > 1000
    ci = cw.list_metrics(Namespace=CI_NAMESPACE, MetricName="node_gpu_utilization")["Metrics"]
    assert {d["Name"] for d in ci[0]["Dimensions"]} == {"ClusterName", "NodeName", "InstanceId"}
    # Container Insights' per-workload aggregate: PodName is the workload, one metric per GPU workload.
    # (other tests publish to the same moto server under their own cluster names)
    owners = cw.list_metrics(Namespace=CI_NAMESPACE, MetricName="pod_gpu_utilization",
                             Dimensions=[{"Name": "ClusterName", "Value": fleet.cluster}])["Metrics"]
    assert {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in owners} == {
        (("ClusterName", fleet.cluster), ("Namespace", w.namespace), ("PodName", w.name))
        for w in fleet.workloads
        if w.gpus and w.replicas
    }
    pods = cw.list_metrics(Namespace=CI_NAMESPACE, MetricName="container_gpu_utilization")[
        "Metrics"
    ]
    assert {d["Name"] for d in pods[0]["Dimensions"]} == {
        "ClusterName",
        "Namespace",
        "PodName",
        "ContainerName",
    }


def test_bad_and_crashing_versions_show_in_5xx_counts_and_logs(endpoint: str) -> None:
    fleet, catalog = Fleet.load(), load_prices()
    fleet = fleet.model_copy(update={"cluster": "bad-day"})  # its own dimensions and log group
    snap = fleet_snapshot(fleet, catalog, versions={"chat-primary": "2025.07.0"})
    pub = CloudWatchPublisher(fleet, endpoint)
    now = time.time()
    pub.backfill(Placement(fleet, snap), end=now, days=0.1, log_hours=0.2, progress=lambda _m: None)
    cw = _client("cloudwatch", endpoint)
    dims = [
        {"Name": "LoadBalancer", "Value": load_balancer(fleet.cluster)},
        {"Name": "TargetGroup", "Value": target_group("llm-prod", "chat-primary")},
    ]
    requests = _sum(cw, "RequestCount", dims, now - 3 * 3600, now + 300)
    errors = _sum(cw, "HTTPCode_Target_5XX_Count", dims, now - 3 * 3600, now + 300)
    assert 0.05 < errors / requests < 0.1  # the version's 7 % error rate

    oom = fleet_snapshot(fleet, catalog, versions={"chat-primary": "2025.07.1-longctx"})
    pub.publish(Placement(fleet, oom), now + 60)
    logs = _client("logs", endpoint)
    messages = [
        json.loads(e["message"])
        for e in logs.filter_log_events(logGroupName=log_group(fleet.cluster))["events"]
    ]
    crashing = [m for m in messages if "CUDA out of memory" in m["log"]]
    assert crashing and all(
        m["kubernetes"]["labels"]["model-version"] == "2025.07.1-longctx" for m in crashing
    )
    assert all(m["kubernetes"]["pod_name"].startswith("chat-primary") for m in crashing)
    failing = [m for m in messages if '" 500 ' in m["log"]]
    assert failing and all(
        m["kubernetes"]["labels"]["model-version"] == "2025.07.0" for m in failing
    )


def test_live_log_lines_are_searchable_seconds_after_they_are_written_and_shipped_once(endpoint: str) -> None:
    fleet, catalog = Fleet.load(), load_prices()
    fleet = fleet.model_copy(update={"cluster": "live-logs"})
    placement = Placement(fleet, fleet_snapshot(fleet, catalog, versions={"chat-primary": "2025.07.1-longctx"}))
    pub = CloudWatchPublisher(fleet, endpoint)
    logs = _client("logs", endpoint)
    m = (int(time.time()) // 60) * 60 - 300  # a minute boundary in the recent past
    crash_at = (m + 38.5) * 1000  # the engine dies 8.5 s into each 15-s start → crash cycle: :08.5, :23.5, :38.5

    def crash_lines() -> list[int]:
        evs = logs.filter_log_events(logGroupName=log_group(fleet.cluster), filterPattern='"CUDA out of memory"')
        return [e["timestamp"] for e in evs["events"] if e["timestamp"] == crash_at]

    pub.publish_logs(placement, m + 30)
    assert crash_lines() == [], "a line is not shipped before it is written"
    pub.publish_logs(placement, m + 40)
    shipped = crash_lines()
    assert shipped, "the crash line written at :38.5 is searchable by :40"
    pub.publish_logs(placement, m + 45)
    pub.publish(placement, m + 61)
    assert crash_lines() == shipped, "each line is shipped once"
