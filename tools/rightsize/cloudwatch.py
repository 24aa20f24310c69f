"""The `rightsize_cloudwatch_history` read tool: GPU utilisation and request counts of workloads measured in CloudWatch.

Some workloads are measured in CloudWatch rather than (or as well as) Prometheus: GPU nodes running the
CloudWatch agent's Container Insights instead of a scraped DCGM exporter, serving runtimes behind an
ALB whose request counts nobody scrapes. For those, right-sizing reads two families, on the same time
axis as `rightsize_fleet_history` so the caller can put them side by side:

- `ContainerInsights` `pod_gpu_utilization` {ClusterName, Namespace, PodName}: Container Insights
  aggregates a workload's pods under `PodName` = the workload's name (the `FullPodName` dimension
  would name one pod). Average per step, percent → a 0..1 busy ratio.
- `AWS/ApplicationELB` `RequestCount` {LoadBalancer, TargetGroup}: Sum per step → requests per step.

Every metric is named with its full, known dimensions: no ListMetrics sweep (slow on large accounts,
quadratic on moto). The queries of every workload go into GetMetricData calls of up to 500 queries
each, so a fleet of up to 250 workloads with both families costs one call (plus NextToken pages when
the answer exceeds 100,800 points). This module only reads; merging with the Prometheus history is
the agent's (`agent.rightsize.cloudwatch`).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.base import Risk, ToolInput, ToolResult, ToolSpec, UtcDatetime
from tools.cloudwatch import metrics
from tools.cloudwatch.client import CloudWatchClient

CI_NAMESPACE = "ContainerInsights"
POD_GPU_UTILIZATION = "pod_gpu_utilization"
ALB_NAMESPACE = "AWS/ApplicationELB"
REQUEST_COUNT = "RequestCount"
MAX_WORKLOADS = 2000


class CloudWatchTarget(BaseModel):
    """Where one workload's series live in CloudWatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(min_length=1, max_length=63, description="Kubernetes namespace of the workload.")
    name: str = Field(min_length=1, max_length=253, description="The workload (Deployment) name.")
    gpu: bool = Field(default=True, description="Read Container Insights' pod_gpu_utilization for it.")
    load_balancer: str | None = Field(default=None, max_length=255,
                                      description="ALB `LoadBalancer` dimension, e.g. app/k8s-prod-inference/50dc6c4.")
    target_group: str | None = Field(default=None, max_length=255,
                                     description="ALB `TargetGroup` dimension, e.g. targetgroup/llm-chat/73e2d6b.")


class CloudWatchHistoryInput(ToolInput):
    end: UtcDatetime = Field(description="Time of the last step (each step covers the step_s before its time).")
    step_s: int = Field(ge=60, le=86400, description="Step (= CloudWatch period), a multiple of 60 seconds.")
    steps: int = Field(ge=1, le=20_000, description="Number of steps ending at `end`.")
    cluster_name: str = Field(min_length=1, max_length=255, description="Container Insights `ClusterName`.")
    workloads: list[CloudWatchTarget] = Field(min_length=1, max_length=MAX_WORKLOADS,
                                              description="The workloads to read and where their series live.")

    @field_validator("step_s")
    @classmethod
    def _whole_minutes(cls, v: int) -> int:
        if v % 60:
            raise ValueError(f"step_s {v} is not a whole number of minutes (CloudWatch periods above a minute are)")
        return v


class WorkloadCloudWatch(BaseModel):
    """One workload's CloudWatch series, one value per step (NaN = no datapoint); None = not asked for."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    name: str
    gpu_busy: list[float] | None = Field(default=None, description="Mean GPU utilisation of its pods, 0..1.")
    requests: list[float] | None = Field(default=None, description="Requests through its ALB target group per step.")
    status: list[str] = Field(default_factory=list, description="CloudWatch status codes other than Complete.")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class CloudWatchHistory(ToolResult):
    times: list[float] = Field(description="Unix seconds of each step (the end of the interval it covers).")
    step_s: int
    workloads: list[WorkloadCloudWatch]
    queries: int = Field(description="Metrics asked for.")
    calls: int = Field(description="GetMetricData calls made (≤ 500 queries each).")
    query_seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)


async def cloudwatch_history(client: CloudWatchClient, params: CloudWatchHistoryInput) -> CloudWatchHistory:
    step = params.step_s
    end_ts = params.end.timestamp()
    times = [end_ts - (params.steps - 1 - k) * step for k in range(params.steps)]
    specs: list[metrics.MetricSpec] = []
    wanted: list[tuple[int, str]] = []  # (workload index, field) per spec
    notes: list[str] = []
    for i, w in enumerate(params.workloads):
        if w.gpu:
            specs.append(metrics.MetricSpec(CI_NAMESPACE, POD_GPU_UTILIZATION, (
                ("ClusterName", params.cluster_name), ("Namespace", w.namespace), ("PodName", w.name)), "Average"))
            wanted.append((i, "gpu_busy"))
        if w.target_group and w.load_balancer:
            specs.append(metrics.MetricSpec(ALB_NAMESPACE, REQUEST_COUNT, (
                ("LoadBalancer", w.load_balancer), ("TargetGroup", w.target_group)), "Sum"))
            wanted.append((i, "requests"))
        elif w.target_group or w.load_balancer:
            notes.append(f"{w.namespace}/{w.name}: ALB request counts need both load_balancer and target_group")
    calls = 0

    def count() -> None:
        nonlocal calls
        calls += 1

    t0 = time.monotonic()
    # A datapoint is stamped with the start of its period; step k covers (times[k] − step, times[k]].
    start = dt.datetime.fromtimestamp(times[0] - step, dt.UTC)
    stop = dt.datetime.fromtimestamp(times[-1], dt.UTC)
    read = await metrics.get_metric_data(client, specs, start, stop, step, on_call=count) if specs else []
    rows = [WorkloadCloudWatch(namespace=w.namespace, name=w.name) for w in params.workloads]
    n = len(times)
    for (i, field), series in zip(wanted, read, strict=True):
        values = [math.nan] * n
        for ts, v in series.samples:
            k = round((ts + step - times[0]) / step)
            if 0 <= k < n:
                values[k] = v / 100.0 if field == "gpu_busy" else v
        setattr(rows[i], field, values)
        if series.status != "Complete":
            rows[i].status.append(f"{series.spec.label()}: {series.status}")
    missing = [r.key for r in rows if all(
        x is None or all(math.isnan(v) for v in x) for x in (r.gpu_busy, r.requests))]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        notes.append(f"CloudWatch had no datapoints in the window for {shown} (check the cluster name, the "
                     "workload's Container Insights PodName and its ALB dimensions)")
    return CloudWatchHistory(times=times, step_s=step, workloads=rows, queries=len(specs), calls=calls,
                             query_seconds=round(time.monotonic() - t0, 3), notes=notes)


TOOLS: list[ToolSpec[Any, Any]] = [
    ToolSpec(
        name="rightsize_cloudwatch_history",
        toolset="rightsize/history",
        risk=Risk.READ,
        description="GPU utilisation (Container Insights pod_gpu_utilization) and request counts (ALB RequestCount) "
                    "of workloads measured in CloudWatch, one value per step on a given time axis. Batched "
                    "GetMetricData with known dimensions (≤ 500 metrics a call), no ListMetrics.",
        input=CloudWatchHistoryInput,
        output=CloudWatchHistory,
        fn=cloudwatch_history,
        client="cloudwatch",
    ),
]
