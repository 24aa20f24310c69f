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


MIG = Shape(replicas=2, gpus=1, gpu_product="NVIDIA-H100-80GB-HBM3", instance_type="p5.48xlarge",
            mig_profile="3g.40gb", price_per_replica_hour=6.88 * 3 / 7)


def test_a_mig_profile_is_a_move_to_one_slice_of_the_same_version() -> None:
    planned = change_specs(_rec(MIG), "sandbox-gpu-1")
    assert [s.action for s in planned.specs] == [ActionKind.DEPLOY]
    spec = planned.specs[0]
    assert is_move(spec) and spec.params["mig_profile"] == "3g.40gb" and "gpus" not in spec.params
    assert "one MIG 3g.40gb slice of NVIDIA-H100-80GB-HBM3 per replica" in planned.note
    assert "node-pool change" not in planned.note and "no executor action" not in planned.note
    req = move_request(spec)
    assert req.mig_profile == "3g.40gb" and req.gpus is None and req.version is None
    rid, back = spec_from_button(button_value(_rec(MIG), spec))
    assert rid == "rs-0123456789"
    assert back == spec and move_request(back) == req


def _mig_node(name: str, slices: int, *, product: str = "NVIDIA-H100-80GB-HBM3",
              instance: str = "p5.48xlarge") -> dict[str, Any]:
    """A node of the NVIDIA device plugin's mixed strategy: every GPU cut into 3g.40gb slices, no whole GPU left."""
    n = node(name, pool="h100-mig", gpus=0, instance=instance, mib=81559)
    n["metadata"]["labels"] |= {"nvidia.com/gpu.product": product, "nvidia.com/mig.config": "all-3g.40gb"}
    n["status"]["allocatable"] = {"nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": str(slices)}
    return n


def _slice_pod(name: str, on: str, profile: str = "3g.40gb") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "llm-prod"},
            "spec": {"nodeName": on, "containers": [{"name": "s", "resources": {
                "limits": {f"nvidia.com/mig-{profile}": "1"}}}]}, "status": {"phase": "Running"}}


def test_a_mig_move_asks_for_one_slice_at_tp_1_and_is_counted_in_free_slices() -> None:
    req = move_request(change_specs(_rec(MIG), "c").specs[0])
    obj = _h100_rollout()
    obj["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "--model", "/models/llama-3.1-8b-instruct/2025.05.2", "--tensor-parallel-size", "2"]
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "4", "nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    params, summary = deploy_params(req, "Rollout", obj)
    assert params["mig_profile"] == "3g.40gb" and "gpus" not in params
    assert params["args"][-2:] == ["--tensor-parallel-size", "1"]  # vLLM on one slice: no tensor parallelism
    assert "2 GPU on node.kubernetes.io/instance-type=p5.48xlarge → 1 MIG 3g.40gb slice on" in summary
    full = _mig_node("mig-0", 2)
    busy = [_slice_pod("s0", "mig-0"), _slice_pod("s1", "mig-0")]
    # Whole free GPUs elsewhere do not count: the pods ask for a slice of this profile.
    h100 = node("h100-0", pool="h100", gpus=8, instance="p5.48xlarge", mib=81559)
    params["tolerations"] = move_tolerations([], [h100, full], req.node_selector or {})
    found, _ = checks(req, "Rollout", obj, params, [h100, full], busy, CATALOG)
    cap = next(c for c in found if c.name == "GPU capacity")
    assert not cap.ok
    assert "2 new pod(s) on MIG 3g.40gb need 2 free nvidia.com/mig-3g.40gb slices" in cap.summary
    assert "room for 0 pod(s) (0 free slices on 1 node(s))" in cap.summary
    found, _ = checks(req, "Rollout", obj, params, [h100, full, _mig_node("mig-1", 7)], busy, CATALOG)
    assert all(c.ok for c in found), found
    mem = next(c for c in found if c.name == "GPU memory")
    assert "39.5 GiB per GPU (MIG 3g.40gb on NVIDIA-H100-80GB-HBM3 (price catalog)" in mem.details[0]
    labelled = _mig_node("mig-1", 7)
    labelled["metadata"]["labels"]["nvidia.com/mig-3g.40gb.memory"] = "40192"  # what GFD says on a real H100
    found, _ = checks(req, "Rollout", obj, params, [h100, labelled, full], busy, CATALOG)
    mem = next(c for c in found if c.name == "GPU memory")
    assert "39.25 GiB per GPU (MIG 3g.40gb: node mig-1 label nvidia.com/mig-3g.40gb.memory=40192 MiB)" \
        in mem.details[0]
    assert "÷ TP 1" in mem.details[2]
    cost = next(c for c in found if c.name == "cost")
    per_gpu = CATALOG.instance_types["p5.48xlarge"].price_per_gpu_hour
    assert f"{2 * (2 - 3 / 7) * per_gpu * 730:,.0f}/month" in cost.summary
    assert "2 × 1 MIG 3g.40gb slice (3/7 GPU)" in cost.details[1]


def test_a_model_too_big_for_the_slice_is_refused_with_the_slice_memory() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", node_selector={INSTANCE_TYPE_LABEL: "p5.48xlarge"},
                        mig_profile="3g.40gb", model="llama-3.1-70b-instruct")
    obj = _h100_rollout()
    params, _ = deploy_params(req, "Rollout", obj)
    params["tolerations"] = move_tolerations([], [_mig_node("mig-0", 7)], req.node_selector or {})
    found, _ = checks(req, "Rollout", obj, params, [_mig_node("mig-0", 7)], [], CATALOG)
    mem = next(c for c in found if c.name == "GPU memory")
    assert not mem.ok and "does not fit 39.5 GiB GPUs" in mem.summary


def test_a_mig_moves_change_request_is_priced_per_slice() -> None:
    spec = change_specs(_rec(MIG), "c").specs[0]
    obj = _h100_rollout()  # 2 replicas of 1 H100 each
    per_gpu = CATALOG.instance_types["p5.48xlarge"].price_per_gpu_hour
    assert predicted_cost_delta(spec, obj, CATALOG) == pytest.approx(2 * (3 / 7 - 1) * per_gpu * 730, abs=0.01)
    # And back from a slice to a whole GPU (what the inverse would cost).
    on_slice = _h100_rollout()
    on_slice["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-3g.40gb": "1"}}
    back = spec.model_copy(update={"params": {**spec.params, "mig_profile": None, "gpus": 1}})
    assert predicted_cost_delta(back, on_slice, CATALOG) == pytest.approx(2 * (1 - 3 / 7) * per_gpu * 730, abs=0.01)


def test_whole_gpus_and_a_slice_at_once_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        DeployRequest(namespace="llm-prod", name="x", gpus=1, mig_profile="3g.40gb")
    for bad in ("3g.40gb,cpu=64", "8g.80gb", "nvidia.com/gpu", "3g.40gb\n"):
        with pytest.raises(ValueError):
            DeployRequest(namespace="llm-prod", name="x", mig_profile=bad)


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
