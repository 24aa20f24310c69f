"""Deployment requests: from "deploy version V to NAMESPACE/NAME" to a change request, or a refusal.

Every surface (the CLI, Slack, the CI API) builds a `DeployRequest` and calls `plan_deployment`: it
reads the target (an Argo `Rollout` or a plain `Deployment`), the nodes and pods, and Prometheus for a
staging soak, with the read-only identity, and runs the preflight (`agent.change.preflight`). A plan
whose preflight fails is refused with its numbers and audited; a passing one becomes a `DEPLOY`
`ChangeSpec` proposed through `ChangeFlow.propose()`, with the preflight's arithmetic in its reason.

This module never writes to the cluster: the guarded executor does, after policy and approval.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.audit.events import AuditEvent, AuditKind, AuditSink, inputs_hash
from agent.change.flow import ChangeFlow, FlowState
from agent.change.models import ChangeRequest, ChangeSpec
from agent.change.preflight import (
    Check,
    NodeView,
    PodShape,
    PodView,
    Preflight,
    capacity,
    cost_change,
    max_surge_that_fits,
    memory_fit,
    node_view,
    pod_shape,
    pod_view,
    staging_soak,
    staging_soak_queries,
    surge_pods,
)
from agent.models import ActionKind, ObjectRef
from tools.k8s_read.client import K8sReadClient
from tools.k8s_read.errors import K8sNotFound
from tools.prometheus.client import PrometheusClient
from tools.rightsize.catalog import PriceCatalog
from tools.serving_knowledge.model_shapes import shape as model_shape

DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
MODEL_VERSION = "model-version"
MODEL = "model"
ROLLOUTS = ("argoproj.io", "v1alpha1", "rollouts")
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU (GPU feature discovery)
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_TAINT_KEYS = ("nvidia.com/gpu",)  # the taint GPU node groups carry (EKS, GKE); a move tolerates it
DEFAULT_SURGE_SHARE = 0.25  # a Deployment's default maxSurge: the cap of a capacity-bounded rolling update
GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MIG_PROFILE = r"^[1-7]g\.[0-9]{1,3}gb(\+me)?$"  # as the device plugin's mixed strategy names the resource


class DeployRequest(BaseModel):
    """What a user asks for: a new version, image or args (or a GPU-class move) of one workload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(pattern=DNS_NAME, max_length=63)
    name: str = Field(pattern=DNS_NAME, max_length=253)
    version: str | None = Field(default=None, pattern=LABEL_VALUE,
                                description="The model version (the pods' `model-version` label).")
    image: str | None = Field(default=None, min_length=1, max_length=512)
    args: list[str] | None = Field(default=None, max_length=64, description="The serving container's new args.")
    strategy: Literal["canary", "rolling"] | None = Field(
        default=None, description="canary for an Argo Rollout (its steps and analysis), rolling for a Deployment; "
        "unset picks the one the target supports.")
    model: str | None = Field(default=None, pattern=DNS_NAME, description="A different model (default: the same).")
    container: str | None = Field(default=None, pattern=DNS_NAME)
    node_selector: dict[str, str] | None = Field(default=None, description="A GPU-class move: the new node selector.")
    tolerations: list[dict[str, str]] | None = Field(default=None, max_length=16)
    gpus: int | None = Field(default=None, ge=1, le=16, description="GPUs per replica after the change.")
    mig_profile: str | None = Field(default=None, pattern=MIG_PROFILE,
                                    description="One MIG slice of this profile per replica (e.g. 3g.40gb) instead "
                                                "of whole GPUs: `nvidia.com/mig-<profile>: 1`.")
    promote_from: str | None = Field(default=None, pattern=DNS_NAME, max_length=63,
                                     description="Staging namespace the same version must have soaked in.")
    soak_required_s: float = Field(default=3600, ge=0, le=30 * 86400)

    @model_validator(mode="after")
    def _something_changes(self) -> DeployRequest:
        if not any(v is not None for v in (self.version, self.image, self.args, self.node_selector,
                                           self.tolerations, self.gpus, self.model, self.mig_profile)):
            raise ValueError("say what to deploy: a version, an image, args, or a GPU-class move")
        if self.gpus is not None and self.mig_profile is not None:
            raise ValueError("a replica gets whole GPUs (gpus) or one MIG slice (mig_profile), not both")
        return self

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"


