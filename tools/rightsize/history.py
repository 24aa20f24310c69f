"""The `rightsize_fleet_history` read tool: weeks of per-workload history in a fixed number of queries.

It runs the families of `tools.rightsize.queries` (each aggregated by workload at the source) over
one time axis and returns, per workload, aligned series (NaN where there was no data). The
engine that turns them into recommendations and costs is pure code in `agent.rightsize`; this module
only reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tools.base import Risk, ToolInput, ToolResult, ToolSpec, UtcDatetime
from tools.prometheus.client import PrometheusClient, QueryData, choose_step
from tools.prometheus.errors import PrometheusError
from tools.rightsize.queries import WorkloadLabels, families, ksm_label

NAN = math.nan
MAX_WINDOW_S = 30 * 86400


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m" if s % 60 == 0 else f"{s}s"


class HistoryInput(ToolInput):
    window_s: float = Field(default=14 * 86400, ge=600, le=MAX_WINDOW_S,
                            description="History to read, seconds before `end` (default 14 days).")
    end: UtcDatetime | None = Field(default=None, description="End of the history (default now).")
    step_s: float | None = Field(default=None, ge=60, le=86400,
                                 description="Resolution; default: the window over at most max_points steps, "
                                             "at least 5 minutes.")
    namespaces: list[str] = Field(default_factory=list, max_length=200,
                                  description="Only these namespaces (default: every namespace with workloads).")
    workload_label: str = Field(default="app.kubernetes.io/name", max_length=200,
                                description="Pod label naming the workload (its Deployment).")
    model_label: str = Field(default="model", max_length=200, description="Pod label naming the served model.")
    team_label: str = Field(default="team", max_length=200, description="Pod label naming the owning team.")
    rate_window: str = Field(default="5m", pattern=r"^[0-9]+[smh]$",
                             description="Window of the short rates whose peak is kept within each step.")
    concurrency: int = Field(default=4, ge=1, le=16, description="Queries in flight at once.")


class WorkloadHistory(BaseModel):
    """One workload's aligned series (one value per step of `FleetHistory.times`, NaN = no data)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    name: str
    model: str = ""
    team: str = ""
    demand_rps: list[float]
    demand_peak_rps: list[float]
    replicas: list[float]
    latency_p95_s: list[float]
    queue_max: list[float]
    kv_cache_max: list[float]
    gpu_busy: list[float]
    gpu_memory_mib: list[float]
    tokens: list[float]
    points: list[float]
    cpu_usage_cores: list[float]
    memory_usage_bytes: list[float]
    gpus_by_instance: dict[str, list[float]] = Field(default_factory=dict,
                                                     description="GPUs requested per step, by node instance type.")
    cpus_by_instance: dict[str, list[float]] = Field(default_factory=dict)
    cpu_request: float | None = Field(default=None, description="Cores per replica now.")
    memory_request_bytes: float | None = None
    gpus_per_replica: float | None = None
    spec_replicas: int | None = Field(default=None, description="Desired replicas of the Deployment now.")
    oom_kills: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class FleetHistory(ToolResult):
    start: dt.datetime
    end: dt.datetime
    step_s: float
    times: list[float] = Field(description="Unix seconds of each step (the end of the interval it covers).")
    workloads: list[WorkloadHistory]
    nodes_by_instance: dict[str, list[float]] = Field(default_factory=dict)
    queries: int = Field(description="Prometheus queries issued.")
    query_seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)


_SERIES_FIELDS = {"demand": "demand_rps", "demand_peak": "demand_peak_rps", "replicas": "replicas",
                  "latency_p95": "latency_p95_s", "queue": "queue_max", "kv_cache": "kv_cache_max",
                  "gpu_busy": "gpu_busy", "gpu_memory": "gpu_memory_mib", "tokens": "tokens", "points": "points",
                  "cpu_usage": "cpu_usage_cores", "memory_usage": "memory_usage_bytes"}


