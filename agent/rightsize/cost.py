"""The cost model: what each workload's GPU allocation cost, what sat idle, and that it adds up.

Allocation × node-pool price (OpenCost's split): a GPU node's price is divided by its GPUs and each
workload pays for the GPUs it requested, every step; a CPU-only node's price is divided by its
cores. What no workload requested is *unallocated*; of what was allocated, the share whose GPU
engines were not busy is *idle* (allocated but not busy). GPU busy and requests come from the source
the history took them from (Prometheus, or CloudWatch for workloads measured there), and each
workload says which. The per-workload costs plus unallocated reconcile to the node pools' cost;
`reconciliation_error` is the difference, computed from the node inventory independently, so it
shows when allocations and nodes disagree. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.rightsize.catalog import PriceCatalog
from tools.rightsize.history import FleetHistory, WorkloadHistory


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkloadCost(_Model):
    namespace: str
    name: str
    model: str
    team: str
    gpu_hours: float
    cost: float = Field(description="USD over the window.")
    idle_cost: float = Field(description="Allocated but not busy, USD over the window.")
    gpu_busy_mean: float | None
    tokens: float
    cost_per_million_tokens: float | None
    requests: float = Field(default=0.0, description="Requests served over the window.")
    cost_per_million_requests: float | None = None
    source: Literal["prometheus", "cloudwatch"] = Field(
        default="prometheus", description="cloudwatch when any of its series came from CloudWatch.")
    sources: dict[str, str] = Field(default_factory=dict, description="Signal → source, for signals not from "
                                    "Prometheus (gpu_busy, requests).")


class Rollup(_Model):
    key: str
    gpu_hours: float
    cost: float
    idle_cost: float
    tokens: float
    cost_per_million_tokens: float | None
    requests: float = 0.0
    cost_per_million_requests: float | None = None


class CostReport(_Model):
    start: float
    end: float
    hours: float
    currency: str
    node_cost: float = Field(description="What the node pools cost over the window.")
    node_cost_by_instance: dict[str, float]
    workload_cost: float
    unallocated_cost: float = Field(description="Node capacity no workload requested.")
    idle_cost: float = Field(description="Allocated GPUs whose engines were not busy.")
    reconciliation_error: float = Field(description="node_cost − (workload_cost + unallocated_cost).")
    workloads: list[WorkloadCost]
    by_model: list[Rollup]
    by_team: list[Rollup]
    by_namespace: list[Rollup]
    daily_by_model: dict[str, list[float]] = Field(description="Cost per day (UTC) by model, days in `days`.")
    days: list[float] = Field(description="Start of each day, unix seconds.")
    utilization: list[tuple[float, float, float]] = Field(
        default_factory=list, description="(time, GPUs allocated, GPUs busy) across the fleet, each step.")
    notes: list[str] = Field(default_factory=list)


def _v(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _gpu_price(catalog: PriceCatalog, it: str) -> float | None:
    t = catalog.instance_types.get(it)
    return t.price_per_gpu_hour if t is not None and t.gpus else None


def workload_cost(h: WorkloadHistory, catalog: PriceCatalog, step_h: float) -> tuple[WorkloadCost, list[float],
                                                                                    list[float], set[str]]:
    """One workload's cost; also its cost and busy GPUs per step, and instance types missing from the catalog."""
    n = len(h.demand_rps)
    per_step = [0.0] * n
    busy_gpus = [0.0] * n
    gpu_hours = cost = idle = 0.0
    missing: set[str] = set()
    for it, xs in h.gpus_by_instance.items():
        price = _gpu_price(catalog, it)
        if price is None:
            missing.add(it)
            continue
        for i, g in enumerate(xs):
            g = _v(g)
            if not g:
                continue
            c = g * price * step_h
            per_step[i] += c
            gpu_hours += g * step_h
            cost += c
            b = h.gpu_busy[i]
            if not math.isnan(b):
                idle += c * (1.0 - min(max(b, 0.0), 1.0))
                busy_gpus[i] += g * min(max(b, 0.0), 1.0)
    for it, xs in h.cpus_by_instance.items():
        t = catalog.instance_types.get(it)
        if t is None:
            missing.add(it)
            continue
        if t.gpus:
            continue  # a GPU node's price is carried by its GPUs
        for i, c_ in enumerate(xs):
            c = _v(c_) * t.price_per_cpu_hour * step_h
            per_step[i] += c
            cost += c
    tokens = sum(_v(x) for x in h.tokens)
    requests = sum(_v(x) for x in h.demand_rps) * step_h * 3600.0  # mean requests/s per step × its seconds
    busy = [b for b in h.gpu_busy if not math.isnan(b)]
    return (WorkloadCost(namespace=h.namespace, name=h.name, model=h.model or "unknown", team=h.team or "unknown",
                         gpu_hours=round(gpu_hours, 3), cost=round(cost, 4), idle_cost=round(idle, 4),
                         gpu_busy_mean=round(sum(busy) / len(busy), 4) if busy else None, tokens=tokens,
                         cost_per_million_tokens=round(cost / tokens * 1e6, 4) if tokens else None,
                         requests=round(requests, 1),
                         cost_per_million_requests=round(cost / requests * 1e6, 4) if requests >= 1 else None,
                         source="cloudwatch" if h.source == "cloudwatch" else "prometheus",
                         sources=dict(h.sources)),
            per_step, busy_gpus, missing)