class TargetNotFound(LookupError):
    """Neither a Rollout nor a Deployment of that name exists in that namespace."""


class DeployRefused(ValueError):
    """The request cannot be carried out as asked (wrong strategy for the target, no such container)."""


@dataclass(frozen=True)
class DeployPlan:
    request: DeployRequest
    kind: Literal["Rollout", "Deployment"]
    spec: ChangeSpec
    preflight: Preflight
    summary: str  # one line: what changes, e.g. "version 2025.05.2 → 2025.09.0 (canary)"

    @property
    def ok(self) -> bool:
        return self.preflight.ok

    def reason(self) -> str:
        return f"deploy {self.request.target}: {self.summary}\n\nPreflight:\n{self.preflight.markdown()}"


@dataclass(frozen=True)
class DeployOutcome:
    """A refused plan (no change request) or the change request's flow state."""

    plan: DeployPlan
    state: FlowState | None

    @property
    def refused(self) -> bool:
        return self.state is None


# ---- reading -----------------------------------------------------------------------------------------
async def read_target(reader: K8sReadClient, namespace: str, name: str) -> tuple[Literal["Rollout", "Deployment"],
                                                                                  dict[str, Any]]:
    """The workload to deploy: an Argo Rollout if one has that name, else a Deployment; TargetNotFound else."""
    group, version, plural = ROLLOUTS
    custom = client.CustomObjectsApi(reader.api)
    try:
        return "Rollout", await reader.read(f"read rollout {namespace}/{name}", custom.get_namespaced_custom_object,
                                            group, version, namespace, plural, name)
    except K8sNotFound:
        pass  # no Rollout of that name (or the CRD is not installed): a Deployment, then
    try:
        return "Deployment", await reader.read(f"read deployment {namespace}/{name}",
                                               reader.apps.read_namespaced_deployment, name, namespace)
    except K8sNotFound as e:
        raise TargetNotFound(f"no Rollout or Deployment {namespace}/{name}") from e


# ---- the pure part: the new template's parameters and the checks ----------------------------------
def arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in a command line, or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def with_arg(args: Sequence[str], flag: str, value: str) -> list[str]:
    """`args` with `flag`'s value set to `value` where it is given (`--flag V` or `--flag=V`); unchanged if absent."""
    out = list(args)
    for i, a in enumerate(out):
        if a == flag and i + 1 < len(out):
            out[i + 1] = value
        elif a.startswith(flag + "="):
            out[i] = f"{flag}={value}"
    return out


