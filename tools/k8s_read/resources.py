"""GPU and other resource quantities of pod specs and nodes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

MIG_PREFIX = "nvidia.com/mig-"


def is_gpu_resource(name: str, gpu_resources: Iterable[str]) -> bool:
    return name in gpu_resources or name.startswith(MIG_PREFIX)


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "24Gi", "2") as a number; 0 if unreadable."""
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation):
        return Decimal(0)


def gpus_in(resources: Mapping[str, Any] | None, gpu_resources: Iterable[str]) -> tuple[int, str | None]:
    """GPUs in a requests/limits/capacity map, and which resource name carries them."""
    total = 0
    name: str | None = None
    for key, value in (resources or {}).items():
        if is_gpu_resource(key, gpu_resources):
            total += int(quantity(value))
            name = name or key
    return total, name


def pod_gpus(pod_spec: Mapping[str, Any] | None, gpu_resources: Iterable[str]) -> tuple[int, str | None]:
    """GPUs one pod requests: the sum over its containers (limits count when requests are absent)."""
    total = 0
    name: str | None = None
    for c in (pod_spec or {}).get("containers") or []:
        res = c.get("resources") or {}
        n, rname = gpus_in(res.get("requests"), gpu_resources)
        if n == 0:  # extended resources may be set as limits only; requests then default to them
            n, rname = gpus_in(res.get("limits"), gpu_resources)
        total += n
        name = name or rname
    return total, name
