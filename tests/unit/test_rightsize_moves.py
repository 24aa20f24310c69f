"""GPU-class moves from the cost report: a recommendation to another GPU type or count becomes a deployment
of the same version on the new class (planned when its button is clicked), never a replica change in disguise."""

from __future__ import annotations

from typing import Any

import pytest

from agent.change.deploy import DeployRequest, checks, deploy_params, move_tolerations
from agent.models import ActionKind
from agent.rightsize.changes import (
    INSTANCE_TYPE_LABEL,
    button_value,
    change_specs,
    is_move,
    move_request,
    predicted_cost_delta,
    spec_from_button,
)
from agent.rightsize.engine import Confidence, Recommendation, Shape, SloRisk
from tests.unit.test_deploy import CATALOG, node, pod, workload


def _rec(new: Shape, *, current: Shape | None = None) -> Recommendation:
    cur = current or Shape(replicas=2, gpus=1, gpu_product="NVIDIA-H100-80GB-HBM3", instance_type="p5.48xlarge",
                           price_per_replica_hour=6.88)
    return Recommendation(id="rs-0123456789", namespace="llm-prod", name="notes-assist", model="llama-3.1-8b-instruct",
                          team="assistant", confidence=Confidence.MEDIUM, reason=f"{cur.describe()} → {new.describe()}",
                          current=cur, recommended=new, monthly_cost_current=cur.monthly_cost,
                          monthly_cost_recommended=new.monthly_cost,
                          monthly_savings=cur.monthly_cost - new.monthly_cost,
                          slo_risk=SloRisk.MEDIUM, slo_risk_reason="scaled by relative throughput; canary it",
                          evidence={"replicas_on_current_gpu": 2})


A100 = Shape(replicas=2, gpus=1, gpu_product="NVIDIA-A100-SXM4-40GB", instance_type="p4d.24xlarge",
             price_per_replica_hour=2.745)


def test_another_gpu_type_is_one_deployment_of_the_same_version_on_the_new_class() -> None:
    planned = change_specs(_rec(A100), "sandbox-gpu-1")
    assert [s.action for s in planned.specs] == [ActionKind.DEPLOY]
    spec = planned.specs[0]
    assert is_move(spec) and spec.params["node_selector"] == {INSTANCE_TYPE_LABEL: "p4d.24xlarge"}
    assert "gpus" not in spec.params  # one GPU before and after: the request stays as it is
    assert "same version" in planned.note and "node-pool change" not in planned.note
    req = move_request(spec)
    assert req == DeployRequest(namespace="llm-prod", name="notes-assist",
                                node_selector={INSTANCE_TYPE_LABEL: "p4d.24xlarge"})
    assert req.version is None and req.image is None and req.args is None  # the version does not change
    # What the Slack button carries reads back to the same move.
    rid, back = spec_from_button(button_value(_rec(A100), spec))
    assert rid == "rs-0123456789" and back == spec


def test_a_gpu_count_change_is_a_move_with_the_new_count_and_a_replica_change_waits() -> None:
    cur = Shape(replicas=3, gpus=4, gpu_product="NVIDIA-A100-SXM4-40GB", instance_type="p4d.24xlarge",
                price_per_replica_hour=10.98)
    new = Shape(replicas=4, gpus=2, gpu_product="NVIDIA-A100-SXM4-40GB", instance_type="p4d.24xlarge",
                price_per_replica_hour=5.49)
    planned = change_specs(_rec(new, current=cur), "c")
    assert len(planned.specs) == 1 and planned.specs[0].params["gpus"] == 2
    assert "3 → 4 replicas in a later change" in planned.note
    assert move_request(planned.specs[0]).gpus == 2


def test_a_mig_profile_is_not_proposed_as_a_move_and_says_why() -> None:
    mig = Shape(replicas=1, gpus=1, gpu_product="NVIDIA-A100-SXM4-40GB", instance_type="p4d.24xlarge",
                mig_profile="3g.20gb", price_per_replica_hour=1.18)
    planned = change_specs(_rec(mig), "c")
    assert not any(is_move(s) for s in planned.specs)
    assert "3g.20gb MIG slice" in planned.note and "no executor action sets" in planned.note


