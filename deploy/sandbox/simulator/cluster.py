"""What the sandbox cluster is running, as plain frozen data: pods, nodes, Deployments and faults.

The simulator follows the cluster rather than the fleet file, so a rollback or a scale-out made
through the real API changes the metrics. This module is the only one that talks to the
Kubernetes API, and only to read (list pods, nodes, Deployments and Gateway API HTTPRoutes; get the
faults ConfigMap).
Objects are converted to their JSON shape first and parsed from there, so unit tests build
snapshots from plain dicts through the same code path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from deploy.sandbox.fleet import (
    GPU_RESOURCE,
    INSTANCE_TYPE_LABEL,
    MIG_PREFIX,
    ROUTE_GROUP,
    ROUTE_PLURAL,
    ROUTE_VERSION,
)

log = logging.getLogger(__name__)

FAULTS_NAMESPACE = "opsagent-sandbox"
FAULTS_CONFIGMAP = "faults"
FAULTS_KEY = "faults.json"


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    requests: Mapping[str, float]  # resource name → amount (cores, bytes, count)

    @property
    def gpus(self) -> int:
        return int(self.requests.get(GPU_RESOURCE, 0))

    @property
    def mig_sevenths(self) -> int:
        """Compute sevenths of a GPU held as MIG slices (`nvidia.com/mig-3g.20gb: 1` → 3)."""
        return sum(int(k[len(MIG_PREFIX):].split("g.", 1)[0]) * int(v)
                   for k, v in self.requests.items() if k.startswith(MIG_PREFIX))


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    ip: str
    host_ip: str
    labels: Mapping[str, str]
    node_name: str
    phase: str
    ready: bool
    containers: tuple[Container, ...]
    owner: Owner | None = None
    priority_class: str = ""
    host_network: bool = False

    @property
    def gpu_request(self) -> int:
        return sum(c.gpus for c in self.containers)

    @property
    def mig_share(self) -> float:
        """The share of one GPU's compute the pod holds as MIG slices; 0 when it holds none."""
        return sum(c.mig_sevenths for c in self.containers) / 7.0

    @property
    def container(self) -> str:
        """The serving container: the first one asking for GPUs (or MIG slices), else the first one."""
        for c in self.containers:
            if c.gpus or c.mig_sevenths:
                return c.name
        return self.containers[0].name if self.containers else ""

    @property
    def image(self) -> str:
        for c in self.containers:
            if c.name == self.container:
                return c.image
        return ""


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    capacity: Mapping[str, float]
    allocatable: Mapping[str, float]
    provider_id: str = ""
    internal_ip: str = ""

    @property
    def gpu_capacity(self) -> int:
        return int(self.capacity.get(GPU_RESOURCE, 0))

    @property
    def gpu_allocatable(self) -> int:
        return int(self.allocatable.get(GPU_RESOURCE, 0))

    @property
    def instance_type(self) -> str:
        return self.labels.get(INSTANCE_TYPE_LABEL, "")

    @property
    def instance_id(self) -> str:
        """The EC2 instance id from `aws:///zone/i-...`, as Container Insights reports it."""
        return self.provider_id.rsplit("/", 1)[-1] if self.provider_id else ""


@dataclass(frozen=True)
class Deployment:
    namespace: str
    name: str
    labels: Mapping[str, str]
    replicas: int
    available_replicas: int


@dataclass(frozen=True)
class Faults:
    """What no Kubernetes API can express: outside traffic, driver XID codes, heat from a failed cooling."""

    traffic: Mapping[str, float] = field(default_factory=dict)  # "namespace/workload" → ×
    xid: Mapping[str, int] = field(default_factory=dict)  # node name → last XID
    heat: Mapping[str, float] = field(default_factory=dict)  # node name → extra °C (cooling failure)
    # "namespace/pod" → epoch second its tensor-parallel workers hung (a rank stuck in a collective). Keyed
    # by pod: the replacement a restart creates has another name, and serves.
    hung: Mapping[str, float] = field(default_factory=dict)
    # "namespace/workload" → (epoch second it began, period in seconds): its traffic fault is on for the first
    # half of each period and off for the second (a batch job on a timer), so its alerts resolve and re-fire.
    flap: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Share of the requests reaching the cluster's entry load balancer that the balancer itself answers with
    # a 5xx (an exhausted or misconfigured balancer): the targets never see them and stay healthy.
    elb_5xx_share: float = 0.0

    @classmethod
    def parse(cls, raw: str | None) -> Faults:
        doc = json.loads(raw) if raw else {}
        return cls(
            traffic={str(k): float(v) for k, v in (doc.get("traffic") or {}).items()},
            xid={str(k): int(v) for k, v in (doc.get("xid") or {}).items()},
            heat={str(k): float(v) for k, v in (doc.get("heat") or {}).items()},
            hung={str(k): float(v) for k, v in (doc.get("hung") or {}).items()},
            flap={str(k): (float(v["since"]), float(v["period_s"])) for k, v in (doc.get("flap") or {}).items()},
            elb_5xx_share=float((doc.get("alb") or {}).get("share", 0.0)),
        )

    def traffic_at(self, key: str, t: float) -> float:
        """The traffic multiplier of workload `key` ("namespace/name") at epoch second `t`."""
        mult = self.traffic.get(key, 1.0)
        if key in self.flap:
            since, period = self.flap[key]
            if period > 0 and (t - since) % period >= period / 2:
                return 1.0
        return mult


