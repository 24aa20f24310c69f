"""Serving workloads (Deployments and StatefulSets) reduced: GPUs, replicas, model labels, rollout state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import (
    Condition,
    ModelLabels,
    Out,
    clip,
    conditions,
    model_labels,
    parse_time,
    visible_annotations,
    visible_labels,
)
from tools.k8s_read.resources import pod_gpus

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
MAX_ARGS = 40


class WorkloadInfo(Out):
    kind: Literal["Deployment", "StatefulSet"]
    namespace: str
    name: str
    labels: ModelLabels
    gpus_per_replica: int
    gpu_resource: str | None = None
    replicas: int = Field(description="Desired replicas (spec).")
    ready_replicas: int = 0
    available_replicas: int = 0
    updated_replicas: int = 0
    unavailable_replicas: int = 0
    gpus_requested: int = Field(description="replicas × gpus_per_replica: GPUs this workload holds when scaled up.")
    images: list[UntrustedStr]
    revision: int | None = Field(default=None, description="Current Deployment revision.")
    paused: bool = False
    created_at: dt.datetime | None = None
    rollout_complete: bool = Field(description="Every replica updated and available, and the spec observed.")
    problems: list[Condition] = Field(default_factory=list, description="Conditions that are not healthy.")


class ContainerSpecInfo(Out):
    name: str
    image: UntrustedStr
    args: list[UntrustedStr] = Field(default_factory=list, description="Command-line arguments (engine settings such "
                                                                       "as --max-model-len live here).")
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class WorkloadDetail(WorkloadInfo):
    selector: dict[str, UntrustedStr] = Field(default_factory=dict)
    strategy: str | None = None
    max_surge: str | None = None
    max_unavailable: str | None = None
    progress_deadline_s: int | None = None
    revision_history_limit: int | None = None
    node_selector: dict[str, UntrustedStr] = Field(default_factory=dict)
    annotations: dict[str, UntrustedStr] = Field(default_factory=dict)
    other_labels: dict[str, UntrustedStr] = Field(
        default_factory=dict, description="The object's labels beyond the serving ones in `labels` (anyone who "
                                          "can edit the object can write them: untrusted).")
    containers: list[ContainerSpecInfo]
    conditions: list[Condition] = Field(default_factory=list)


def _unhealthy(c: Condition) -> bool:
    if c.type == "ReplicaFailure":
        return c.status == "True"
    if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded":
        return True
    return c.status != "True"


def reduce_workload(obj: Mapping[str, Any], *, kind: Literal["Deployment", "StatefulSet"],
                    gpu_resources: Iterable[str], limit: int) -> WorkloadInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    gpus, gpu_name = pod_gpus(pod_spec, gpu_resources)
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    unavailable = int(status.get("unavailableReplicas") or max(desired - available, 0))
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    conds = conditions(status.get("conditions"), limit)
    revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
    return WorkloadInfo(
        kind=kind,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        labels=model_labels((template.get("metadata") or {}).get("labels"), meta.get("labels")),
        gpus_per_replica=gpus,
        gpu_resource=gpu_name,
        replicas=desired,
        ready_replicas=ready,
        available_replicas=available,
        updated_replicas=updated,
        unavailable_replicas=unavailable,
        gpus_requested=desired * gpus,
        images=[str(c.get("image", "")) for c in pod_spec.get("containers") or []],
        revision=int(revision) if revision and str(revision).isdigit() else None,
        paused=bool(spec.get("paused")),
        created_at=parse_time(meta.get("creationTimestamp")),
        rollout_complete=observed and updated >= desired and available >= desired,
        problems=[c for c in conds if _unhealthy(c)],
    )


def reduce_workload_detail(obj: Mapping[str, Any], *, kind: Literal["Deployment", "StatefulSet"],
                           gpu_resources: Iterable[str], limit: int) -> WorkloadDetail:
    info = reduce_workload(obj, kind=kind, gpu_resources=gpu_resources, limit=limit)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    strategy = spec.get("strategy") or spec.get("updateStrategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    containers = [
        ContainerSpecInfo(
            name=str(c.get("name", "")), image=str(c.get("image", "")),
            args=[clip(a, limit) for a in [*(c.get("command") or []), *(c.get("args") or [])][:MAX_ARGS]],
            requests={k: str(v) for k, v in ((c.get("resources") or {}).get("requests") or {}).items()},
            limits={k: str(v) for k, v in ((c.get("resources") or {}).get("limits") or {}).items()},
        )
        for c in pod_spec.get("containers") or []
    ]
    return WorkloadDetail(
        **info.model_dump(),
        selector={str(k): str(v) for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()},
        strategy=strategy.get("type"),
        max_surge=str(rolling["maxSurge"]) if rolling.get("maxSurge") is not None else None,
        max_unavailable=str(rolling["maxUnavailable"]) if rolling.get("maxUnavailable") is not None else None,
        progress_deadline_s=spec.get("progressDeadlineSeconds"),
        revision_history_limit=spec.get("revisionHistoryLimit"),
        node_selector={str(k): str(v) for k, v in (pod_spec.get("nodeSelector") or {}).items()},
        annotations=visible_annotations(meta.get("annotations"), limit),
        other_labels=visible_labels(meta.get("labels"), limit),
        containers=containers,
        conditions=conditions((obj.get("status") or {}).get("conditions"), limit),
    )


def is_serving(info: WorkloadInfo) -> bool:
    """A workload that serves a model: it holds GPUs or carries serving labels."""
    return info.gpus_per_replica > 0 or info.labels.serving_runtime is not None or info.labels.model is not None