def deploy_params(req: DeployRequest, kind: str, obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The executor's parameters for the new template, and a one-line summary of what changes."""
    template = obj["spec"]["template"]
    containers = template["spec"]["containers"]
    name = req.container or containers[0]["name"]
    ct = next((c for c in containers if c["name"] == name), None)
    if ct is None:
        raise DeployRefused(f"{kind} {req.target} has no container {name!r} (has {[c['name'] for c in containers]})")
    strategy = req.strategy or ("canary" if kind == "Rollout" else "rolling")
    if kind == "Deployment" and strategy == "canary":
        raise DeployRefused(f"{req.target} is a plain Deployment: it takes a rolling update; make it an Argo "
                            "Rollout for a canary with analysis")
    if kind == "Rollout" and strategy == "rolling":
        raise DeployRefused(f"{req.target} is an Argo Rollout: its own canary steps and analysis run the update")
    labels = dict(template.get("metadata", {}).get("labels") or {})
    old_version, old_model = labels.get(MODEL_VERSION, "?"), labels.get(MODEL, "")
    params: dict[str, Any] = {"container": name, "strategy": strategy}
    new_labels: dict[str, str] = {}
    args = list(req.args) if req.args is not None else list(ct.get("args") or [])
    if req.version:
        new_labels[MODEL_VERSION] = req.version
        # vLLM loads the weights from its --model path, which names the version in our layout.
        model_path = arg_value(args, "--model")
        if model_path and req.args is None and old_version in model_path.split("/"):
            args = [a.replace(f"/{old_version}", f"/{req.version}") if a == model_path else a for a in args]
    if req.model:
        new_labels[MODEL] = req.model
        if req.args is None and old_model:
            args = [a.replace(old_model, req.model) for a in args]
    new_tp = 1 if req.mig_profile else req.gpus
    if new_tp is not None and req.args is None:
        # vLLM shards over --tensor-parallel-size GPUs and refuses to start with fewer: it follows the GPU count.
        args = with_arg(args, "--tensor-parallel-size", str(new_tp))
    if args != list(ct.get("args") or []):
        params["args"] = args
    if new_labels:
        params["labels"] = new_labels
    for key, value in (("image", req.image), ("gpus", req.gpus), ("mig_profile", req.mig_profile),
                       ("node_selector", req.node_selector), ("tolerations", req.tolerations)):
        if value is not None:
            params[key] = value
    what = []
    if req.version:
        what.append(f"version {old_version} → {req.version}")
    if req.model:
        what.append(f"model {old_model or '?'} → {req.model}")
    if req.image:
        what.append(f"image {ct.get('image')} → {req.image}")
    if req.args is not None:
        what.append("new args")
    if req.gpus is not None or req.node_selector is not None or req.mig_profile is not None:
        old_sel = template["spec"].get("nodeSelector") or {}
        sel = req.node_selector if req.node_selector is not None else old_sel
        shape_now = pod_shape(template["spec"])
        after_mig = req.mig_profile or (shape_now.mig_profile if req.gpus is None else None)
        what.append(f"GPU-class move {_placement(old_sel, shape_now.gpus, shape_now.mig_profile)} → "
                    f"{_placement(sel, req.gpus or shape_now.gpus, after_mig)}")
    params["change_cause"] = f"opsagent deploy: {', '.join(what)}"[:300]
    return params, f"{', '.join(what)} ({strategy})"


def _placement(selector: Mapping[str, str], gpus: int, mig: str | None = None) -> str:
    where = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "any node"
    return f"{f'1 MIG {mig} slice' if mig else f'{gpus} GPU'} on {where}"


def move_tolerations(current: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]],
                     selector: Mapping[str, str]) -> list[dict[str, str]] | None:
    """The pod's tolerations plus the GPU taints of the nodes `selector` picks, or None when none are missing.

    Only the GPU node groups' own taint (`nvidia.com/gpu`) is added: any other taint (a team's
    dedicated pool, spot) is a decision for a person, and the capacity check then finds no node.
    """
    have = pod_shape({"tolerations": current}).tolerations
    missing: dict[tuple[str, str], dict[str, str]] = {}
    for n in nodes:
        view = node_view(n)
        if any(view.labels.get(k) != v for k, v in selector.items()):
            continue
        for t in view.taints:
            if t.key in GPU_TAINT_KEYS and t.effect in ("NoSchedule", "NoExecute") and \
                    not any(tol.tolerates(t) for tol in have):
                missing[(t.key, t.effect)] = {"key": t.key, "operator": "Exists", "effect": t.effect}
    if not missing:
        return None
    return [{str(k): str(v) for k, v in t.items()} for t in current] + list(missing.values())