def cost_report(history: FleetHistory, catalog: PriceCatalog) -> CostReport:
    times = history.times
    step_h = history.step_s / 3600.0
    n = len(times)
    notes = list(history.notes)
    node_by_it: dict[str, float] = {}
    capacity_cost = [0.0] * n  # node cost per step, for the unallocated figure
    gpu_capacity: dict[str, list[float]] = {}
    for it, counts in history.nodes_by_instance.items():
        t = catalog.instance_types.get(it)
        if t is None:
            notes.append(f"instance type {it} is not in the price catalog: its nodes are not costed")
            continue
        node_by_it[it] = sum(_v(c) * t.price_per_hour * step_h for c in counts)
        gpu_capacity[it] = [_v(c) * (t.gpus or t.cpu) for c in counts]
        for i, c in enumerate(counts):
            capacity_cost[i] += _v(c) * t.price_per_hour * step_h
    rows: list[WorkloadCost] = []
    allocated_units: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    daily: dict[str, list[float]] = defaultdict(list)
    day0 = math.floor(times[0] / 86400) * 86400 if times else 0.0
    days = [day0 + 86400 * k for k in range(int((times[-1] - day0) // 86400) + 1)] if times else []
    util_alloc = [0.0] * n
    util_busy = [0.0] * n
    missing: set[str] = set()
    for h in history.workloads:
        row, per_step, busy, miss = workload_cost(h, catalog, step_h)
        missing |= miss
        rows.append(row)
        series = daily[row.model] or [0.0] * len(days)
        for i, c in enumerate(per_step):
            series[int((times[i] - day0) // 86400)] += c
        daily[row.model] = series
        for it, xs in h.gpus_by_instance.items():
            for i, g in enumerate(xs):
                allocated_units[it][i] += _v(g)
                util_alloc[i] += _v(g)
        for it, xs in h.cpus_by_instance.items():
            t = catalog.instance_types.get(it)
            if t is not None and not t.gpus:
                for i, c in enumerate(xs):
                    allocated_units[it][i] += _v(c)
        for i, b in enumerate(busy):
            util_busy[i] += b
    for it in sorted(missing):
        notes.append(f"instance type {it} is not in the price catalog: allocations on it are not costed")
    unallocated = 0.0
    for it, cap in gpu_capacity.items():
        t = catalog.instance_types[it]
        unit = t.price_per_gpu_hour if t.gpus else t.price_per_cpu_hour
        alloc = allocated_units.get(it, [0.0] * n)
        unallocated += sum((c - a) * unit * step_h for c, a in zip(cap, alloc, strict=True))
    node_cost = sum(node_by_it.values())
    workload_total = sum(r.cost for r in rows)
    return CostReport(
        start=times[0] - history.step_s if times else 0.0, end=times[-1] if times else 0.0, hours=n * step_h,
        currency=catalog.currency, node_cost=round(node_cost, 2),
        node_cost_by_instance={k: round(v, 2) for k, v in sorted(node_by_it.items())},
        workload_cost=round(workload_total, 2), unallocated_cost=round(unallocated, 2),
        idle_cost=round(sum(r.idle_cost for r in rows), 2),
        reconciliation_error=round(node_cost - workload_total - unallocated, 2),
        workloads=sorted(rows, key=lambda r: -r.cost),
        by_model=_rollup(rows, "model"), by_team=_rollup(rows, "team"), by_namespace=_rollup(rows, "namespace"),
        daily_by_model={k: [round(x, 2) for x in v] for k, v in sorted(daily.items())}, days=days,
        utilization=[(t, round(a, 3), round(b, 3)) for t, a, b in zip(times, util_alloc, util_busy, strict=True)],
        notes=notes,
    )


def _rollup(rows: Sequence[WorkloadCost], attr: str) -> list[Rollup]:
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0.0])
    for r in rows:
        a = acc[str(getattr(r, attr))]
        a[0] += r.gpu_hours
        a[1] += r.cost
        a[2] += r.idle_cost
        a[3] += r.tokens
        a[4] += r.requests
    return sorted((Rollup(key=k, gpu_hours=round(v[0], 2), cost=round(v[1], 2), idle_cost=round(v[2], 2),
                          tokens=v[3], cost_per_million_tokens=round(v[1] / v[3] * 1e6, 4) if v[3] else None,
                          requests=round(v[4], 1),
                          cost_per_million_requests=round(v[1] / v[4] * 1e6, 4) if v[4] >= 1 else None)
                   for k, v in acc.items()), key=lambda r: -r.cost)
