"""The executor's pure parts: blast radius, the inverse of a change, the write call and the policy request."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent.change.executor.blast_radius import blast_radius, max_unavailable, replicas_delta
from agent.change.executor.inverse import inverse
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