@dataclass(frozen=True)
class ClusterSnapshot:
    """One consistent-enough read of the cluster (pods, nodes, Deployments, faults)."""

    pods: tuple[Pod, ...]
    nodes: tuple[Node, ...]
    deployments: tuple[Deployment, ...] = ()
    faults: Faults = field(default_factory=Faults)
    # "namespace/route" → backend Service name → weight, summed over the route's rules (Gateway API HTTPRoutes).
    routes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def node(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    @classmethod
    def from_dicts(
        cls,
        pods: Sequence[Mapping[str, Any]],
        nodes: Sequence[Mapping[str, Any]],
        deployments: Sequence[Mapping[str, Any]] = (),
        faults_configmap: Mapping[str, Any] | None = None,
        routes: Sequence[Mapping[str, Any]] = (),
    ) -> ClusterSnapshot:
        """Build a snapshot from objects in their Kubernetes JSON shape (camelCase keys)."""
        raw_faults = ((faults_configmap or {}).get("data") or {}).get(FAULTS_KEY)
        return cls(
            routes=dict(_route(r) for r in routes),
            pods=tuple(sorted((_pod(p) for p in pods), key=lambda p: (p.namespace, p.name))),
            nodes=tuple(sorted((_node(n) for n in nodes), key=lambda n: n.name)),
            deployments=tuple(
                sorted((_deployment(d) for d in deployments), key=lambda d: (d.namespace, d.name))
            ),
            faults=Faults.parse(raw_faults),
        )


def _quantities(raw: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(parse_quantity(v)) for k, v in (raw or {}).items()}


def _pod(obj: Mapping[str, Any]) -> Pod:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    containers = tuple(
        Container(
            name=c.get("name", ""),
            image=c.get("image", ""),
            requests=_quantities((c.get("resources") or {}).get("requests")),
        )
        for c in spec.get("containers") or []
    )
    owner = None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            owner = Owner(ref.get("kind", ""), ref.get("name", ""))
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        ip=status.get("podIP") or "",
        host_ip=status.get("hostIP") or "",
        labels=dict(meta.get("labels") or {}),
        node_name=spec.get("nodeName") or "",
        phase=status.get("phase") or "Unknown",
        ready=ready and not meta.get("deletionTimestamp"),
        containers=containers,
        owner=owner,
        priority_class=spec.get("priorityClassName") or "",
        host_network=bool(spec.get("hostNetwork")),
    )


def _node(obj: Mapping[str, Any]) -> Node:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ip = next(
        (
            a.get("address", "")
            for a in status.get("addresses") or []
            if a.get("type") == "InternalIP"
        ),
        "",
    )
    return Node(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        capacity=_quantities(status.get("capacity")),
        allocatable=_quantities(status.get("allocatable")),
        provider_id=spec.get("providerID") or "",
        internal_ip=ip,
    )


def _route(obj: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """An HTTPRoute's weight per backend Service of its own namespace (Gateway API defaults: kind Service,
    weight 1); backends in other namespaces or of other kinds carry traffic the fleet does not serve."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ns = meta.get("namespace", "")
    weights: dict[str, int] = {}
    for rule in spec.get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            if (ref.get("kind") or "Service") != "Service" or (ref.get("group") or "") != "":
                continue
            if (ref.get("namespace") or ns) != ns:
                continue
            name = str(ref.get("name", ""))
            weights[name] = weights.get(name, 0) + int(1 if ref.get("weight") is None else ref["weight"])
    return f"{ns}/{meta.get('name', '')}", weights


def _deployment(obj: Mapping[str, Any]) -> Deployment:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return Deployment(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        replicas=int(1 if spec.get("replicas") is None else spec["replicas"]),
        available_replicas=int(status.get("availableReplicas") or 0),
    )


# ---- reading the real API ----------------------------------------------------------------------
def api_client(kubeconfig: Path) -> client.ApiClient:
    """A client for the cluster in `kubeconfig` (built on demand, never at import)."""
    return config.new_client_from_config(config_file=str(kubeconfig))


def read_snapshot(api: client.ApiClient) -> ClusterSnapshot:
    """List pods, nodes, Deployments and HTTPRoutes in every namespace, and read the faults ConfigMap."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    to_json = api.sanitize_for_serialization
    pods = [to_json(p) for p in core.list_pod_for_all_namespaces().items]
    nodes = [to_json(n) for n in core.list_node().items]
    deployments = [to_json(d) for d in apps.list_deployment_for_all_namespaces().items]
    try:
        cm = to_json(core.read_namespaced_config_map(FAULTS_CONFIGMAP, FAULTS_NAMESPACE))
    except ApiException as e:
        if e.status != 404:
            raise
        cm = None
    try:
        routes = client.CustomObjectsApi(api).list_cluster_custom_object(
            ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL).get("items") or []
    except ApiException as e:
        if e.status != 404:  # no HTTPRoute CRD: a cluster without routes
            raise
        routes = []
    return ClusterSnapshot.from_dicts(pods, nodes, deployments, cm, routes)
