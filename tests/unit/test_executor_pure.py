"""The executor's pure parts: blast radius, the inverse of a change, the write call and the policy request."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent.change.executor.blast_radius import (
    NodeWorkload,
    blast_radius,
    gpu_nodes_unschedulable_after,
    max_unavailable,
    pod_blast_radius,
    replicas_delta,
)
from agent.change.executor.inverse import inverse
from agent.change.executor.reconcile import pod_replaced
from agent.change.executor.requests import policy_request, tool_call
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, ObjectRef

NOW = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
DEPLOY = ObjectRef(kind="Deployment", name="chat", namespace="serving")


def deployment(replicas: int, available: int, *, gpus: int = 1,
               strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Deployment",
            "metadata": {"name": "chat", "namespace": "serving", "labels": {"team": "llm"}},
            "spec": {"replicas": replicas, "strategy": strategy or {},
                     "template": {"metadata": {"labels": {"model": "llama"}},
                                  "spec": {"containers": [{"name": "vllm", "resources": {
                                      "limits": {"nvidia.com/gpu": str(gpus)}}}]}}},
            "status": {"availableReplicas": available}}


def spec(action: ActionKind, **params: Any) -> ChangeSpec:
    return ChangeSpec(action=action, cluster="sandbox", target=DEPLOY, params=params)


@pytest.mark.parametrize(("replicas", "available", "new", "drop"), [
    (4, 4, 2, 0.5),    # healthy replicas removed: half the capacity
    (4, 4, 6, 0.0),    # scaling up takes nothing
    (4, 3, 3, 0.0),    # the failing replica goes first: no healthy capacity lost
    (4, 2, 1, 0.25),   # two failing, one healthy removed
    (1, 1, 0, 1.0),    # the only healthy replica
])
def test_scale_blast_radius_counts_only_healthy_capacity(replicas: int, available: int, new: int, drop: float) -> None:
    b = blast_radius(spec(ActionKind.SCALE, replicas=new), deployment(replicas, available, gpus=2))
    assert b.capacity_drop == drop
    assert b.replicas == abs(new - replicas) and b.gpus == 2 * abs(new - replicas) and b.models == ["llama"]


def test_a_rollout_replacing_a_failing_single_replica_is_not_a_capacity_drop() -> None:
    recreate = {"type": "Recreate"}
    failing = blast_radius(spec(ActionKind.ROLLBACK, to_revision=3), deployment(1, 0, strategy=recreate))
    healthy = blast_radius(spec(ActionKind.ROLLBACK, to_revision=3), deployment(1, 1, strategy=recreate))
    assert failing.capacity_drop == 0.0
    assert healthy.capacity_drop == 1.0  # a healthy single replica is still protected


@pytest.mark.parametrize(("replicas", "available", "failing", "drop"), [
    (1, 1, 1, 0.0),     # the only replica is Ready but answers mostly 5xx: replacing it loses no healthy capacity
    (1, 1, 0, 1.0),     # a healthy single replica is still protected
    (3, 3, 1, 0.333),   # the controller may take down a healthy one first: one of three
    (3, 3, 3, 0.0),     # every replica fails (a bad rollout): nothing healthy to lose
    (3, 2, 1, 0.0),     # one down already (taken first), one failing: the one left healthy stays up
])
def test_a_rollback_counts_replicas_that_fail_as_no_healthy_capacity(replicas: int, available: int, failing: int,
                                                                     drop: float) -> None:
    """The sandbox's serving Deployments roll with maxSurge 0 / maxUnavailable 1 (no spare GPUs)."""
    strategy = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    b = blast_radius(spec(ActionKind.ROLLBACK, to_revision=3), deployment(replicas, available, strategy=strategy),
                     failing=failing)
    assert b.capacity_drop == drop and b.failing == failing


def test_failing_replicas_are_not_healthy_capacity_for_a_scale_down_either() -> None:
    b = blast_radius(spec(ActionKind.SCALE, replicas=2), deployment(3, 3), failing=1)
    assert b.capacity_drop == 0.0 and b.failing == 1


@pytest.mark.parametrize(("strategy", "replicas", "at_once"), [
    ({}, 8, 2),                                                          # 25 % rounded down
    ({}, 1, 0),                                                          # surge 1 first, nothing down
    ({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}, 4, 1),     # the API's floor of one
    ({"rollingUpdate": {"maxUnavailable": "50%", "maxSurge": 1}}, 5, 2),
    ({"type": "Recreate"}, 3, 3),
])
def test_max_unavailable_follows_the_deployment_controller(strategy: dict[str, Any], replicas: int,
                                                           at_once: int) -> None:
    assert max_unavailable(strategy, replicas) == at_once


