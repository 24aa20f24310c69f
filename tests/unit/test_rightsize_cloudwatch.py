"""CloudWatch series in the cost model: real boto3 against moto's server, data published by the sandbox's publisher.

The Prometheus side is a history from the simulator's model (`tests.rightsize_synth`); a workload
"measured in CloudWatch" is one whose Prometheus series are absent. CloudWatch holds what the
sandbox's publisher writes for the same fleet (Container Insights per-workload GPU utilisation, ALB
request counts), read back through the guarded runner.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from agent.audit.events import AuditKind, MemoryAudit
from agent.config import CloudWatchWorkloadConfig, Settings
from agent.rightsize.cloudwatch import with_cloudwatch
from agent.rightsize.cost import cost_report
from agent.rightsize.report import to_markdown
from agent.rightsize.service import analyse
from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator.cloudwatch import CloudWatchPublisher, load_balancer, target_group
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.synthetic import fleet_snapshot
from tests.rightsize_synth import fleet_history
from tests.serving import free_port
from tools.cloudwatch.client import CloudWatchClient
from tools.registry import default_tools
from tools.rightsize.catalog import PriceCatalog
from tools.rightsize.cloudwatch import CloudWatchHistoryInput, cloudwatch_history
from tools.rightsize.history import FleetHistory

pytest_plugins = ("tests.conftest_tools",)

STEP = 1800.0
DAYS = 0.5
END = math.floor(time.time() / STEP) * STEP - STEP  # a whole step in the past, published in full
FLEET = Fleet.load()
CATALOG = PriceCatalog.load(Settings().rightsize.price_catalog)
MEASURED = "chat-lite"  # the workload whose Prometheus series are absent in these tests


@pytest.fixture(scope="module")
def published(moto_endpoint: str) -> str:
    """Half a day of the fleet's CloudWatch metrics, as the sandbox publishes them, ending at END."""
    placement = Placement(FLEET, fleet_snapshot(FLEET, load_prices()))
    CloudWatchPublisher(FLEET, moto_endpoint).backfill(placement, end=END, days=DAYS, log_hours=0,
                                                       progress=lambda _m: None)
    return moto_endpoint


def _workload(name: str, **kw: Any) -> dict[str, Any]:
    w = FLEET.workload(name)
    return {"namespace": w.namespace, "name": w.name, "load_balancer": load_balancer(FLEET.cluster),
            "target_group": target_group(w.namespace, w.name), **kw}


def _settings(endpoint: str | None, workloads: list[dict[str, Any]], **cw: Any) -> Settings:
    aws = None if endpoint is None else {"endpoint_url": endpoint, "region": "us-east-1", "access_key_id": "t",
                                         "secret_access_key": "t", **cw}
    return Settings.model_validate({"cloudwatch": aws, "kubernetes": {"cluster": FLEET.cluster},
                                    "rightsize": {"cloudwatch": {"workloads": workloads}}})


def _history_without_prometheus_series(name: str) -> FleetHistory:
    """The fleet's history with no GPU or request series for `name` (its node has no DCGM exporter and
    nobody scrapes its runtime)."""
    h = fleet_history(FLEET, start=END - DAYS * 86400, days=DAYS, step=STEP)
    assert h.times[-1] == END
    blank = [math.nan] * len(h.times)
    rows = [w.model_copy(update={"gpu_busy": blank, "demand_rps": blank}) if w.name == name else w
            for w in h.workloads]
    return h.model_copy(update={"workloads": rows})


def _cloudwatch_sum(endpoint: str, name: str, metric: str, dims: dict[str, str], stat: str) -> list[float]:
    """What CloudWatch holds, read directly with boto3 (independently of the tool under test)."""
    cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t",
                      aws_secret_access_key="t")
    r = cw.get_metric_statistics(Namespace=name, MetricName=metric,
                                 Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
                                 StartTime=dt.datetime.fromtimestamp(END - DAYS * 86400, dt.UTC),
                                 EndTime=dt.datetime.fromtimestamp(END, dt.UTC), Period=300, Statistics=[stat])
    return [p[stat] for p in r["Datapoints"]]


@pytest.mark.anyio
async def test_a_workload_measured_in_cloudwatch_gets_idle_cost_and_cost_per_request_from_it(published: str) -> None:
    history = _history_without_prometheus_series(MEASURED)
    settings = _settings(published, [_workload(MEASURED), _workload("chat-primary")])
    audit = MemoryAudit()
    merged = await with_cloudwatch(history, settings, default_tools(), audit, actor="test", timeout_s=60)

    calls = [e for e in audit.events if e.kind == AuditKind.TOOL_CALL]
    assert [(e.action, e.decision) for e in calls] == [("rightsize_cloudwatch_history", "allowed")]
    cost = cost_report(merged, CATALOG)
    rows = {w.name: w for w in cost.workloads}
    lite = rows[MEASURED]
    assert lite.source == "cloudwatch" and lite.sources == {"gpu_busy": "cloudwatch", "requests": "cloudwatch"}
    # chat-primary has Prometheus series: configured for CloudWatch, but Prometheus wins and it is not read.
    assert rows["chat-primary"].source == "prometheus" and rows["chat-primary"].sources == {}

    # Requests are what the ALB counted; GPU busy is Container Insights' mean utilisation.
    w = FLEET.workload(MEASURED)
    counted = sum(_cloudwatch_sum(published, "AWS/ApplicationELB", "RequestCount",
                                  {"LoadBalancer": load_balancer(FLEET.cluster),
                                   "TargetGroup": target_group(w.namespace, w.name)}, "Sum"))
    assert counted > 1000
    assert lite.requests == pytest.approx(counted, rel=1e-6)
    assert lite.cost_per_million_requests == pytest.approx(lite.cost / lite.requests * 1e6, rel=1e-3)
    util = _cloudwatch_sum(published, "ContainerInsights", "pod_gpu_utilization",
                           {"ClusterName": FLEET.cluster, "Namespace": w.namespace, "PodName": w.name}, "Average")
    assert lite.gpu_busy_mean == pytest.approx(sum(util) / len(util) / 100, abs=0.01)
    # Idle cost = allocated cost × (1 − busy), step by step, with CloudWatch's busy.
    h = next(x for x in merged.workloads if x.name == MEASURED)
    price = CATALOG.instance_types[FLEET.pool(w.pool).instance_type].price_per_gpu_hour
    expected_idle = sum(g * price * STEP / 3600 * (1 - b) for it, gs in h.gpus_by_instance.items()
                        for g, b in zip(gs, h.gpu_busy, strict=True) if g and not math.isnan(b))
    assert lite.idle_cost == pytest.approx(expected_idle, rel=1e-3) and lite.idle_cost > 0

    # Without CloudWatch the same workload has no idle figure and no requests at all.
    plain = {x.name: x for x in cost_report(history, CATALOG).workloads}[MEASURED]
    assert plain.idle_cost == 0 and plain.requests == 0 and plain.cost_per_million_requests is None

    md = to_markdown(analyse(merged, CATALOG, settings, window="12h"))
    assert f"| {w.namespace}/{MEASURED} | cloudwatch (gpu_busy, requests) |" in md


