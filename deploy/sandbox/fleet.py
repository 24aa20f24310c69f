"""Typed view of `fleet.yaml`: the GPU fleet the sandbox builds.

The fleet file is data users edit; this module validates it (unknown keys are errors) and derives
the Kubernetes objects (nodes, namespaces, Deployments) from it. It must not talk to any API. The
price catalog is parsed by the agent's own model of it (`tools.rightsize.catalog.PriceCatalog`), so
the sandbox prices its nodes exactly as cost reports read them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.rightsize.catalog import DEFAULT_CATALOG, PriceCatalog

HERE = Path(__file__).resolve().parent
DEFAULT_FLEET = HERE / "fleet.yaml"
DEFAULT_PRICES = DEFAULT_CATALOG

GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"  # the NVIDIA device plugin's mixed strategy: one resource per MIG profile
# Labels real serving teams put on their workloads (and that the agent's tools read).
LABEL_MODEL = "model"
LABEL_MODEL_VERSION = "model-version"
LABEL_RUNTIME = "serving-runtime"
LABEL_TEAM = "team"
LABEL_APP = "app.kubernetes.io/name"
LABEL_POOL = "opsagent.dev/node-pool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"  # spot | on-demand
EKS_CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"  # SPOT | ON_DEMAND
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
# Gateway API's HTTPRoute (the sandbox serves a minimal copy of its CRD: gateway-api/httproute-crd.yaml).
ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
ROUTE_CRD = HERE / "gateway-api" / "httproute-crd.yaml"
# What `kubectl apply` keeps on an object it created: the manifest as last applied (Gateway API routes are
# applied from Git or by hand; a later `kubectl edit` or `patch` leaves it unchanged, so it shows what changed).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVING_PORT = 8000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def load_prices(path: Path = DEFAULT_PRICES) -> PriceCatalog:
    """The price catalog the sandbox's nodes are labelled and priced from (the agent's own model of it)."""
    return PriceCatalog.load(path)


class Pool(_Strict):
    name: str
    instance_type: str
    nodes: int = Field(ge=0)
    zone: str
    gpu: bool = True
    capacity_type: Literal["on-demand", "spot"] = Field(
        default="on-demand", description="How the nodes are bought; spot nodes carry Karpenter's and EKS's "
                                         "capacity-type labels and can be reclaimed together (`spot-loss`).")
    mig: dict[str, int] = Field(
        default_factory=dict, description="MIG partitioning of every GPU: profile → slices per GPU (e.g. "
        "{3g.20gb: 2}). The nodes then advertise `nvidia.com/mig-<profile>` (the device plugin's mixed "
        "strategy) instead of whole `nvidia.com/gpu`s, with the GPU feature discovery labels of real ones.")

    @model_validator(mode="after")
    def _mig_profiles(self) -> Pool:
        for profile, per_gpu in self.mig.items():
            if not re.fullmatch(r"[1-7]g\.[0-9]{1,3}gb", profile) or not 1 <= per_gpu <= 7:
                raise ValueError(f"pool {self.name}: MIG {profile}: {per_gpu} is not a MIG profile and a count 1-7")
        if sum(int(p.split("g.")[0]) * n for p, n in self.mig.items()) > 7:
            raise ValueError(f"pool {self.name}: MIG layout {self.mig} uses more than the 7 compute slices of a GPU")
        return self


class ModelVersion(_Strict):
    model: str
    version: str
    image: str
    max_rps: float = Field(gt=0, description="Requests/s one replica sustains on an H100 before queueing.")
    ttft_s: float = Field(gt=0, description="Median time to first token when lightly loaded, seconds.")
    itl_s: float = Field(ge=0, description="Median inter-token latency, seconds.")
    error_rate: float = Field(ge=0, le=1)
    prompt_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    prefix_hit: float = Field(ge=0, le=1, description="Prefix-cache hit ratio.")
    crash: str | None = Field(default=None, description="Log line of a version whose pods crash-loop.")
    crash_reason: str = Field(default="Error", pattern=r"^[A-Za-z]{1,40}$",
                              description="The crashed container's termination reason: Error (the process "
                                          "exited), OOMKilled (the kernel killed it at its memory limit).")
    exit_code: int = Field(default=1, ge=1, le=255, description="The crashed container's exit code (137 = SIGKILL).")
    client_error_rate: float = Field(default=0.0, ge=0, le=1,
                                     description="Share of requests the server refuses with a 4xx (e.g. prompts "
                                                 "longer than a shrunk maximum context). Refusals are fast: they "
                                                 "add no latency and no GPU work.")
    client_error: str | None = Field(default=None, description="The reason the server logs for each refusal.")
    image_pull_error: str | None = Field(
        default=None, description="The registry's answer when this version's image cannot be pulled: its pods wait "
                                  "in ImagePullBackOff (a KWOK stage) and never serve; the old ReplicaSet keeps "
                                  "serving.")
    startup_s: float = Field(
        default=0.0, ge=0, le=86400,
        description="Seconds a new pod spends Running but not Ready before it serves (weights downloaded and "
                    "loaded). 0: ready at once. A version slower than the Deployment's progress deadline "
                    "never finishes its rollout: the controller reports ProgressDeadlineExceeded and the old "
                    "ReplicaSet keeps serving.")
    startup_log: str | None = Field(default=None, description="The line the server logs while it starts.")
    max_model_len: int = Field(default=131072, ge=256, description="The context length the server logs at start.")
    max_batch: int = Field(default=32, ge=1, le=1024,
                           description="Triton dynamic batching's largest batch; 1 means batching is off.")
    tensor_share: float | None = Field(default=None, ge=0, le=1,
                                       description="Tensor-pipe activity per unit of engine activity; low for a "
                                                   "build that misses the tensor cores (e.g. FP32 weights). "
                                                   "None: the runtime's usual share.")


class Traffic(_Strict):
    peak_rps: float = Field(ge=0)
    trough_ratio: float = Field(ge=0, le=1)
    peak_hour_utc: float = Field(ge=0, lt=24)
    weekend_ratio: float = Field(ge=0, le=1)
    bursts_per_day: int = Field(ge=0, le=24)
    burst: float = Field(ge=1)
    burst_minutes: int = Field(ge=0, le=240)


class Slo(_Strict):
    ttft_p95_s: float = Field(gt=0)
    error_rate: float = Field(ge=0, le=1)


class Workload(_Strict):
    name: str
    namespace: str
    team: str
    runtime: str = Field(pattern="^(vllm|triton)$")
    model: str
    version: str
    pool: str
    gpus: int = Field(ge=0)
    replicas: int = Field(ge=0)
    cpu: str
    memory: str
    slo: Slo
    traffic: Traffic


class RouteBackend(_Strict):
    workload: str = Field(description="A fleet workload in the route's namespace (its Service has the same name).")
    weight: int = Field(ge=0, le=1_000_000, description="Gateway API backendRef weight: a relative share.")


class Route(_Strict):
    """A weighted HTTPRoute in front of workloads of one namespace (Gateway API, `gateway.networking.k8s.io/v1`).

    At its declared weights a route delivers each backend exactly its own `traffic` curve, so history and the
    other faults are the same with or without routes. When the live weights differ, the route's traffic (the sum
    of its backends' curves) moves with them: a backend's share rising by Δ points brings it Δ % of the route's
    traffic, taken from the backends whose share fell (see simulator/placement.py)."""

    name: str
    namespace: str
    hostname: str
    path: str = "/v1"
    gateway: str = Field(default="inference-gateway", description="parentRef: the Gateway in `gateway_namespace`.")
    gateway_namespace: str = "platform"
    backends: list[RouteBackend] = Field(min_length=2, max_length=16)

    def declared(self) -> dict[str, int]:
        return {b.workload: b.weight for b in self.backends}


class Fleet(_Strict):
    cluster: str
    region: str
    gpu_speed: dict[str, float]
    pools: list[Pool]
    serving_namespaces: list[str]
    model_versions: list[ModelVersion]
    workloads: list[Workload]
    routes: list[Route] = Field(default_factory=list)
    faults: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _references_resolve(self) -> Fleet:
        pools = {p.name for p in self.pools}
        versions = {(m.model, m.version) for m in self.model_versions}
        for w in self.workloads:
            if w.pool not in pools:
                raise ValueError(f"workload {w.namespace}/{w.name}: unknown pool {w.pool!r}")
            if (w.model, w.version) not in versions:
                raise ValueError(
                    f"workload {w.namespace}/{w.name}: no model_versions entry for {w.model} {w.version}")
            if w.namespace not in self.serving_namespaces:
                raise ValueError(f"workload {w.namespace}/{w.name}: namespace not in serving_namespaces")
        names = {(w.namespace, w.name) for w in self.workloads}
        for r in self.routes:
            for b in r.backends:
                if (r.namespace, b.workload) not in names:
                    raise ValueError(f"route {r.namespace}/{r.name}: no workload {b.workload!r} in {r.namespace}")
            if not sum(b.weight for b in r.backends):
                raise ValueError(f"route {r.namespace}/{r.name}: every backend weight is 0")
        return self

    @classmethod
    def load(cls, path: Path = DEFAULT_FLEET) -> Fleet:
        return cls.model_validate(_read_yaml(path))

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(f"no workload named {name!r} in the fleet (have: {', '.join(x.name for x in self.workloads)})")

    def version(self, model: str, version: str) -> ModelVersion | None:
        for m in self.model_versions:
            if m.model == model and m.version == version:
                return m
        return None

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(f"no route named {name!r} in the fleet (have: {', '.join(r.name for r in self.routes)})")

    def routes_to(self, w: Workload) -> list[Route]:
        """The routes that have `w` among their backends."""
        return [r for r in self.routes if r.namespace == w.namespace and any(b.workload == w.name for b in r.backends)]

    def scaled(self, total_nodes: int | None) -> Fleet:
        """Return the fleet with GPU pools resized so the fleet has about `total_nodes` GPU nodes."""
        if not total_nodes:
            return self
        gpu_pools = [p for p in self.pools if p.gpu]
        current = sum(p.nodes for p in gpu_pools) or 1
        pools = [
            p.model_copy(update={"nodes": max(1, round(p.nodes * total_nodes / current))}) if p.gpu else p
            for p in self.pools
        ]
        return self.model_copy(update={"pools": pools})


def node_name(pool: Pool, index: int) -> str:
    """Name nodes the way cloud providers do: neutral, numbered, with no hint of their health."""
    zone_octet = "abcdef".find(pool.zone[-1]) % 8
    return f"ip-10-{zone_octet}-{_stable_int(pool.name) % 200 + 20}-{10 + index}.ec2.internal"


def _instance_id(pool: Pool, index: int) -> str:
    return f"i-0{_stable_int(f'{pool.name}/{index}') % 16**15:015x}"


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def node_manifest(fleet: Fleet, catalog: PriceCatalog, pool: Pool, index: int) -> dict[str, Any]:
    it = catalog.instance_types[pool.instance_type]
    labels = {
        "type": "kwok",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        INSTANCE_TYPE_LABEL: pool.instance_type,
        ZONE_LABEL: pool.zone,
        REGION_LABEL: fleet.region,
        LABEL_POOL: pool.name,
        CAPACITY_TYPE_LABEL: pool.capacity_type,
        EKS_CAPACITY_TYPE_LABEL: pool.capacity_type.upper().replace("-", "_"),
    }
    capacity: dict[str, str] = {"cpu": str(it.cpu), "memory": f"{it.memory_gib}Gi", "pods": "110"}
    taints: list[dict[str, str]] = []
    if pool.gpu and it.gpus and it.gpu_product:
        labels |= {
            GPU_PRODUCT_LABEL: it.gpu_product,
            GPU_COUNT_LABEL: str(it.gpus),
            GPU_MEMORY_LABEL: str(it.gpu_memory_gib * 1024),
        }
        if pool.mig:
            # Every GPU partitioned: no whole GPU is left to advertise, only slices (mixed strategy).
            labels |= {"nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": "mixed",
                       "nvidia.com/mig.config": "all-" + "-".join(sorted(pool.mig)) if len(pool.mig) == 1
                       else "custom-" + "-".join(f"{n}x{p}" for p, n in sorted(pool.mig.items()))}
            for profile, per_gpu in sorted(pool.mig.items()):
                slices = int(profile.split("g.")[0])
                memory_gib = catalog.product(it.gpu_product).mig_profiles.get(profile)
                labels |= {f"{MIG_PREFIX}{profile}.count": str(per_gpu * it.gpus),
                           f"{MIG_PREFIX}{profile}.slices.gi": str(slices),
                           f"{MIG_PREFIX}{profile}.slices.ci": str(slices)}
                if memory_gib is not None:
                    labels[f"{MIG_PREFIX}{profile}.memory"] = str(int(memory_gib.memory_gib * 1024))
                capacity[MIG_PREFIX + profile] = str(per_gpu * it.gpus)
        else:
            capacity[GPU_RESOURCE] = str(it.gpus)
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    name = node_name(pool, index)
    labels["kubernetes.io/hostname"] = name
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints, "providerID": f"aws:///{pool.zone}/{_instance_id(pool, index)}"},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def deployment_manifest(fleet: Fleet, w: Workload) -> dict[str, Any]:
    mv = fleet.version(w.model, w.version)
    assert mv is not None  # the fleet validator guarantees it
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": w.name,
            "namespace": w.namespace,
            "labels": {LABEL_APP: w.name, LABEL_TEAM: w.team, LABEL_RUNTIME: w.runtime, LABEL_MODEL: w.model},
        },
        "spec": {
            "replicas": w.replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": {LABEL_APP: w.name}},
            "template": pod_template(fleet, w, mv),
        },
    }


def pod_template(fleet: Fleet, w: Workload, mv: ModelVersion) -> dict[str, Any]:
    """The pod template of a workload running model version `mv` (what a rollout changes)."""
    pool = fleet.pool(w.pool)
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": w.cpu, "memory": w.memory},
        "limits": {"memory": w.memory},
    }
    if w.gpus:
        resources["requests"][GPU_RESOURCE] = str(w.gpus)
        resources["limits"][GPU_RESOURCE] = str(w.gpus)
    if w.runtime == "vllm":
        args = [
            "--model", f"/models/{mv.model}/{mv.version}",
            "--served-model-name", mv.model,
            "--tensor-parallel-size", str(max(1, w.gpus)),
            "--gpu-memory-utilization", "0.90",
        ]
        if mv.crash:
            args += ["--max-model-len", "131072"]
        ports = [{"name": "http", "containerPort": 8000}]
    else:
        args = ["tritonserver", "--model-repository=/models", f"--load-model={mv.model}", "--metrics-port=8002"]
        ports = [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}]
    container: dict[str, Any] = {"name": "server", "image": mv.image, "args": args, "ports": ports,
                                 "resources": resources}
    return {
        "metadata": {
            "labels": {
                LABEL_APP: w.name,
                LABEL_TEAM: w.team,
                LABEL_RUNTIME: w.runtime,
                LABEL_MODEL: mv.model,
                LABEL_MODEL_VERSION: _label_value(mv.version),
            },
        },
        "spec": {
            "nodeSelector": {LABEL_POOL: pool.name},
            "tolerations": [
                {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
                {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }


def service_manifest(w: Workload) -> dict[str, Any]:
    """The ClusterIP Service in front of a workload's pods: what a route's backendRef names."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": {LABEL_APP: w.name, LABEL_TEAM: w.team}},
        "spec": {"selector": {LABEL_APP: w.name},
                 "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}]},
    }


def route_manifest(route: Route, weights: dict[str, int] | None = None) -> dict[str, Any]:
    """The HTTPRoute for `route`, at its declared weights or at `weights` (backend → weight)."""
    chosen = route.declared() | (weights or {})
    return {
        "apiVersion": f"{ROUTE_GROUP}/{ROUTE_VERSION}", "kind": "HTTPRoute",
        "metadata": {"name": route.name, "namespace": route.namespace},
        "spec": {
            "parentRefs": [{"name": route.gateway, "namespace": route.gateway_namespace}],
            "hostnames": [route.hostname],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
                "backendRefs": [{"name": b.workload, "port": SERVING_PORT, "weight": chosen[b.workload]}
                                for b in route.backends],
            }],
        },
    }


def _label_value(v: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", v)[:63]


def _read_yaml(path: Path) -> Any:
    try:
        with path.open() as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e