async def fleet_history(client: PrometheusClient, params: HistoryInput) -> FleetHistory:
    end = params.end or dt.datetime.now(dt.UTC)
    range_s = params.window_s
    step = choose_step(range_s, requested_s=params.step_s, min_step_s=max(300.0, client.settings.scrape_interval_s),
                       max_points=client.settings.max_points)
    end_ts = math.floor(end.timestamp() / step) * step  # aligned, so repeated reports share steps
    n = max(1, int(range_s // step))
    start_ts = end_ts - (n - 1) * step
    times = [start_ts + k * step for k in range(n)]
    labels = WorkloadLabels(params.workload_label, params.model_label, params.team_label)
    fams = families(labels, step=_duration(step), rate_window=params.rate_window,
                    namespaces=tuple(params.namespaces))
    start_dt = dt.datetime.fromtimestamp(start_ts, dt.UTC)
    end_dt = dt.datetime.fromtimestamp(end_ts, dt.UTC)
    sem = asyncio.Semaphore(params.concurrency)
    t0 = time.monotonic()

    async def run(f: Any) -> tuple[str, QueryData]:
        async with sem:
            try:
                if f.kind == "range":
                    out = await client.query_range(f.expr.text, start_dt, end_dt, step_s=step)
                    return f.name, out.data
                return f.name, await client.query(f.expr.text, at=end)  # the state now, not at the last step
            except PrometheusError as e:
                raise type(e)(f"rightsize history, family {f.name!r} ({f.what}): {e}") from e

    answers = dict(await asyncio.gather(*(run(f) for f in fams)))
    index = {t: i for i, t in enumerate(times)}
    wl_label, model_l, team_l = labels.wl, ksm_label(labels.model), ksm_label(labels.team)
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(ns: str, name: str) -> dict[str, Any]:
        r = rows.get((ns, name))
        if r is None:
            r = rows[(ns, name)] = {"namespace": ns, "name": name, "gpus_by_instance": {}, "cpus_by_instance": {},
                                    **{f: [NAN] * n for f in _SERIES_FIELDS.values()}}
        return r

    def align(samples: list[tuple[float, float]]) -> list[float]:
        out = [NAN] * n
        for t, v in samples:
            i = index.get(t)
            if i is None:  # tolerate float drift in timestamps
                i = round((t - start_ts) / step)
                if not 0 <= i < n:
                    continue
            out[i] = v
        return out

    for fam, fld in _SERIES_FIELDS.items():
        for s in answers[fam].series:
            ns, name = s.labels.get("namespace", ""), s.labels.get(wl_label, "")
            if ns and name:
                row(ns, name)[fld] = align(s.samples)
    for s in answers["allocation"].series:
        ns, name = s.labels.get("namespace", ""), s.labels.get(wl_label, "")
        it = s.labels.get("label_node_kubernetes_io_instance_type", "") or "unknown"
        if not (ns and name):
            continue
        r = row(ns, name)
        r["model"] = r.get("model") or s.labels.get(model_l, "")
        r["team"] = r.get("team") or s.labels.get(team_l, "")
        target = r["gpus_by_instance"] if s.labels.get("resource") == "nvidia_com_gpu" else r["cpus_by_instance"]
        target[it] = _add(target.get(it), align(s.samples))
    for s in answers["requests"].series:
        ns, name = s.labels.get("namespace", ""), s.labels.get(wl_label, "")
        if not (ns and name):
            continue
        r = row(ns, name)
        r["model"] = s.labels.get(model_l) or r.get("model", "")
        r["team"] = s.labels.get(team_l) or r.get("team", "")
        v = s.samples[-1][1]
        key = {"cpu": "cpu_request", "memory": "memory_request_bytes",
               "nvidia_com_gpu": "gpus_per_replica"}.get(s.labels.get("resource", ""))
        if key:
            r[key] = v
    spec = {(s.labels.get("namespace", ""), s.labels.get("deployment", "")): int(s.samples[-1][1])
            for s in answers["spec_replicas"].series}
    for (ns, name), r in rows.items():
        if (ns, name) in spec:
            r["spec_replicas"] = spec[(ns, name)]
    for s in answers["oom_kills"].series:
        ns, name = s.labels.get("namespace", ""), s.labels.get(wl_label, "")
        if (ns, name) in rows:
            rows[(ns, name)]["oom_kills"] = int(s.samples[-1][1])
    nodes = {s.labels.get("label_node_kubernetes_io_instance_type", "unknown"): align(s.samples)
             for s in answers["nodes"].series}
    notes = []
    if not any(s.series for s in (answers["cpu_usage"], answers["memory_usage"])):
        notes.append("no container CPU/memory usage series (cAdvisor): CPU and memory requests are not sized")
    return FleetHistory(start=start_dt, end=end_dt, step_s=step, times=times,
                        workloads=[WorkloadHistory.model_validate(r) for _, r in sorted(rows.items())],
                        nodes_by_instance=nodes, queries=len(fams), query_seconds=round(time.monotonic() - t0, 3),
                        notes=notes)


def _add(a: list[float] | None, b: list[float]) -> list[float]:
    if a is None:
        return b
    return [(0.0 if math.isnan(x) else x) + (0.0 if math.isnan(y) else y) if not (math.isnan(x) and math.isnan(y))
            else NAN for x, y in zip(a, b, strict=True)]


TOOLS: list[ToolSpec[Any, Any]] = [
    ToolSpec(
        name="rightsize_fleet_history",
        toolset="rightsize/history",
        risk=Risk.READ,
        description="Per-workload serving history for right-sizing and cost: demand, replicas, latency, queue, "
                    "KV cache, GPU busy, GPU allocation by instance type, tokens, CPU/memory usage, aligned on one "
                    "time axis. A fixed number of aggregated Prometheus queries whatever the fleet size.",
        input=HistoryInput,
        output=FleetHistory,
        fn=fleet_history,
        client="prometheus",
    ),
]