@pytest.mark.anyio
async def test_the_whole_fleet_from_cloudwatch_is_one_call(published: str) -> None:
    """Every workload preferring CloudWatch: 2 metrics each, still one GetMetricData call."""
    history = fleet_history(FLEET, start=END - DAYS * 86400, days=DAYS, step=STEP)
    settings = _settings(published, [_workload(w.name, prefer="cloudwatch") for w in FLEET.workloads])
    client = CloudWatchClient(settings.cloudwatch)  # type: ignore[arg-type]
    try:
        out = await cloudwatch_history(client, CloudWatchHistoryInput.model_validate({
            "end": END, "step_s": int(STEP), "steps": len(history.times), "cluster_name": FLEET.cluster,
            "workloads": [_workload(w.name) for w in FLEET.workloads]}))
    finally:
        client.close()
    assert out.queries == 2 * len(FLEET.workloads) and out.calls == 1
    assert out.times == history.times
    for row in out.workloads:
        assert row.gpu_busy is not None and row.requests is not None
        assert sum(not math.isnan(x) for x in row.requests) == len(history.times), row.key
        assert all(0 <= x <= 1 for x in row.gpu_busy if not math.isnan(x))

    merged = await with_cloudwatch(history, settings, default_tools(), MemoryAudit(), actor="test", timeout_s=60)
    assert {w.source for w in merged.workloads} == {"cloudwatch"}
    # Both sources describe the same simulated traffic: CloudWatch's demand is close to the model's.
    for before, after in zip(history.workloads, merged.workloads, strict=True):
        a = sum(x for x in before.demand_rps if not math.isnan(x))
        b = sum(x for x in after.demand_rps if not math.isnan(x))
        assert b == pytest.approx(a, rel=0.15), before.key


@pytest.mark.anyio
async def test_cloudwatch_unreachable_leaves_a_prometheus_report_with_a_note_saying_why() -> None:
    history = _history_without_prometheus_series(MEASURED)
    settings = _settings(f"http://127.0.0.1:{free_port()}", [_workload(MEASURED)], max_attempts=1,
                         connect_timeout_s=2)
    audit = MemoryAudit()
    merged = await with_cloudwatch(history, settings, default_tools(), audit, actor="test", timeout_s=30)
    run = analyse(merged, CATALOG, settings, window="12h")
    note = next(n for n in run.notes if n.startswith("CloudWatch was not read"))
    assert "cannot reach the endpoint" in note and "1 workload(s)" in note
    assert {w.source for w in run.cost.workloads} == {"prometheus"}
    assert run.cost.node_cost > 0 and len(run.cost.workloads) == len(FLEET.workloads)
    assert [e.decision for e in audit.events] == ["error"]
    assert f"> note: {note}" in to_markdown(run)


@pytest.mark.anyio
async def test_nothing_is_read_when_prometheus_has_every_series_or_cloudwatch_is_not_configured() -> None:
    history = fleet_history(FLEET, start=END - DAYS * 86400, days=DAYS, step=STEP)
    audit = MemoryAudit()
    settings = _settings("http://127.0.0.1:9", [_workload(MEASURED)])
    assert await with_cloudwatch(history, settings, default_tools(), audit, actor="t", timeout_s=5) == history
    assert audit.events == []  # Prometheus had both series: no call at all
    bare = _history_without_prometheus_series(MEASURED)
    out = await with_cloudwatch(bare, _settings(None, [_workload(MEASURED)]), default_tools(), audit, actor="t",
                                timeout_s=5)
    assert out.notes[-1].startswith("CloudWatch was not read: rightsize.cloudwatch lists workloads but the "
                                    "`cloudwatch` settings")


def test_bad_cloudwatch_declarations_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="need both load_balancer and target_group"):
        CloudWatchWorkloadConfig(namespace="llm-prod", name="chat-lite", target_group="targetgroup/x/1")
    with pytest.raises(ValidationError, match="not a whole number of minutes"):
        CloudWatchHistoryInput.model_validate({"end": END, "step_s": 90, "steps": 3, "cluster_name": "c",
                                               "workloads": [{"namespace": "a", "name": "b"}]})
