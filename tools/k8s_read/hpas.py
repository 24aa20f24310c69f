"""HorizontalPodAutoscalers (autoscaling/v2) reduced: bounds, current vs desired, metrics, conditions.

What reveals trouble: desired pinned at max (capacity exhausted), ScalingLimited, a metric the HPA
cannot read (ScalingActive False), and short stabilization windows (thrash).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import Condition, Out, conditions, parse_time


class HpaMetric(Out):
    type: str
    name: UntrustedStr
    current: str | None = None
    target: str | None = None


class HpaInfo(Out):
    namespace: str
    name: str
    target: str = Field(description="kind/name of the scaled workload.")
    min_replicas: int
    max_replicas: int
    current_replicas: int
    desired_replicas: int
    at_max: bool = Field(description="Desired replicas at the maximum: the autoscaler cannot add capacity.")
    last_scale_time: dt.datetime | None = None
    scale_up_stabilization_s: int | None = None
    scale_down_stabilization_s: int | None = None
    metrics: list[HpaMetric] = Field(default_factory=list)
    problems: list[Condition] = Field(default_factory=list,
                                      description="AbleToScale/ScalingActive not True, or ScalingLimited True.")


def _target(t: Mapping[str, Any] | None) -> str | None:
    if not t:
        return None
    for key in ("averageUtilization", "averageValue", "value"):
        if t.get(key) is not None:
            return f"{t[key]}{'%' if key == 'averageUtilization' else ''}"
    return None


def _metric_name(spec: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    kind = str(spec.get("type", ""))
    body = spec.get(kind[:1].lower() + kind[1:]) or {}
    if kind == "Resource" or kind == "ContainerResource":
        return str(body.get("name", "")), body
    return str((body.get("metric") or {}).get("name", "")), body


def reduce_hpa(hpa: Mapping[str, Any], *, limit: int) -> HpaInfo:
    meta = hpa.get("metadata") or {}
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    current_by_name = {}
    for m in status.get("currentMetrics") or []:
        name, body = _metric_name(m)
        current_by_name[name] = _target(body.get("current"))
    metrics = []
    for m in spec.get("metrics") or []:
        name, body = _metric_name(m)
        metrics.append(HpaMetric(type=str(m.get("type", "")), name=name, current=current_by_name.get(name),
                                 target=_target(body.get("target"))))
    behavior = spec.get("behavior") or {}
    conds = conditions(status.get("conditions"), limit)
    problems = [c for c in conds if (c.type == "ScalingLimited") == (c.status == "True")]
    max_r = int(spec.get("maxReplicas") or 0)
    desired = int(status.get("desiredReplicas") or 0)
    return HpaInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        target=f"{ref.get('kind', '?')}/{ref.get('name', '?')}",
        min_replicas=int(spec.get("minReplicas") or 1),
        max_replicas=max_r,
        current_replicas=int(status.get("currentReplicas") or 0),
        desired_replicas=desired,
        at_max=max_r > 0 and desired >= max_r,
        last_scale_time=parse_time(status.get("lastScaleTime")),
        scale_up_stabilization_s=(behavior.get("scaleUp") or {}).get("stabilizationWindowSeconds"),
        scale_down_stabilization_s=(behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds"),
        metrics=metrics,
        problems=problems,
    )
