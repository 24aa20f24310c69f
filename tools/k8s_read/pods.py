"""Pods reduced for triage: phase, readiness, node, restarts, and why containers stopped.

The distinction that matters most for GPU serving: a kernel `OOMKilled` (the container hit its *host*
memory limit; exit 137) is not a CUDA out-of-memory error (the process raises, exits 1, reason `Error`;
the GPU's memory is what ran out). `TerminationKind` names them apart, and says what each means.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import Condition, ModelLabels, Out, clip, conditions, model_labels, parse_time
from tools.k8s_read.resources import pod_gpus

_CUDA_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.IGNORECASE)
_PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


class TerminationKind(enum.StrEnum):
    OOM_KILLED = "oom_killed"
    GPU_OOM = "gpu_oom"
    ERROR_EXIT = "error_exit"
    SIGNAL = "signal"
    COMPLETED = "completed"
    OTHER = "other"


MEANINGS = {
    TerminationKind.OOM_KILLED: "killed by the kernel for exceeding the container's host-memory limit "
                                "(not GPU memory)",
    TerminationKind.GPU_OOM: "the process reported a CUDA out-of-memory error: the model does not fit in GPU memory",
    TerminationKind.ERROR_EXIT: "the process exited with an error; a CUDA out-of-memory error at model load "
                                "exits this way (check the logs), unlike a kernel OOMKilled",
    TerminationKind.SIGNAL: "killed by a signal (137 SIGKILL, e.g. a failed liveness probe; 143 SIGTERM)",
    TerminationKind.COMPLETED: "exited successfully",
    TerminationKind.OTHER: "stopped for another reason",
}


class Termination(Out):
    kind: TerminationKind
    meaning: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    finished_at: dt.datetime | None = None
    message: UntrustedStr | None = Field(default=None, description="Termination message or log tail (untrusted).")


class ContainerInfo(Out):
    name: str
    ready: bool
    restarts: int
    state: str = Field(description="running, waiting or terminated")
    reason: str | None = Field(default=None, description="Waiting/terminated reason, e.g. CrashLoopBackOff.")
    message: UntrustedStr | None = None
    started_at: dt.datetime | None = None
    current_termination: Termination | None = None
    last_termination: Termination | None = Field(default=None,
                                                 description="Why the previous run stopped (the crash-loop cause).")


class PodInfo(Out):
    name: str
    namespace: str
    phase: str
    ready: bool
    node: str | None = None
    restarts: int
    gpus: int = Field(description="GPUs the pod requests.")
    revision: int | None = Field(default=None, description="Deployment revision of the pod's ReplicaSet, if known.")
    created_at: dt.datetime | None = None
    reason: UntrustedStr | None = Field(default=None, description="Pod-level reason, e.g. Evicted.")
    message: UntrustedStr | None = None
    unschedulable: UntrustedStr | None = Field(
        default=None, description="The scheduler's message when it cannot place the pod, e.g. Insufficient "
                                  "nvidia.com/gpu.")
    labels: ModelLabels
    containers: list[ContainerInfo]
    conditions: list[Condition] = Field(default_factory=list, description="Only conditions that are not True.")


class PodCounts(Out):
    """Counts over every pod matched (not only those returned)."""

    total: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    succeeded: int = 0
    ready: int = 0
    not_ready: int = 0
    crashloop: int = Field(default=0, description="Pods with a container in CrashLoopBackOff.")
    image_pull_errors: int = 0
    unschedulable: int = 0
    oom_killed: int = Field(default=0, description="Pods whose container was OOMKilled (host memory).")
    gpu_oom: int = Field(default=0, description="Pods whose termination message shows a CUDA out-of-memory error.")
    error_exit: int = Field(default=0, description="Pods whose container exited with an error code (not a signal).")
    restarts_total: int = 0
    restarts_max: int = 0


def classify(term: Mapping[str, Any] | None, limit: int) -> Termination | None:
    """Name why a container stopped, telling kernel OOMKilled from a CUDA out-of-memory exit."""
    if not term:
        return None
    reason = term.get("reason") or None
    code = term.get("exitCode")
    message = term.get("message") or ""
    if reason == "OOMKilled":
        kind = TerminationKind.OOM_KILLED
    elif _CUDA_OOM.search(message):
        kind = TerminationKind.GPU_OOM
    elif code == 0:
        kind = TerminationKind.COMPLETED
    elif isinstance(code, int) and code > 128:
        kind = TerminationKind.SIGNAL
    elif isinstance(code, int) and code != 0:
        kind = TerminationKind.ERROR_EXIT
    else:
        kind = TerminationKind.OTHER
    return Termination(kind=kind, meaning=MEANINGS[kind], reason=reason, exit_code=code, signal=term.get("signal"),
                       finished_at=parse_time(term.get("finishedAt")),
                       message=clip(message, limit) if message else None)


def _container(status: Mapping[str, Any], limit: int) -> ContainerInfo:
    state = status.get("state") or {}
    name = next((k for k in ("running", "waiting", "terminated") if state.get(k) is not None), "unknown")
    detail = state.get(name) or {}
    return ContainerInfo(
        name=str(status.get("name", "")),
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount") or 0),
        state=name,
        reason=detail.get("reason") or None,
        message=clip(detail["message"], limit) if detail.get("message") else None,
        started_at=parse_time(detail.get("startedAt")),
        current_termination=classify(state.get("terminated"), limit),
        last_termination=classify((status.get("lastState") or {}).get("terminated"), limit),
    )


def reduce_pod(pod: Mapping[str, Any], *, gpu_resources: Iterable[str], limit: int,
               revisions: Mapping[str, int] | None = None) -> PodInfo:
    """One pod, reduced. `revisions` maps pod-template-hash to Deployment revision."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    containers = [_container(c, limit) for c in statuses]
    conds = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    unsched = next((c for c in conds if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"), None)
    gpus, _ = pod_gpus(spec, gpu_resources)
    template_hash = labels.get("pod-template-hash")
    return PodInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        phase=str(status.get("phase", "Unknown")),
        ready=ready,
        node=spec.get("nodeName") or None,
        restarts=sum(c.restarts for c in containers),
        gpus=gpus,
        revision=(revisions or {}).get(template_hash) if template_hash else None,
        created_at=parse_time(meta.get("creationTimestamp")),
        reason=status.get("reason") or None,
        message=clip(status["message"], limit) if status.get("message") else None,
        unschedulable=clip(unsched.get("message", ""), limit) if unsched else None,
        labels=model_labels(labels),
        containers=containers,
        conditions=[c for c in conditions(conds, limit) if c.status != "True"],
    )


def _has(pod: PodInfo, kind: TerminationKind) -> bool:
    return any(t is not None and t.kind == kind
               for c in pod.containers for t in (c.current_termination, c.last_termination))


def count_pods(pods: Iterable[PodInfo]) -> PodCounts:
    c = PodCounts()
    for p in pods:
        c.total += 1
        phase = p.phase.lower()
        if phase in ("running", "pending", "failed", "succeeded"):
            setattr(c, phase, getattr(c, phase) + 1)
        if p.ready:
            c.ready += 1
        elif phase != "succeeded":
            c.not_ready += 1
        reasons = {ct.reason for ct in p.containers}
        c.crashloop += "CrashLoopBackOff" in reasons
        c.image_pull_errors += bool(reasons & _PULL_ERRORS)
        c.unschedulable += p.unschedulable is not None
        c.oom_killed += _has(p, TerminationKind.OOM_KILLED)
        c.gpu_oom += _has(p, TerminationKind.GPU_OOM)
        c.error_exit += _has(p, TerminationKind.ERROR_EXIT)
        c.restarts_total += p.restarts
        c.restarts_max = max(c.restarts_max, p.restarts)
    return c


def trouble_score(p: PodInfo) -> tuple[int, int, str]:
    """Sort key: troubled pods first (not ready, restarting), then by name."""
    return (0 if not p.ready and p.phase != "Succeeded" else 1, -p.restarts, p.name)
