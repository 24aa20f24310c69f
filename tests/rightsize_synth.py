"""Workload histories made from the sandbox simulator's performance model, without Prometheus.

Shared by the right-sizing unit tests and benchmarks: the same physics the sandbox serves (traffic
curves, vLLM/Triton saturation), stepped the way `rightsize_fleet_history` aggregates it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from deploy.sandbox.fleet import Fleet, Workload, load_prices
from deploy.sandbox.simulator import model
from tools.rightsize.history import FleetHistory, WorkloadHistory

SCRAPE_S = 15.0


def workload_history(fleet: Fleet, w: Workload, *, start: float, days: float, step: float = 1800.0,
                     replicas: Callable[[float], int] | None = None, traffic: float = 1.0,
                     instance_type: str | None = None, speed: float | None = None,
                     gpus: int | None = None) -> tuple[list[float], WorkloadHistory]:
    """History of `w` from `start` for `days` (each point is the step ending at its time)."""
    mv = fleet.version(w.model, w.version)
    assert mv is not None
    pool = fleet.pool(w.pool)
    it = instance_type or pool.instance_type
    product = load_prices().instance_types[it].gpu_product or ""
    spd = speed if speed is not None else fleet.gpu_speed.get(product, 1.0)
    g = gpus if gpus is not None else w.gpus
    n = int(days * 86400 // step)
    times = [start + step * (k + 1) for k in range(n)]
    cols: dict[str, list[float]] = {k: [] for k in ("demand", "peak", "rep", "lat", "queue", "kv", "busy", "tok",
                                                     "pts", "alloc")}
    seed = f"{w.namespace}/{w.name}"
    for t in times:
        r = replicas(t) if replicas else w.replicas
        fives = []
        for k in range(int(step // 300)):
            a = t - step + 300 * k
            fives.append(sum(model.demand_rps(w.traffic, a + 60 * j + 30, seed) for j in range(5)) / 5 * traffic)
        avg = sum(fives) / len(fives)
        peak = max(fives)
        cols["demand"].append(avg if r else math.nan)
        cols["peak"].append(peak if r else math.nan)
        cols["rep"].append(float(r) if r else math.nan)
        if not r:
            for k in ("lat", "queue", "kv", "busy", "tok", "pts"):
                cols[k].append(math.nan)
            cols["alloc"].append(0.0)
            continue
        if w.runtime == "vllm":
            sp = model.vllm_signals(mv, spd, peak / r)
            sa = model.vllm_signals(mv, spd, avg / r)
            cols["lat"].append(sp.ttft.quantile(0.95))
            cols["queue"].append(sp.waiting)
            cols["kv"].append(sp.kv_usage)
            cols["busy"].append(min(1.0, sa.gr_active))
            cols["tok"].append(sa.served_rps * r * (mv.prompt_tokens + mv.output_tokens) * step)
        else:
            tp = model.triton_signals(mv, spd, peak / r)
            ta = model.triton_signals(mv, spd, avg / r)
            cols["lat"].append(tp.request_us_per_request / 1e6)
            cols["queue"].append(tp.pending)
            cols["kv"].append(math.nan)
            cols["busy"].append(min(1.0, ta.gr_active))
            cols["tok"].append(0.0)
        cols["pts"].append(step / SCRAPE_S)
        cols["alloc"].append(float(r * g))
    h = WorkloadHistory(
        namespace=w.namespace, name=w.name, model=w.model, team=w.team, demand_rps=cols["demand"],
        demand_peak_rps=cols["peak"], replicas=cols["rep"], latency_p95_s=cols["lat"], queue_max=cols["queue"],
        kv_cache_max=cols["kv"], gpu_busy=cols["busy"], gpu_memory_mib=[math.nan] * n, tokens=cols["tok"],
        points=cols["pts"], cpu_usage_cores=[math.nan] * n, memory_usage_bytes=[math.nan] * n,
        gpus_by_instance={it: cols["alloc"]}, cpus_by_instance={}, cpu_request=None, memory_request_bytes=None,
        gpus_per_replica=float(g), spec_replicas=replicas(times[-1]) if replicas else w.replicas)
    return times, h


def fleet_history(fleet: Fleet, *, start: float, days: float, step: float = 1800.0,
                  overrides: dict[str, dict[str, object]] | None = None) -> FleetHistory:
    """Every workload of `fleet`, with its pools' nodes, as one `FleetHistory`."""
    import datetime as dt

    hs = []
    times: list[float] = []
    for w in fleet.workloads:
        times, h = workload_history(fleet, w, start=start, days=days, step=step,
                                    **(overrides or {}).get(w.name, {}))  # type: ignore[arg-type]
        hs.append(h)
    nodes: dict[str, list[float]] = {}
    for p in fleet.pools:
        nodes[p.instance_type] = [float(p.nodes)] * len(times)
    return FleetHistory(start=dt.datetime.fromtimestamp(times[0] - step, dt.UTC),
                        end=dt.datetime.fromtimestamp(times[-1], dt.UTC), step_s=step, times=times, workloads=hs,
                        nodes_by_instance=nodes, queries=0)