def new_pod_spec(obj: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec after the change, as far as placement and GPUs go (what the capacity check needs)."""
    spec = dict(obj["spec"]["template"]["spec"])
    if "node_selector" in params:
        spec["nodeSelector"] = params["node_selector"]
    if "tolerations" in params:
        spec["tolerations"] = params["tolerations"]
    gpu: tuple[str, int] | None = None
    if "gpus" in params:
        gpu = (GPU_RESOURCE, int(params["gpus"]))
    elif "mig_profile" in params:
        gpu = (MIG_PREFIX + str(params["mig_profile"]), 1)
    if gpu is not None:
        spec["containers"] = [_with_gpu_resource(c, *gpu) if c["name"] == params["container"] else c
                              for c in spec["containers"]]
    return spec


def _with_gpu_resource(container: Mapping[str, Any], name: str, count: int) -> dict[str, Any]:
    """The container with `name` as its only GPU resource (whole GPUs or one MIG slice), the rest kept."""
    res = dict(container.get("resources") or {})
    for part in ("requests", "limits"):
        kept = {k: v for k, v in (res.get(part) or {}).items() if k != GPU_RESOURCE and not k.startswith(MIG_PREFIX)}
        res[part] = {**kept, name: str(count)}
    return {**container, "resources": res}


def gpu_memory_gib(nodes: Sequence[Mapping[str, Any]], pod: PodShape, catalog: PriceCatalog) -> tuple[float, str]:
    """GPU memory per device on the nodes the pod may land on, and where the figure came from.

    A pod on a MIG slice sees the slice's memory, not the GPU's (`mig_memory_gib`).
    """
    if (profile := pod.mig_profile) is not None:
        return mig_memory_gib(nodes, pod, profile, catalog)
    for n in nodes:
        view = node_view(n)
        if any(view.labels.get(k) != v for k, v in pod.node_selector.items()) or not view.allocatable_gpus:
            continue
        if (mib := view.labels.get(GPU_MEMORY_LABEL)) and mib.isdigit():
            return round(int(mib) / 1024, 1), f"node {view.name} label {GPU_MEMORY_LABEL}={mib} MiB"
        it = view.labels.get(INSTANCE_TYPE_LABEL, "")
        if it in catalog.instance_types and catalog.instance_types[it].gpu_memory_gib:
            return float(catalog.instance_types[it].gpu_memory_gib), f"instance type {it} (price catalog)"
    return 0.0, "no GPU node matches the pod's node selector"


def mig_memory_gib(nodes: Sequence[Mapping[str, Any]], pod: PodShape, profile: str,
                   catalog: PriceCatalog) -> tuple[float, str]:
    """The memory of one `profile` slice on the nodes the pod may land on, and where the figure came from.

    GPU feature discovery's `nvidia.com/mig-<profile>.memory` label (MiB) first; else the price catalog's
    figure for the profile on the node's GPU product; else the profile's name (`3g.40gb` → 40 × 0.98 GiB:
    NVIDIA's names round the slice's memory up, e.g. 3g.40gb has 39.5 GiB on an H100).
    """
    for n in nodes:
        view = node_view(n)
        if any(view.labels.get(k) != v for k, v in pod.node_selector.items()) or not view.allocatable_mig.get(profile):
            continue
        key = f"{MIG_PREFIX}{profile}.memory"
        if (mib := view.labels.get(key)) and mib.isdigit():
            return round(int(mib) / 1024, 2), f"MIG {profile}: node {view.name} label {key}={mib} MiB"
        product = view.labels.get(GPU_PRODUCT_LABEL, "")
        known = catalog.product(product).mig_profiles.get(profile)
        if known is not None:
            return float(known.memory_gib), f"MIG {profile} on {product} (price catalog), node {view.name}"
        m = re.fullmatch(r"[1-7]g\.([0-9]+)gb(\+me)?", profile)
        if m:
            return round(int(m.group(1)) * 0.98, 2), f"MIG profile name {profile} (× 0.98), node {view.name}"
    return 0.0, f"no node matching the pod's node selector advertises {MIG_PREFIX}{profile}"


def instance_type(nodes: Sequence[Mapping[str, Any]], selector: Mapping[str, str]) -> str | None:
    for n in nodes:
        labels = (n.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()) and labels.get(INSTANCE_TYPE_LABEL):
            return str(labels[INSTANCE_TYPE_LABEL])
    return None


def canary_surge(obj: Mapping[str, Any]) -> int:
    """Pods an Argo canary adds at its first step: its first setWeight of the replicas, within maxSurge."""
    canary = (obj["spec"].get("strategy") or {}).get("canary") or {}
    replicas = int(obj["spec"].get("replicas") or 1)
    weight = next((int(s["setWeight"]) for s in canary.get("steps") or [] if "setWeight" in s), 100)
    raw = canary.get("maxSurge", "25%")
    surge = math.ceil(replicas * int(raw[:-1]) / 100) if isinstance(raw, str) and raw.endswith("%") else int(raw)
    return surge_pods(replicas, strategy="canary", canary_weight=weight, max_surge=surge)


def checks(req: DeployRequest, kind: str, obj: Mapping[str, Any], params: Mapping[str, Any],
           nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]],
           catalog: PriceCatalog) -> tuple[list[Check], int | None]:
    """Memory fit, capacity and cost of the new template; and a Deployment's maxSurge that fits."""
    out: list[Check] = []
    spec_after = new_pod_spec(obj, params)
    pod = pod_shape(spec_after)
    nviews: list[NodeView] = [node_view(n) for n in nodes]
    pviews: list[PodView] = [pod_view(p) for p in pods]
    ct = next(c for c in spec_after["containers"] if c["name"] == params["container"])
    args = list(params.get("args", ct.get("args") or []))
    labels = {**(obj["spec"]["template"].get("metadata", {}).get("labels") or {}), **params.get("labels", {})}
    model = str(labels.get(MODEL, ""))
    shp = model_shape(model)
    mem, source = gpu_memory_gib(nodes, pod, catalog)
    if shp is None:
        out.append(Check("GPU memory", False, f"model {model or '(no model label)'} is not in the serving knowledge "
                         "catalog (tools/serving_knowledge/model_shapes.py): its fit cannot be shown"))
    elif not mem:
        out.append(Check("GPU memory", False, f"cannot tell the GPU memory: {source}"))
    else:
        tp = 1 if pod.mig_profile else int(arg_value(args, "--tensor-parallel-size") or max(1, pod.gpus))
        precision = arg_value(args, "--quantization") or arg_value(args, "--dtype") or "bfloat16"
        max_len = arg_value(args, "--max-model-len")
        util = float(arg_value(args, "--gpu-memory-utilization") or 0.9)
        try:
            c = memory_fit(shp, gpu_memory_gib=mem, tensor_parallel=tp, precision=precision,
                           max_model_len=int(max_len) if max_len else None, gpu_memory_utilization=util)
            out.append(Check(c.name, c.ok, c.summary, (f"GPU memory: {mem:g} GiB per GPU ({source})", *c.details)))
        except ValueError as e:
            out.append(Check("GPU memory", False, str(e)))
    replicas = int(obj["spec"].get("replicas") or 0)
    max_surge: int | None = None
    old_pod = pod_shape(obj["spec"]["template"]["spec"])
    if pod.node_selector != old_pod.node_selector or pod.mig != old_pod.mig:
        # A move: every replica ends up on the new class, whose nodes the old pods do not free.
        c = capacity(pod, max(1, replicas), nviews, pviews)
        out.append(Check(c.name, c.ok, ("all replicas of the move: " if c.ok else "the move's ") + c.summary,
                         (f"a move to another GPU class needs room there for all {replicas} replica(s), "
                          "not only the first step", *c.details)))
        if kind == "Deployment":
            max_surge = max(1, math.ceil(replicas * DEFAULT_SURGE_SHARE))
    elif kind == "Rollout":
        out.append(capacity(pod, canary_surge(obj), nviews, pviews))
    else:
        cap = max(1, math.ceil(replicas * DEFAULT_SURGE_SHARE))
        max_surge = max_surge_that_fits(pod, nviews, pviews, cap)
        c = capacity(pod, max(1, max_surge), nviews, pviews)
        out.append(Check(c.name, c.ok, c.summary + (f"; rolling update with maxSurge {max_surge}" if c.ok else ""),
                         (*c.details, f"largest maxSurge that fits (≤ {cap}): {max_surge}")))
    before_it = instance_type(nodes, obj["spec"]["template"]["spec"].get("nodeSelector") or {})
    after_it = instance_type(nodes, pod.node_selector)
    if before_it and after_it and before_it in catalog.instance_types and after_it in catalog.instance_types:
        try:
            out.append(cost_change(catalog, before_instance=before_it, before_gpus=old_pod.gpus,
                                   after_instance=after_it, after_gpus=pod.gpus, replicas=replicas,
                                   before_mig=old_pod.mig_profile, after_mig=pod.mig_profile))
        except ValueError as e:
            out.append(Check("cost", False, f"cannot price the change: {e}"))
    else:
        out.append(Check("cost", True, "not priced: the nodes carry no instance type the price catalog knows"))
    return out, max_surge


async def soak_check(req: DeployRequest, prom: PrometheusClient, app: str, *, ttft_p95_max_s: float,
                     error_share_max: float, now: dt.datetime | None = None, step_s: float = 60) -> Check:
    """How long the same version has served in the staging namespace within SLO, from Prometheus."""
    assert req.promote_from and req.version
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(seconds=max(req.soak_required_s, step_s) + 2 * step_s)
    ttft_q, err_q = staging_soak_queries(req.promote_from, app, req.version)

    async def series(expr: str) -> dict[float, float]:
        rng = await prom.query_range(expr, start, now, step_s)
        return {float(t): v for s in rng.data.series for t, v in s.samples}

    ttft, err = await series(ttft_q), await series(err_q)
    samples = [(t, ttft.get(t), err.get(t)) for t in sorted(ttft)]
    return staging_soak(samples, ttft_p95_max_s=ttft_p95_max_s, error_share_max=error_share_max,
                        required_s=req.soak_required_s, now=now.timestamp(), step_s=step_s)


async def plan_deployment(req: DeployRequest, *, reader: K8sReadClient, catalog: PriceCatalog, cluster: str,
                          prom: PrometheusClient | None = None, slo: tuple[float, float] = (0.5, 0.01)) -> DeployPlan:
    """Read the target, its pool and (for a promotion) Prometheus, and run the preflight."""
    kind, obj = await read_target(reader, req.namespace, req.name)
    params, summary = deploy_params(req, kind, obj)
    nodes, _ = await reader.list("list nodes", reader.core.list_node)
    pods, _ = await reader.list("list pods", reader.core.list_pod_for_all_namespaces,
                                field_selector="status.phase!=Succeeded,status.phase!=Failed")
    if req.node_selector is not None and req.tolerations is None:
        tolerations = move_tolerations(obj["spec"]["template"]["spec"].get("tolerations") or [], nodes,
                                       req.node_selector)
        if tolerations is not None:
            params["tolerations"] = tolerations
    found, max_surge = checks(req, kind, obj, params, nodes, pods, catalog)
    if req.node_selector is not None:
        # What the move is priced at (the change request's cost delta); the executor's write ignores these.
        for key, selector in (("instance_type", obj["spec"]["template"]["spec"].get("nodeSelector") or {}),
                              ("new_instance_type", req.node_selector)):
            if selector and (it := instance_type(nodes, selector)):
                params[key] = it
    if max_surge is not None:
        params["max_surge"] = max_surge
    if req.promote_from:
        if not req.version or prom is None:
            found.append(Check("staging soak", False, "a promotion needs --version and Prometheus to read the soak"))
        else:
            app = str((obj["spec"]["template"].get("metadata", {}).get("labels") or {}).get(
                "app.kubernetes.io/name", req.name))
            try:
                found.append(await soak_check(req, prom, app, ttft_p95_max_s=slo[0], error_share_max=slo[1]))
            except Exception as e:  # no evidence is no soak
                found.append(Check("staging soak", False, f"cannot read the soak from Prometheus: {e}"))
    spec = ChangeSpec(action=ActionKind.DEPLOY, cluster=cluster,
                      target=ObjectRef(kind=kind, name=req.name, namespace=req.namespace), params=params)
    return DeployPlan(request=req, kind=kind, spec=spec, preflight=Preflight(tuple(found)), summary=summary)


async def request_deployment(plan: DeployPlan, *, flow: ChangeFlow, audit: AuditSink, requester: str,
                             via: str, why: str = "", evidence: list[str] | None = None,
                             on_proposed: Callable[[ChangeRequest], Awaitable[None]] | None = None) -> DeployOutcome:
    """Refuse a failed preflight (audited, nothing stored), or propose the change through the flow.

    `why` goes before the plan's reason (a right-sizing move says which recommendation and its saving);
    `evidence` and `on_proposed` are passed to `ChangeFlow.propose`.
    """
    if not plan.ok:
        audit.append(AuditEvent(
            at=dt.datetime.now(dt.UTC), kind=AuditKind.POLICY_DECISION, actor=requester,
            action=f"propose deploy {plan.spec.target}", inputs_hash=inputs_hash(plan.spec.digest()),
            decision="refused", reason=f"preflight ({via}): " + "; ".join(plan.preflight.reasons())[:1500],
            result={"summary": plan.summary, "via": via}))
        return DeployOutcome(plan, None)
    reason = f"{why}\n\n{plan.reason()}" if why else plan.reason()
    state = await flow.propose(plan.spec, reason=reason, requester=requester, evidence=evidence,
                               on_proposed=on_proposed)
    return DeployOutcome(plan, state)


def parse_target(text: str) -> tuple[str, str]:
    """NAMESPACE/NAME, with a clear error for anything else."""
    m = re.fullmatch(r"([a-z0-9][-a-z0-9]{0,62})/([a-z0-9][-a-z0-9.]{0,252})", text.strip())
    if not m:
        raise ValueError(f"target must be NAMESPACE/NAME (e.g. llm-prod/assist-mini), not {text!r}")
    return m.group(1), m.group(2)


__all__ = ["DeployOutcome", "DeployPlan", "DeployRefused", "DeployRequest", "TargetNotFound", "checks",
           "deploy_params", "parse_target", "plan_deployment", "read_target", "request_deployment"]