def test_an_unreadable_target_has_no_blast_radius_and_no_replica_delta() -> None:
    assert blast_radius(spec(ActionKind.SCALE, replicas=1), None) == BlastRadius(gpus=0, replicas=0, capacity_drop=0.0)
    assert replicas_delta(spec(ActionKind.SCALE, replicas=1), None) == 0
    assert replicas_delta(spec(ActionKind.SCALE, replicas=1), deployment(3, 3)) == -2
    assert replicas_delta(spec(ActionKind.ROLLBACK, to_revision=2), deployment(3, 3)) == 0


def applied(s: ChangeSpec, *, revision: str | None = "7", result: dict[str, Any] | None = None) -> ChangeRequest:
    return ChangeRequest(id="chg-1", spec=s, spec_digest=s.digest(),
                         fingerprint=TargetFingerprint(kind="Deployment", name="chat", namespace="serving",
                                                       spec_hash="h", revision=revision),
                         risk="mutate", blast_radius=BlastRadius(gpus=0, replicas=0, capacity_drop=0), reason="t",
                         requester="agent:rules", created_at=NOW, status=ChangeStatus.APPLIED, result=result or {})


def test_the_inverse_of_a_scale_returns_to_the_recorded_replicas() -> None:
    undo = inverse(applied(spec(ActionKind.SCALE, replicas=2), result={"detail": {"from_replicas": 5}}))
    assert undo is not None and undo.action == ActionKind.SCALE and undo.params == {"replicas": 5}
    assert inverse(applied(spec(ActionKind.SCALE, replicas=2))) is None  # nothing recorded: no guess


def test_the_inverse_of_a_template_change_rolls_back_to_the_revision_before_it() -> None:
    undo = inverse(applied(spec(ActionKind.DEPLOY, image="vllm:2")))
    assert undo is not None and undo.action == ActionKind.ROLLBACK and undo.params == {"to_revision": 7}
    assert inverse(applied(spec(ActionKind.DEPLOY, image="vllm:2"), revision=None)) is None
    assert inverse(applied(spec(ActionKind.ROLLBACK, to_revision=6))) is None  # a rollback is not undone


def test_tool_call_names_the_write_tool_and_carries_the_precondition() -> None:
    name, params = tool_call(spec(ActionKind.SCALE, replicas=3), dry_run=False, expected_rv="42")
    assert name == "k8s_scale_deployment"
    assert params == {"dry_run": False, "expected_resource_version": "42", "namespace": "serving", "name": "chat",
                      "replicas": 3}
    node = ChangeSpec(action=ActionKind.CORDON_NODE, cluster="sandbox", target=ObjectRef(kind="Node", name="gpu-1"))
    assert tool_call(node, dry_run=True, expected_rv=None) == (
        "k8s_cordon_node", {"node": "gpu-1", "dry_run": True, "expected_resource_version": None})
    drain = node.model_copy(update={"action": ActionKind.DRAIN_NODE})
    assert tool_call(drain, dry_run=False, expected_rv="9", evict_namespaces=("llm-prod",)) == (
        "k8s_drain_node", {"node": "gpu-1", "dry_run": False, "expected_resource_version": "9",
                           "evict_namespaces": ["llm-prod"]})
    # Without the policy's namespaces a drain evicts nothing.
    assert tool_call(drain, dry_run=True, expected_rv=None)[1]["evict_namespaces"] == []
    with pytest.raises(KeyError):
        tool_call(spec(ActionKind.SCALE), dry_run=True, expected_rv=None)  # no replicas given


def test_policy_request_carries_what_policy_judges() -> None:
    s = spec(ActionKind.SCALE, replicas=1)
    obj = deployment(4, 4)
    req = policy_request(s, risk="mutate", obj=obj, requester="user:alice", blast=blast_radius(s, obj), at=NOW,
                         changes_last_hour=5, target_changes_last_hour=2)
    assert (req.action, req.risk, req.namespace, req.target_kind, req.target_name) == (
        "scale", "mutate", "serving", "Deployment", "chat")
    assert req.labels == {"team": "llm"} and req.requester == "user:alice"
    assert (req.replicas_delta, req.gpus, req.capacity_drop) == (-3, 3, 0.75)
    assert (req.changes_last_hour, req.target_changes_last_hour) == (5, 2)
    unread = policy_request(s, risk="mutate", obj=None, requester="x", blast=blast_radius(s, None), at=NOW,
                            changes_last_hour=0, target_changes_last_hour=0)
    assert unread.labels == {} and unread.capacity_drop == 0.0


# ---- node changes ------------------------------------------------------------------------------------
SERVING = ("llm-prod",)


def gpu_node(name: str = "gpu-1", gpus: int = 8, cordoned: bool = False) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": True} if cordoned else {},
            "status": {"capacity": {"nvidia.com/gpu": str(gpus)}}}