def test_a_spec_that_is_not_a_move_is_not_turned_into_a_deployment() -> None:
    scale = change_specs(_rec(A100.model_copy(update={"gpu_product": "NVIDIA-H100-80GB-HBM3",
                                                       "instance_type": "p5.48xlarge", "replicas": 1})), "c").specs[0]
    assert scale.action == ActionKind.SCALE and not is_move(scale)
    with pytest.raises(ValueError, match="not a GPU-class move"):
        move_request(scale)
    forged = scale.model_copy(update={"action": ActionKind.DEPLOY, "params": {"gpu_class_move": True}})
    with pytest.raises(ValueError, match="node selector"):
        move_request(forged)


def _h100_rollout() -> dict[str, Any]:
    obj = workload(replicas=2)
    obj["spec"]["template"]["spec"]["nodeSelector"] = {INSTANCE_TYPE_LABEL: "p5.48xlarge"}
    obj["spec"]["template"]["spec"]["tolerations"] = []
    return obj


def test_a_move_tolerates_the_new_pools_gpu_taint_and_no_other() -> None:
    nodes = [node("a100-0", pool="a100", gpus=8, instance="p4d.24xlarge", mib=40960)]
    nodes[0]["spec"]["taints"].append({"key": "dedicated", "value": "team-x", "effect": "NoSchedule"})
    added = move_tolerations([], nodes, {INSTANCE_TYPE_LABEL: "p4d.24xlarge"})
    assert added == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    have = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert move_tolerations(have, nodes, {INSTANCE_TYPE_LABEL: "p4d.24xlarge"}) is None


def test_the_move_is_checked_on_the_new_pool_and_refused_with_numbers_when_it_is_full() -> None:
    req = move_request(change_specs(_rec(A100), "c").specs[0])
    obj = _h100_rollout()
    params, summary = deploy_params(req, "Rollout", obj)
    assert "GPU-class move 1 GPU on node.kubernetes.io/instance-type=p5.48xlarge → 1 GPU on " \
           "node.kubernetes.io/instance-type=p4d.24xlarge" in summary
    h100 = node("h100-0", pool="h100", gpus=8, instance="p5.48xlarge", mib=81559)
    a100 = node("a100-0", pool="a100", gpus=8, instance="p4d.24xlarge", mib=40960)
    params["tolerations"] = move_tolerations([], [h100, a100], req.node_selector or {})
    busy = [pod(f"a{i}", "a100-0") for i in range(8)]  # the A100 pool is full
    found, _ = checks(req, "Rollout", obj, params, [h100, a100], busy, CATALOG)
    cap = next(c for c in found if c.name == "GPU capacity")
    assert not cap.ok and "room for 0 pod(s) (0 free GPUs)" in cap.summary
    assert "node.kubernetes.io/instance-type=p4d.24xlarge" in cap.summary
    found, _ = checks(req, "Rollout", obj, params, [h100, a100], busy[:6], CATALOG)
    assert all(c.ok for c in found), found
    cost = next(c for c in found if c.name == "cost")
    saving = 2 * (CATALOG.instance_types["p5.48xlarge"].price_per_gpu_hour
                  - CATALOG.instance_types["p4d.24xlarge"].price_per_gpu_hour) * 730
    assert f"{saving:,.0f}/month" in cost.summary


def test_a_moves_change_request_is_priced_at_the_new_class() -> None:
    req = move_request(change_specs(_rec(A100), "c").specs[0])
    obj = workload(replicas=2)  # selected by a pool label: the preflight records the instance types it found
    params, _ = deploy_params(req, "Rollout", obj)
    spec = change_specs(_rec(A100), "c").specs[0].model_copy(update={"params": {
        **params, "instance_type": "p5.48xlarge", "new_instance_type": "p4d.24xlarge"}})
    h100, a100 = (CATALOG.instance_types[k].price_per_gpu_hour for k in ("p5.48xlarge", "p4d.24xlarge"))
    assert predicted_cost_delta(spec, obj, CATALOG) == pytest.approx(2 * (a100 - h100) * 730, abs=0.01)
    unknown = spec.model_copy(update={"params": {**params, "instance_type": "p5.48xlarge",
                                                 "node_selector": {"pool": "x"}}})
    assert predicted_cost_delta(unknown, obj, CATALOG) is None  # a class it cannot price is not priced as free
