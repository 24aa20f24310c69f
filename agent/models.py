"""Typed records that cross the agent's boundaries: alerts, incidents, evidence, hypotheses,
proposed changes and the triage report.

Closed sets are enums. Text that came from outside (alert annotations, labels, event messages, log
lines) is carried as `Untrusted` so every renderer and prompt builder can see it is data.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Untrusted(_Model):
    """Text from outside the agent (an alert annotation, a label, a log line, an event).

    It is evidence, never an instruction: prompts wrap it in a data block, reports quote it.
    """

    source: str = Field(description="Where the text came from, e.g. 'alert.annotations.description'.")
    text: str


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"
    NONE = "none"


class IncidentStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(_Model):
    """One alert of an Alertmanager notification, identified by its fingerprint."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: dt.datetime
    ends_at: dt.datetime | None = None
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


class Incident(_Model):
    """Alerts that belong together (one Alertmanager group, and the groups folded in that name the same
    workload), with the state of their triage."""

    id: str
    group_key: str
    status: IncidentStatus
    title: str
    severity: Severity
    labels: dict[str, str] = Field(description="Labels common to every alert of the incident.")
    alerts: list[Alert]
    created_at: dt.datetime
    updated_at: dt.datetime
    notifications: int = Field(default=1, description="How many webhook deliveries updated this incident.")
    alerts_over_cap: int = Field(default=0, description="New alerts not stored because the incident already "
                                 "held server.max_alerts_per_incident.")
    reopened: int = Field(default=0, description="Times the group resolved and fired again within the flap "
                                                 "window (incidents.FLAP_WINDOW): a flapping alert, one incident.")
    folded_groups: list[str] = Field(default_factory=list, description="Other Alertmanager groups whose alerts "
                                     "named this incident's workload while it was open (server.fold_window_s), "
                                     "folded in: one incident for one cause, however the route groups alerts.")


class EvidenceStatus(enum.StrEnum):
    OK = "ok"
    EMPTY = "empty"  # the query ran and found nothing
    ERROR = "error"  # the tool failed: the evidence is missing, not negative
    SKIPPED = "skipped"  # a parameter the query needs was unknown


class Evidence(_Model):
    """What one evidence query found: the call, the time range and the reduced values."""

    id: str
    tool: str
    title: str
    params: dict[str, Any]
    status: EvidenceStatus
    summary: str = Field(description="One line a human reads: the numbers that matter.")
    features: dict[str, Any] = Field(default_factory=dict,
                                     description="Named facts the rules engine scores (numbers, booleans, names).")
    data: Any = Field(default=None, description="The reduced tool result (bounded).")
    error: str | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    duration_ms: float = 0.0


class Category(enum.StrEnum):
    """Failure modes of GPU model serving (the reference table's rows)."""

    KV_CACHE_SATURATION = "kv_cache_saturation"
    GPU_OOM = "gpu_oom"
    BAD_ROLLOUT = "bad_rollout"
    GPU_HARDWARE = "gpu_hardware"
    GPU_LOST = "gpu_lost"
    AUTOSCALER_THRASH = "autoscaler_thrash"
    IDLE_GPUS = "idle_gpus"
    WRONG_GPU_CLASS = "wrong_gpu_class"
    TRITON_BATCHING = "triton_batching"
    THERMAL_THROTTLING = "thermal_throttling"
    PREFIX_CACHE_REGRESSION = "prefix_cache_regression"
    CONFIG_REGRESSION = "config_regression"  # new serving arguments refuse requests (4xx) the old ones served
    IMAGE_STARTUP = "image_startup"  # new pods cannot start (image pull, container config, readiness)
    HOST_MEMORY = "host_memory"  # the kernel kills the container at its memory limit (OOMKilled)
    CAPACITY = "capacity"  # pods cannot be scheduled: the pool has no free GPUs (outgrown, or nodes taken away)
    HUNG_WORKER = "hung_worker"  # a Ready replica whose engine makes no progress (a rank stuck in a collective)
    UPSTREAM_LB = "upstream_lb"  # the load balancer in front fails requests itself while its targets are healthy
    ROUTING_SHIFT = "routing_shift"  # a route's weights moved traffic onto a backend that cannot carry it
    HEALTHY = "healthy"
    UNKNOWN = "unknown"


class ObjectRef(_Model):
    kind: Literal["Deployment", "Rollout", "Node", "Pod", "HorizontalPodAutoscaler", "Namespace", "Model", "HTTPRoute"]
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.namespace + '/' if self.namespace else ''}{self.name}"


class Hypothesis(_Model):
    id: str
    category: Category
    title: str
    confidence: float = Field(ge=0, le=1)
    culprit: ObjectRef | None = None
    supporting: list[str] = Field(default_factory=list, description="Evidence that supports it, as sentences.")
    against: list[str] = Field(default_factory=list, description="Evidence that speaks against it.")
    missing: list[str] = Field(default_factory=list, description="Evidence that could not be gathered.")
    evidence_ids: list[str] = Field(default_factory=list)


class ActionKind(enum.StrEnum):
    ROLLBACK = "rollback"
    SCALE = "scale"
    DEPLOY = "deploy"
    SET_GPU_RESOURCES = "set_gpu_resources"
    PAUSE_ROLLOUT = "pause_rollout"
    RESUME_ROLLOUT = "resume_rollout"
    PROMOTE_ROLLOUT = "promote_rollout"  # an Argo Rollout paused at a step (or inconclusive): go on
    ABORT_ROLLOUT = "abort_rollout"  # an Argo Rollout's canary: scale it away, stable takes all traffic
    CORDON_NODE = "cordon_node"
    DRAIN_NODE = "drain_node"
    RESTART_POD = "restart_pod"  # delete one pod of a Deployment; its ReplicaSet starts a fresh one
    PAGE_HUMAN = "page_human"  # no safe automated action
    NONE = "none"  # nothing to do


class ProposedAction(_Model):
    """A typed change the agent proposes; executing it is the guarded executor's job, never triage's."""

    kind: ActionKind
    target: ObjectRef | None = None
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="e.g. {'to_revision': 3} or {'replicas': 4}.")
    reason: str
    hypothesis_id: str | None = None


class TriageReport(_Model):
    incident_id: str
    title: str
    summary: str
    status: Literal["anomaly", "no_anomaly", "inconclusive"]
    hypotheses: list[Hypothesis]
    evidence: list[Evidence]
    affected: dict[str, list[str]] = Field(default_factory=dict,
                                           description="models, namespaces, deployments, nodes")
    proposals: list[ProposedAction]
    runbooks: list[str]
    reasoner: str
    untrusted: list[Untrusted] = Field(default_factory=list)
    started: dt.datetime
    finished: dt.datetime
    tool_calls: int = 0
    trace_id: str | None = Field(default=None, description="OpenTelemetry trace of this triage (tracing on).")

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None
