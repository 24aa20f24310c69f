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
import re
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tools.base import Risk, ToolInput, ToolResult, ToolSpec, UtcDatetime
from tools.prometheus import promql
from tools.prometheus.client import GridData, PrometheusClient, QueryData, choose_step
from tools.prometheus.errors import PrometheusError
from tools.rightsize.queries import (
    INSTANCE_TYPE,
    TTFT_BUCKET,
    Family,
    WorkloadLabels,
    families,
    ksm_label,
    slo_buckets,
)

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
    ttft_slo_s: list[float] = Field(default_factory=list, max_length=100,
                                    description="TTFT p95 thresholds of the models' SLOs. Given, the TTFT histogram is "
                                                "read only at the buckets around them: the p95 is exact near each "
                                                "threshold and clamped to the nearest bucket bound away from it, so "
                                                "every SLO verdict is the full histogram's at a fraction of the cost. "
                                                "Empty: every bucket, exact p95 everywhere.")
    concurrency: int = Field(default=2, ge=1, le=16, description="Queries in flight at once (Prometheus evaluates "
                             "each on one core; more in flight than it has cores only adds contention).")


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
    latency_p95_s: list[float] = Field(description="TTFT p95 (exact within the bucket bracket of each SLO threshold "
                                                   "when the history was read with `ttft_slo_s`, else everywhere).")
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
    mig_profile: str | None = Field(default=None, description="The MIG profile a replica holds one slice of "
                                    "(`nvidia.com/mig-3g.20gb` → 3g.20gb); None for whole GPUs.")
    spec_replicas: int | None = Field(default=None, description="Desired replicas of the Deployment now.")
    oom_kills: int = 0
    sources: dict[str, str] = Field(default_factory=dict, description="Signals read from somewhere other than "
                                    "Prometheus, e.g. {'gpu_busy': 'cloudwatch'}; absent = Prometheus.")

    @property
    def source(self) -> str:
        """`cloudwatch` when any signal came from CloudWatch, else `prometheus`."""
        return "cloudwatch" if "cloudwatch" in self.sources.values() else "prometheus"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the result a finished task holds (Python 3.11's
        # asyncio.run does on exit), and the full series of a fleet take seconds to print.
        return f"WorkloadHistory({self.key!r}, {len(self.demand_rps)} steps)"


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

    def __repr__(self) -> str:
        return (f"FleetHistory({len(self.workloads)} workloads, {len(self.times)} steps of {self.step_s:g}s, "
                f"{self.queries} queries)")


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
    start_dt = dt.datetime.fromtimestamp(start_ts, dt.UTC)
    end_dt = dt.datetime.fromtimestamp(end_ts, dt.UTC)
    t0 = time.monotonic()
    queries = 0
    buckets: tuple[str, ...] | None = None
    notes: list[str] = []
    if params.ttft_slo_s:
        scope = (promql.any_of("namespace", params.namespaces),) if params.namespaces else ()
        try:
            les = await client.label_values("le", promql.selector(TTFT_BUCKET, *scope).text,
                                            start_dt - dt.timedelta(seconds=step), end_dt)
        except PrometheusError as e:
            raise type(e)(f"rightsize history, TTFT histogram buckets: {e}") from e
        queries += 1
        buckets = slo_buckets(les, params.ttft_slo_s)
        if buckets:
            notes.append(f"TTFT p95 read from the buckets le={','.join(buckets)} around the SLO thresholds "
                         f"({', '.join(f'{t:g}' for t in sorted(set(params.ttft_slo_s)))} s): exact near each "
                         "threshold, clamped to the bracket outside it")
    fams = families(labels, step=_duration(step), rate_window=params.rate_window, window=_duration(range_s),
                    namespaces=tuple(params.namespaces), ttft_buckets=buckets)
    sem = asyncio.Semaphore(params.concurrency)

    async def run(f: Family) -> tuple[str, GridData | QueryData]:
        async with sem:
            try:
                if f.kind == "range":
                    return f.name, await client.query_range_grid(f.expr.text, start_dt, end_dt, step)
                # The state now (not at the last step), over the whole window for the look-up families.
                return f.name, await client.query(f.expr.text, at=end)
            except PrometheusError as e:
                raise type(e)(f"rightsize history, family {f.name!r} ({f.what}): {e}") from e

    answers = dict(await asyncio.gather(*(run(f) for f in fams)))
    queries += len(fams)
    return _assemble(answers, fams, labels, times, step, start_dt, end_dt, round(time.monotonic() - t0, 3),
                     queries, notes)


def _grid(answer: GridData | QueryData) -> GridData:
    assert isinstance(answer, GridData)
    return answer


def _instant(answer: GridData | QueryData) -> QueryData:
    assert isinstance(answer, QueryData)
    return answer


_MIG_RESOURCE = re.compile(r"nvidia_com_mig_([1-7])g_([0-9]+)gb(_me)?")


def mig_profile(resource: str) -> str | None:
    """The MIG profile of a kube-state-metrics resource label (`nvidia_com_mig_3g_20gb` → 3g.20gb), else None."""
    m = _MIG_RESOURCE.fullmatch(resource)
    return f"{m.group(1)}g.{m.group(2)}gb" + ("+me" if m.group(3) else "") if m else None


def mig_sevenths(resource: str) -> int | None:
    """Compute sevenths of a GPU one slice of a MIG resource label holds (`nvidia_com_mig_3g_20gb` → 3)."""
    m = _MIG_RESOURCE.fullmatch(resource)
    return int(m.group(1)) if m else None


def _assemble(answers: dict[str, GridData | QueryData], fams: list[Family], labels: WorkloadLabels,
              times: list[float], step: float, start_dt: dt.datetime, end_dt: dt.datetime, query_seconds: float,
              queries: int, notes: list[str]) -> FleetHistory:
    """Roll the per-pod answers up into one aligned row per workload."""
    n = len(times)
    model_l, team_l = ksm_label(labels.model), ksm_label(labels.team)
    owner: dict[tuple[str, str], tuple[str, str]] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in _instant(answers["pods"]).series:
        ns, pod, wl = s.labels.get("namespace", ""), s.labels.get("pod", ""), s.labels.get(labels.wl, "")
        if ns and pod and wl:
            owner[(ns, pod)] = (ns, wl)
            rows.setdefault((ns, wl), {"namespace": ns, "name": wl, "model": s.labels.get(model_l, ""),
                                       "team": s.labels.get(team_l, ""), "gpus_by_instance": {},
                                       "cpus_by_instance": {}})

    unmapped = 0
    for f in fams:
        field = _SERIES_FIELDS.get(f.name)
        if field is None:
            continue
        groups: dict[tuple[str, str], list[np.ndarray]] = {}
        for g in _grid(answers[f.name]).series:
            key = owner.get((g.labels.get("namespace", ""), g.labels.get("pod", "")))
            if key is None:
                unmapped += 1
                continue
            groups.setdefault(key, []).append(g.values)
        for key, arrays in groups.items():
            rows[key][field] = (arrays[0] if len(arrays) == 1 and f.rollup != "count"
                                else _rollup(f.rollup, np.vstack(arrays))).tolist()
    node_type = {s.labels.get("node", ""): s.labels.get(INSTANCE_TYPE, "") or "unknown"
                 for s in _instant(answers["node_types"]).series}
    alloc: dict[tuple[tuple[str, str], str, str], np.ndarray] = {}
    for g in _grid(answers["allocation"]).series:
        key = owner.get((g.labels.get("namespace", ""), g.labels.get("pod", "")))
        if key is None:
            continue
        it = node_type.get(g.labels.get("node", ""), "unknown")
        k = (key, it, g.labels.get("resource", ""))
        v = np.nan_to_num(g.values)
        alloc[k] = alloc[k] + v if k in alloc else v
    for (key, it, resource), v in alloc.items():
        if (sevenths := mig_sevenths(resource)) is not None:
            # A MIG slice is allocated as its compute sevenths of a GPU, the way its price is split.
            prev = rows[key]["gpus_by_instance"].get(it)
            share = v * sevenths / 7.0
            rows[key]["gpus_by_instance"][it] = (share + np.asarray(prev) if prev is not None else share).tolist()
            continue
        target = "gpus_by_instance" if resource == "nvidia_com_gpu" else "cpus_by_instance"
        prev = rows[key][target].get(it) if target == "gpus_by_instance" else None
        rows[key][target][it] = (v + np.asarray(prev) if prev is not None else v).tolist()
    for s in _instant(answers["requests"]).series:
        key = owner.get((s.labels.get("namespace", ""), s.labels.get("pod", "")))
        resource = s.labels.get("resource", "")
        field = {"cpu": "cpu_request", "memory": "memory_request_bytes",
                 "nvidia_com_gpu": "gpus_per_replica"}.get(resource)
        if key is not None and (profile := mig_profile(resource)) is not None:
            rows[key]["mig_profile"] = profile
            rows[key]["gpus_per_replica"] = max(rows[key].get("gpus_per_replica") or 0.0, 1.0)
        if key is not None and field:
            r = rows[key]
            r[field] = max(r.get(field) or 0.0, s.samples[-1][1])
    spec = {(s.labels.get("namespace", ""), s.labels.get("deployment", "")): int(s.samples[-1][1])
            for s in _instant(answers["spec_replicas"]).series}
    for s in _instant(answers["oom_kills"]).series:
        key = owner.get((s.labels.get("namespace", ""), s.labels.get("pod", "")))
        if key is not None:
            rows[key]["oom_kills"] = rows[key].get("oom_kills", 0) + int(s.samples[-1][1])
    empty = [math.nan] * n
    workloads = []
    for key, r in sorted(rows.items()):
        for field in _SERIES_FIELDS.values():
            r.setdefault(field, empty)
        if key in spec:
            r["spec_replicas"] = spec[key]
        workloads.append(WorkloadHistory.model_validate(r))
    nodes = {g.labels.get(INSTANCE_TYPE, "unknown"): g.values.tolist() for g in _grid(answers["nodes"]).series}
    if not any(_grid(answers[f]).series for f in ("cpu_usage", "memory_usage")):
        notes.append("no container CPU/memory usage series (cAdvisor): CPU and memory requests are not sized")
    if unmapped:
        notes.append(f"{unmapped} pod series had no workload label in kube_pod_labels and were left out")
    return FleetHistory(start=start_dt, end=end_dt, step_s=step, times=times, workloads=workloads,
                        nodes_by_instance=nodes, queries=queries, query_seconds=query_seconds, notes=notes)


def _rollup(how: str, stack: np.ndarray) -> np.ndarray:
    """Combine a workload's pods step by step; a step where no pod had data stays NaN."""
    finite = np.isfinite(stack)
    any_data = finite.any(axis=0)
    if how == "count":
        return np.where(any_data, finite.sum(axis=0).astype(float), np.nan)
    filled = np.where(finite, stack, 0.0)
    if how == "sum":
        out = filled.sum(axis=0)
    elif how == "avg":
        out = filled.sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
    else:
        out = np.where(finite, stack, -np.inf).max(axis=0)
    return np.where(any_data, out, np.nan)


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