def pod(deploy: str, i: int, *, ns: str = "llm-prod", ready: bool = True, daemon: bool = False) -> dict[str, Any]:
    owner = {"kind": "DaemonSet", "name": deploy} if daemon else {"kind": "ReplicaSet", "name": f"{deploy}-5d8f"}
    return {"metadata": {"name": f"{deploy}-5d8f-{i}", "namespace": ns, "labels": {"pod-template-hash": "5d8f"},
                         "ownerReferences": [owner]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def serving(name: str, available: int, model: str, ns: str = "llm-prod") -> tuple[str, dict[str, Any]]:
    d = deployment(available, available)
    d["metadata"] = {"name": name, "namespace": ns}
    d["spec"]["template"]["metadata"]["labels"] = {"model": model}
    return f"{ns}/{name}", d


def node_spec(action: ActionKind = ActionKind.DRAIN_NODE) -> ChangeSpec:
    return ChangeSpec(action=action, cluster="sandbox", target=ObjectRef(kind="Node", name="gpu-1"))


@pytest.mark.parametrize(("pods", "deploys", "drop", "per_model", "left"), [
    # one of four healthy llama replicas on the node: a quarter of llama
    ([pod("chat", 0)], [serving("chat", 4, "llama")], 0.25, {"llama": 0.25}, []),
    # the only healthy replica of a model: a full drop, whatever else the node carries
    ([pod("chat", 0), pod("code", 0), pod("code", 1)], [serving("chat", 4, "llama"), serving("code", 2, "qwen")],
     1.0, {"llama": 0.25, "qwen": 1.0}, []),
    # a crash-looping pod on the node serves nothing: no drop
    ([pod("chat", 0, ready=False)], [serving("chat", 3, "llama")], 0.0, {}, []),
    # DaemonSet pods are never evicted and never counted
    ([pod("dcgm", 0, daemon=True)], [], 0.0, {}, []),
    # kube-system's DNS is left in place (named, with the reason) and not counted
    ([pod("coredns", 0, ns="kube-system"), pod("chat", 0)], [serving("coredns", 2, "dns", "kube-system"),
                                                              serving("chat", 2, "llama")],
     0.5, {"llama": 0.5}, ["kube-system/coredns-5d8f-0"]),
])
def test_a_node_changes_blast_radius_is_the_serving_capacity_per_model_on_it(
        pods: list[dict[str, Any]], deploys: list[tuple[str, dict[str, Any]]], drop: float,
        per_model: dict[str, float], left: list[str]) -> None:
    b = blast_radius(node_spec(), gpu_node(), NodeWorkload(pods=pods, deployments=dict(deploys),
                                                           evict_namespaces=SERVING))
    assert b.capacity_drop == drop and b.per_model == per_model and b.models == sorted(per_model)
    assert b.gpus == 8
    assert [entry.split(":")[0] for entry in b.left_in_place] == left
    assert all("kube-system is not one the policy lets a drain evict from (llm-prod)" in e for e in b.left_in_place)


def test_a_cordon_removes_no_serving_capacity_and_shows_what_a_drain_would_take() -> None:
    """A cordon evicts nothing: the policy's capacity limit must not refuse cordoning a failed node that holds
    every replica of a model (the fleet limit bounds cordons); the capacity on it is shown as at risk."""
    work = NodeWorkload(pods=[pod("chat", 0), pod("chat", 1), pod("coredns", 0, ns="kube-system")],
                        deployments=dict([serving("chat", 2, "llama")]), evict_namespaces=SERVING)
    cordon = blast_radius(node_spec(ActionKind.CORDON_NODE), gpu_node(), work)
    assert (cordon.capacity_drop, cordon.replicas, cordon.left_in_place) == (0.0, 0, [])
    assert cordon.at_risk == {"llama": 1.0} and cordon.models == ["llama"]
    drain = blast_radius(node_spec(ActionKind.DRAIN_NODE), gpu_node(), work)
    assert drain.capacity_drop == 1.0 and drain.per_model == {"llama": 1.0} and drain.at_risk == {}


@pytest.mark.parametrize(("nodes", "after"), [
    ([gpu_node("gpu-1"), gpu_node("gpu-2")], 1),                                   # just the target
    ([gpu_node("gpu-1"), gpu_node("gpu-2", cordoned=True)], 2),                    # one already cordoned
    ([gpu_node("gpu-1", cordoned=True), gpu_node("gpu-2")], 1),                    # the target itself
    ([gpu_node("gpu-1"), gpu_node("cpu-1", gpus=0, cordoned=True)], 1),            # CPU nodes do not count
    ([gpu_node("cpu-9", gpus=0)], 0),
])
def test_the_fleet_count_includes_nodes_already_cordoned(nodes: list[dict[str, Any]], after: int) -> None:
    target = "gpu-1" if any(n["metadata"]["name"] == "gpu-1" for n in nodes) else "cpu-9"
    assert gpu_nodes_unschedulable_after(nodes, target) == after


def test_a_node_proposal_asks_policy_with_the_per_model_drop_and_the_fleet_count() -> None:
    s = node_spec()
    work = NodeWorkload(pods=[pod("chat", 0), pod("chat", 1)], deployments=dict([serving("chat", 2, "llama")]),
                        evict_namespaces=SERVING)
    req = policy_request(s, risk="mutate", obj=gpu_node(), requester="agent:rules",
                         blast=blast_radius(s, gpu_node(), work), at=NOW, changes_last_hour=0,
                         target_changes_last_hour=0, unschedulable_gpu_nodes_after=2)
    assert (req.capacity_drop, req.gpus, req.unschedulable_gpu_nodes_after) == (1.0, 8, 2)


def replica_pod(*, ready: bool = True, phase: str = "Running", gpus: int = 4, uid: str = "u1") -> dict[str, Any]:
    return {"kind": "Pod",
            "metadata": {"name": "chat-7d9f8b6c5d-x2x9q", "namespace": "serving", "uid": uid,
                         "labels": {"model": "llama", "pod-template-hash": "7d9f8b6c5d"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "chat-7d9f8b6c5d", "controller": True}]},
            "spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def with_ready(dep: dict[str, Any], ready: int) -> dict[str, Any]:
    return dep | {"status": dep["status"] | {"readyReplicas": ready}}


@pytest.mark.parametrize(("replicas", "ready", "failing", "pod_ready", "drop", "ready_after"), [
    (3, 3, True, True, 0.0, 2),  # a hung (Ready, failing) replica: its capacity is already lost
    (3, 3, False, True, 0.333, 2),  # a healthy replica: one third of the model while it is replaced
    (1, 1, False, True, 1.0, 0),  # the only replica, healthy: all of the model, none left Ready
    (1, 1, True, True, 0.0, 0),  # the only replica, hung: no capacity lost, but none left Ready either
    (3, 2, False, False, 0.0, 2),  # a pod that is not Ready serves nothing
])
def test_a_pod_restart_counts_the_pods_healthy_capacity_and_the_ready_replicas_left(
        replicas: int, ready: int, failing: bool, pod_ready: bool, drop: float, ready_after: int) -> None:
    b = pod_blast_radius(replica_pod(ready=pod_ready), with_ready(deployment(replicas, ready, gpus=4), ready), failing)
    assert (b.capacity_drop, b.ready_after, b.replicas, b.gpus, b.models) == (drop, ready_after, 1, 4, ["llama"])


def test_a_pod_with_no_deployment_behind_it_counts_as_the_whole_model_with_none_left() -> None:
    b = pod_blast_radius(replica_pod(), None, failing=True)
    assert (b.capacity_drop, b.ready_after) == (1.0, 0)


def test_a_pod_restart_asks_policy_with_the_ready_replicas_left_and_deletes_that_pod() -> None:
    target = ObjectRef(kind="Pod", name="chat-7d9f8b6c5d-x2x9q", namespace="serving")
    s = ChangeSpec(action=ActionKind.RESTART_POD, cluster="sandbox", target=target)
    b = pod_blast_radius(replica_pod(), with_ready(deployment(3, 3), 3), failing=True)
    r = policy_request(s, risk="mutate", obj=replica_pod(), requester="agent:rules", blast=b, at=NOW,
                       changes_last_hour=0, target_changes_last_hour=0)
    assert (r.action, r.target_kind, r.ready_replicas_after, r.capacity_drop) == ("restart_pod", "Pod", 2, 0.0)
    assert tool_call(s, dry_run=False, expected_rv="42") == ("k8s_restart_pod", {
        "namespace": "serving", "name": "chat-7d9f8b6c5d-x2x9q", "dry_run": False, "expected_resource_version": "42"})
    with pytest.raises(ValueError, match="restarts a Pod"):
        tool_call(ChangeSpec(action=ActionKind.RESTART_POD, cluster="sandbox", target=DEPLOY), False, None)
    assert inverse(ChangeRequest.model_construct(spec=s, result={})) is None, "a restart has no undo to run"


def test_a_restart_landed_when_the_pod_it_named_is_gone_replaced_or_terminating() -> None:
    assert pod_replaced(None, "u1")
    assert pod_replaced(replica_pod(uid="u2"), "u1"), "a new pod under the same name is not the one approved"
    terminating = replica_pod()
    terminating["metadata"]["deletionTimestamp"] = "2026-12-06T08:00:00Z"
    assert pod_replaced(terminating, "u1")
    assert not pod_replaced(replica_pod(), "u1")
