"""Blast radius: how much serving capacity a change can take away, computed from the live object alone.

Pure arithmetic on the object the executor read (no API calls, no policy): policy compares the result
with its limits, the proposal shows it to approvers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.change.models import BlastRadius, ChangeSpec
from agent.models import ActionKind

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"


def gpu_devices(container: dict[str, Any]) -> int:
    """GPU devices a container holds: whole GPUs plus MIG slices, each slice counted as the GPU it sits on
    (a workload on slices is not a change that touches no GPU)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    return int(limits.get(GPU, 0)) + sum(int(v) for k, v in limits.items() if k.startswith(MIG_PREFIX))
TEMPLATE_HASH = "pod-template-hash"


@dataclass(frozen=True)
class NodeWorkload:
    """What runs on a node, as the executor read it: its pods, the Deployments that own them (keyed
    "namespace/name") and the namespaces a drain may evict from (the policy's)."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    evict_namespaces: tuple[str, ...] = ()


def blast_radius(spec: ChangeSpec, obj: dict[str, Any] | None, node: NodeWorkload | None = None,
                 failing: int = 0) -> BlastRadius:
    """What the change can take away: GPUs and replicas touched, and the fraction of *healthy* serving capacity
    lost. `failing`: replicas that are available to Kubernetes but answer mostly errors (read from Prometheus by
    the executor); replacing those takes no healthy capacity."""
    if obj is None:
        return BlastRadius(gpus=0, replicas=0, capacity_drop=0.0)
    if spec.target.kind == "Node":
        return node_blast_radius(spec, obj, node or NodeWorkload())
    replicas = int(obj["spec"].get("replicas") or 0)
    ct = obj["spec"]["template"]["spec"]["containers"]
    per = sum(gpu_devices(c) for c in ct)
    model = (obj["spec"]["template"]["metadata"].get("labels") or {}).get("model", "")
    if spec.action == ActionKind.SCALE:
        new = int(spec.params.get("replicas", replicas))
        # Only healthy replicas count: the controller removes unavailable ones first, so scaling away a
        # replica that is already failing takes no serving capacity (ticket-105).
        available = min(replicas, int((obj.get("status") or {}).get("availableReplicas") or 0))
        healthy = max(0, available - failing)
        drop = max(0.0, (healthy - new) / replicas) if replicas else 0.0
        return BlastRadius(gpus=abs(new - replicas) * per, replicas=abs(new - replicas),
                           capacity_drop=round(min(1.0, drop), 3), models=[model] if model else [],
                           failing=min(failing, available))
    # Serving capacity the rollout can take away: it may take down maxUnavailable replicas, but the
    # controller removes the ones already unavailable (crash-looping, say) first.
    # Replicas that are available but failing (mostly 5xx) are not preferred by the controller, so at worst
    # it takes down healthy ones first: the loss is bounded by the healthy replicas there are. A single
    # replica that fails is replaced at no cost in healthy capacity (ticket-105); a healthy one is protected.
    available = min(replicas, int((obj.get("status") or {}).get("availableReplicas") or 0))
    down_now = replicas - available
    healthy = max(0, available - failing)
    at_once = max_unavailable(obj["spec"].get("strategy") or {}, replicas)
    drop = min(1.0, min(max(0, at_once - down_now), healthy) / replicas) if replicas else 0.0
    return BlastRadius(gpus=replicas * per, replicas=replicas, capacity_drop=round(drop, 3),
                       models=[model] if model else [], failing=min(failing, available))


def replicas_delta(spec: ChangeSpec, obj: dict[str, Any] | None) -> int:
    """Replicas the change adds (negative: removes); zero for anything but a scale."""
    if spec.action != ActionKind.SCALE or obj is None:
        return 0
    return int(spec.params.get("replicas", 0)) - int(obj["spec"].get("replicas") or 0)


def max_unavailable(strategy: dict[str, Any], replicas: int) -> int:
    """Replicas a rollout may take down at once, as the Deployment controller computes it: a percentage of
    maxUnavailable rounds down, one of maxSurge rounds up (defaults 25 % each); Recreate takes all."""
    if strategy.get("type") == "Recreate":
        return replicas
    # An Argo Rollout's canary carries the same two fields (same defaults) on `canary`.
    ru = strategy.get("rollingUpdate") or strategy.get("canary") or {}

    def resolve(v: Any, round_up: bool) -> int:
        if isinstance(v, str) and v.endswith("%"):
            exact = replicas * int(v[:-1]) / 100
            return int(-(-exact // 1)) if round_up else int(exact)
        return int(v)

    unavailable = resolve(ru.get("maxUnavailable", "25%"), round_up=False)
    surge = resolve(ru.get("maxSurge", "25%"), round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1  # the API forbids both zero; the controller then uses one
    return min(unavailable, replicas)


def owning_deployment(pod: dict[str, Any]) -> str | None:
    """ "namespace/name" of the Deployment behind a pod (its ReplicaSet's name less the template hash)."""
    meta = pod.get("metadata") or {}
    rs = next((o.get("name", "") for o in meta.get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"), "")
    suffix = "-" + (meta.get("labels") or {}).get(TEMPLATE_HASH, "")
    if not rs or suffix == "-" or not rs.endswith(suffix):
        return None
    return f"{meta.get('namespace', '')}/{rs[: -len(suffix)]}"


def is_daemon(pod: dict[str, Any]) -> bool:
    return any(o.get("kind") == "DaemonSet" for o in (pod.get("metadata") or {}).get("ownerReferences") or [])


def is_serving(pod: dict[str, Any]) -> bool:
    """Running and Ready: a replica that is serving traffic now."""
    return (pod.get("status") or {}).get("phase") == "Running" and is_ready(pod)


def left_by_drain(pod: dict[str, Any], evict_namespaces: tuple[str, ...]) -> str | None:
    """Why a drain leaves `pod` where it is, or None when the drain evicts it."""
    meta = pod.get("metadata") or {}
    if is_daemon(pod):
        return "DaemonSet pod (the node's own agent)"
    if meta.get("namespace") not in evict_namespaces:
        return (f"namespace {meta.get('namespace')} is not one the policy lets a drain evict from "
                f"({', '.join(evict_namespaces) or 'none'})")
    return None


def node_blast_radius(spec: ChangeSpec, node: dict[str, Any], work: NodeWorkload) -> BlastRadius:
    """A cordon or drain takes away the serving replicas on the node: per model, the node's healthy
    replicas of each Deployment over that Deployment's healthy replicas. Pods a drain leaves in place
    (DaemonSets, namespaces the policy does not allow) are not counted and are listed with the reason."""
    gpus = int((node.get("status", {}).get("capacity") or {}).get(GPU, 0))
    on_node: dict[str, int] = {}
    left: list[str] = []
    for pod in work.pods:
        meta = pod.get("metadata") or {}
        if (why := left_by_drain(pod, work.evict_namespaces)) is not None:
            if spec.action == ActionKind.DRAIN_NODE and not is_daemon(pod):
                left.append(f"{meta.get('namespace')}/{meta.get('name')}: {why}")
            continue
        owner = owning_deployment(pod)
        if owner is not None and owner in work.deployments and is_serving(pod):
            on_node[owner] = on_node.get(owner, 0) + 1
    per_model: dict[str, float] = {}
    for owner, n in sorted(on_node.items()):
        dep = work.deployments[owner]
        healthy = int((dep.get("status") or {}).get("availableReplicas") or 0)
        drop = min(1.0, n / healthy) if healthy else 1.0
        model = ((dep["spec"]["template"].get("metadata") or {}).get("labels") or {}).get("model") or owner
        per_model[model] = round(max(per_model.get(model, 0.0), drop), 3)
    if spec.action == ActionKind.CORDON_NODE:
        # A cordon evicts nothing: the node's replicas keep serving and only new pods go elsewhere, so it
        # removes no serving capacity (the policy's fleet limit bounds how many GPU nodes may be cordoned).
        # What a later drain would take is shown as at risk. Counting it as removed denied cordoning a node
        # whose GPUs had failed (XID) when it held most of a model's replicas: the safe first step.
        return BlastRadius(gpus=gpus, replicas=0, capacity_drop=0.0, models=sorted(per_model), at_risk=per_model)
    return BlastRadius(gpus=gpus, replicas=sum(on_node.values()),
                       capacity_drop=max(per_model.values(), default=0.0), models=sorted(per_model),
                       per_model=per_model, left_in_place=left)


def is_ready(pod: dict[str, Any]) -> bool:
    """Ready as Kubernetes sees it (a hung replica still is): what the Service sends traffic to."""
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def pod_blast_radius(pod: dict[str, Any], deployment: dict[str, Any] | None, failing: bool) -> BlastRadius:
    """A pod restart takes away that one replica until its replacement is Ready.

    The capacity it removes is the pod's share of the Deployment's healthy replicas: nothing when the pod is
    not serving or is failing (a hung replica generates no tokens; one that answers mostly errors serves
    nobody), one replica's share otherwise. `ready_after` is how many Ready replicas stay while it is
    replaced; the policy refuses restarting the last one. A pod with no Deployment behind it (or one that
    could not be read) is counted as the model's whole capacity, with none left Ready.
    """
    ct = (pod.get("spec") or {}).get("containers") or []
    gpus = sum(gpu_devices(c) for c in ct)
    model = ((pod.get("metadata") or {}).get("labels") or {}).get("model", "")
    models = [model] if model else []
    if deployment is None:
        return BlastRadius(gpus=gpus, replicas=1, capacity_drop=1.0, models=models, ready_after=0)
    st = deployment.get("status") or {}
    replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
    ready_after = max(0, int(st.get("readyReplicas") or 0) - (1 if is_ready(pod) else 0))
    healthy = is_serving(pod) and not failing
    drop = min(1.0, 1 / replicas) if healthy and replicas else (1.0 if healthy else 0.0)
    return BlastRadius(gpus=gpus, replicas=1, capacity_drop=round(drop, 3), models=models,
                       failing=1 if failing and is_serving(pod) else 0, ready_after=ready_after)


def gpu_nodes_unschedulable_after(nodes: list[dict[str, Any]], target: str) -> int:
    """GPU nodes that would be unschedulable once `target` is cordoned: those cordoned now plus the target
    (when it has GPUs). The policy's fleet limit compares this count."""
    def gpus(n: dict[str, Any]) -> int:
        return int(((n.get("status") or {}).get("capacity") or {}).get(GPU, 0))

    return sum(1 for n in nodes if gpus(n) > 0 and ((n.get("spec") or {}).get("unschedulable")
                                                    or (n.get("metadata") or {}).get("name") == target))
