"""Nodes reduced for GPU triage: GPU capacity against allocatable, product, pool, conditions, taints.

Allocatable GPUs below capacity means the device plugin lost GPUs (an XID 79 "fell off the bus" looks
like this); a node that is not Ready, cordoned or under pressure is named as such.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import Condition, Out, clip, conditions, parse_time
from tools.k8s_read.resources import gpus_in, quantity

GPU_PRODUCT_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator",
                      "karpenter.k8s.aws/instance-gpu-name")
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
ZONE_LABEL = "topology.kubernetes.io/zone"


class Taint(Out):
    key: UntrustedStr
    value: UntrustedStr | None = None
    effect: str


class NodeInfo(Out):
    name: str
    ready: bool
    unschedulable: bool = Field(description="Cordoned (spec.unschedulable).")
    gpu_capacity: int
    gpu_allocatable: int
    gpus_missing: int = Field(description="capacity − allocatable: GPUs the node has but cannot offer.")
    gpu_requested: int | None = Field(default=None, description="GPUs requested by pods running on the node.")
    gpu_resource: str | None = None
    gpu_product: UntrustedStr | None = None
    gpu_memory_mib: int | None = None
    instance_type: UntrustedStr | None = None
    pool: UntrustedStr | None = None
    zone: UntrustedStr | None = None
    cpu_allocatable: str | None = None
    memory_allocatable: str | None = None
    created_at: dt.datetime | None = None
    problems: list[Condition] = Field(default_factory=list,
                                      description="Ready not True, or a pressure/unavailable condition True.")
    taints: list[Taint] = Field(default_factory=list)


def _first(labels: Mapping[str, str], keys: Iterable[str]) -> str | None:
    return next((str(labels[k]) for k in keys if labels.get(k)), None)


def reduce_node(node: Mapping[str, Any], *, gpu_resources: Iterable[str], pool_labels: Iterable[str], limit: int,
                gpu_requested: int | None = None) -> NodeInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels = meta.get("labels") or {}
    gpu_resources = tuple(gpu_resources)
    capacity, gpu_name = gpus_in(status.get("capacity"), gpu_resources)
    allocatable, _ = gpus_in(status.get("allocatable"), gpu_resources)
    conds = conditions(status.get("conditions"), limit)
    ready = any(c.type == "Ready" and c.status == "True" for c in conds)
    problems = [c for c in conds if (c.type == "Ready") != (c.status == "True")]
    mem = labels.get("nvidia.com/gpu.memory")
    alloc = status.get("allocatable") or {}
    return NodeInfo(
        name=str(meta.get("name", "")),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
        gpu_capacity=capacity,
        gpu_allocatable=allocatable,
        gpus_missing=max(capacity - allocatable, 0),
        gpu_requested=gpu_requested,
        gpu_resource=gpu_name,
        gpu_product=_first(labels, GPU_PRODUCT_LABELS),
        gpu_memory_mib=int(mem) if mem and str(mem).isdigit() else None,
        instance_type=_first(labels, INSTANCE_TYPE_LABELS),
        pool=_first(labels, pool_labels),
        zone=labels.get(ZONE_LABEL),
        cpu_allocatable=str(alloc["cpu"]) if "cpu" in alloc else None,
        memory_allocatable=_gib(alloc.get("memory")),
        created_at=parse_time(meta.get("creationTimestamp")),
        problems=problems,
        taints=[Taint(key=clip(t.get("key"), limit), value=clip(t["value"], limit) if t.get("value") else None,
                      effect=str(t.get("effect", ""))) for t in spec.get("taints") or []],
    )


def _gib(value: Any) -> str | None:
    if value is None:
        return None
    return f"{quantity(value) / (1 << 30):.1f}Gi"


def trouble_key(n: NodeInfo) -> tuple[int, str]:
    """Sort key: nodes with problems (not ready, cordoned, GPUs missing) first, then by name."""
    troubled = not n.ready or n.unschedulable or n.gpus_missing > 0 or bool(n.problems)
    return (0 if troubled else 1, n.name)
