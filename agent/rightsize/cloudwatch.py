"""CloudWatch series in the right-sizing history, for workloads measured there.

`rightsize.cloudwatch.workloads` (settings) names the workloads whose GPU utilisation (Container
Insights) and request counts (their ALB target group) are published to CloudWatch. After the
Prometheus history is read, one guarded call of `rightsize_cloudwatch_history` reads those series on
the same time axis, and `merge` puts them into the history where Prometheus has no series for the
signal (or everywhere, for a workload that prefers CloudWatch). Each workload's history then says
where each signal came from (`WorkloadHistory.sources`), and the cost model and the engine use the
merged series without knowing the difference.

CloudWatch is never required: when it cannot be read the history stays Prometheus-only and carries a
note saying CloudWatch was not read and why. Nothing here talks to AWS except through the runner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agent.audit.events import AuditSink
from agent.config import CloudWatchWorkloadConfig, Settings
from agent.guard.runner import ToolRunner
from tools.base import Risk, ToolSpec
from tools.cloudwatch.client import CloudWatchClient
from tools.rightsize.cloudwatch import CloudWatchHistory, WorkloadCloudWatch
from tools.rightsize.history import FleetHistory, WorkloadHistory

TOOL = "rightsize_cloudwatch_history"
# Signal → the history field it fills.
SIGNALS = {"gpu_busy": "gpu_busy", "requests": "demand_rps"}


def _empty(xs: Sequence[float]) -> bool:
    return all(math.isnan(x) for x in xs)


def _needs(h: WorkloadHistory, w: CloudWatchWorkloadConfig) -> dict[str, bool]:
    """Which CloudWatch families this workload should be read for."""
    cw_first = w.prefer == "cloudwatch"
    return {"gpu": w.gpu and (cw_first or _empty(h.gpu_busy)),
            "requests": w.target_group is not None and (cw_first or _empty(h.demand_rps))}


def targets(history: FleetHistory, settings: Settings) -> list[dict[str, Any]]:
    """The tool's `workloads` parameter: configured workloads in the history that need a CloudWatch family."""
    by_key = {h.key: h for h in history.workloads}
    out = []
    for w in settings.rightsize.cloudwatch.workloads:
        h = by_key.get(f"{w.namespace}/{w.name}")
        if h is None:
            continue
        need = _needs(h, w)
        if any(need.values()):
            out.append({"namespace": w.namespace, "name": w.name, "gpu": need["gpu"],
                        "load_balancer": w.load_balancer if need["requests"] else None,
                        "target_group": w.target_group if need["requests"] else None})
    return out


def merge(history: FleetHistory, cw: CloudWatchHistory, settings: Settings) -> FleetHistory:
    """The history with CloudWatch series where Prometheus has none (or where CloudWatch is preferred)."""
    if len(cw.times) != len(history.times) or cw.step_s != history.step_s:
        raise ValueError(f"the CloudWatch history has {len(cw.times)} steps of {cw.step_s}s, the Prometheus one "
                         f"{len(history.times)} of {history.step_s:g}s: they cannot be merged")
    config = {f"{w.namespace}/{w.name}": w for w in settings.rightsize.cloudwatch.workloads}
    read = {r.key: r for r in cw.workloads}
    workloads = []
    for h in history.workloads:
        r, w = read.get(h.key), config.get(h.key)
        workloads.append(_merge_one(h, r, w, cw.step_s) if r is not None and w is not None else h)
    return history.model_copy(update={"workloads": workloads, "notes": [*history.notes, *cw.notes]})


def _merge_one(h: WorkloadHistory, r: WorkloadCloudWatch, w: CloudWatchWorkloadConfig,
               step_s: float) -> WorkloadHistory:
    update: dict[str, Any] = {}
    sources = dict(h.sources)
    candidates = {"gpu_busy": r.gpu_busy,
                  "requests": [x / step_s for x in r.requests] if r.requests is not None else None}
    for signal, series in candidates.items():
        field = SIGNALS[signal]
        if series is None or _empty(series):
            continue
        if w.prefer == "cloudwatch" or _empty(getattr(h, field)):
            update[field] = series
            sources[signal] = "cloudwatch"
    if not update:
        return h
    return h.model_copy(update={**update, "sources": sources})


async def with_cloudwatch(history: FleetHistory, settings: Settings, tools: list[ToolSpec[Any, Any]],
                          audit: AuditSink, *, actor: str, timeout_s: float) -> FleetHistory:
    """Read and merge the CloudWatch series the configured workloads need; a note instead if that fails."""
    cfg = settings.rightsize.cloudwatch
    if not cfg.workloads:
        return history
    wanted = targets(history, settings)
    if not wanted:
        return history
    if settings.cloudwatch is None:
        return _note(history, "CloudWatch was not read: rightsize.cloudwatch lists workloads but the `cloudwatch` "
                              "settings (region, endpoint, credentials) are not set; every series is Prometheus'")
    client = CloudWatchClient(settings.cloudwatch)
    try:
        runner = ToolRunner(tools, {"cloudwatch": client}, audit, max_risk=Risk.READ, timeout_s=timeout_s)
        params: dict[str, Any] = {"end": history.times[-1], "step_s": int(history.step_s),
                                  "steps": len(history.times),
                                  "cluster_name": cfg.cluster_name or settings.kubernetes.cluster,
                                  "workloads": wanted}
        out = await runner.call(TOOL, params, actor=actor)
    finally:
        client.close()
    if not out.ok or not isinstance(out.result, CloudWatchHistory):
        return _note(history, f"CloudWatch was not read ({out.error or 'no result'}); GPU utilisation and "
                              f"requests of {len(wanted)} workload(s) configured for it come from Prometheus only")
    return merge(history, out.result, settings)


def _note(history: FleetHistory, text: str) -> FleetHistory:
    return history.model_copy(update={"notes": [*history.notes, text]})
