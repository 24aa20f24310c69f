"""The simulator follows the cluster: API-shaped snapshots, GPU allocation, traffic split."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy.sandbox.fleet import Fleet
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.placement import Placement, gpu_uuid

T = 1_795_000_000.0  # a fixed instant


def node(
    name: str,
    gpus: int,
    product: str = "NVIDIA-H100-80GB-HBM3",
    allocatable: int | None = None,
) -> dict[str, Any]:
    cap = {"cpu": "192", "memory": "2048Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    alloc = dict(cap, **{"nvidia.com/gpu": str(gpus if allocatable is None else allocatable)})
    return {
        "metadata": {
            "name": name,
            "labels": {
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": "81920",
                "node.kubernetes.io/instance-type": "p5.48xlarge",
            },
        },
        "spec": {"providerID": f"aws:///us-east-1a/i-0{name[-1]}abc"},
        "status": {
            "capacity": cap,
            "allocatable": alloc,
            "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
        },
    }


def pod(
    name: str,
    node_name: str,
    *,
    app: str = "chat-primary",
    ns: str = "llm-prod",
    gpus: int = 4,
    version: str = "2025.06.1",
    ready: bool = True,
    phase: str = "Running",
    ip: str = "10.244.0.7",
    model: str = "llama-3.1-70b-instruct",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "labels": {
                "app.kubernetes.io/name": app,
                "model": model,
                "model-version": version,
                "serving-runtime": "vllm",
                "team": "assistant",
            },
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{app}-abc", "controller": True}],
        },
        "spec": {
            "nodeName": node_name,
            "containers": [
                {
                    "name": "server",
                    "image": "vllm/vllm-openai:v0.10.1",
                    "resources": {
                        "requests": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": str(gpus)}
                    },
                }
            ],
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "hostIP": "10.0.0.9",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


def test_snapshot_parses_api_shaped_objects() -> None:
    snap = ClusterSnapshot.from_dicts(
        [pod("chat-primary-1", "n1")],
        [node("n1", 8)],
        [
            {
                "metadata": {"name": "chat-primary", "namespace": "llm-prod"},
                "spec": {"replicas": 3},
                "status": {"availableReplicas": 2},
            }
        ],
        {
            "data": {
                "faults.json": json.dumps({"traffic": {"llm-prod/chat-lite": 3}, "xid": {"n1": 79}})
            }
        },
    )
    p = snap.pods[0]
    assert (p.namespace, p.name, p.ready, p.gpu_request, p.container) == (
        "llm-prod",
        "chat-primary-1",
        True,
        4,
        "server",
    )
    assert p.containers[0].requests["memory"] == 128 * 2**30 and p.owner is not None
    n = snap.nodes[0]
    assert n.gpu_capacity == 8 and n.instance_id == "i-01abc" and n.instance_type == "p5.48xlarge"
    assert snap.deployments[0].replicas == 3 and snap.deployments[0].available_replicas == 2
    assert snap.faults.traffic == {"llm-prod/chat-lite": 3.0} and snap.faults.xid == {"n1": 79}
    assert ClusterSnapshot.from_dicts([], []).faults.traffic == {}  # no ConfigMap: no faults


def test_gpus_go_to_running_pods_in_name_order(fleet: Fleet) -> None:
    snap = ClusterSnapshot.from_dicts(
        [
            pod("chat-primary-b", "n1", ip="10.244.0.2"),
            pod("chat-primary-a", "n1", ip="10.244.0.1"),
            pod("chat-primary-c", "", phase="Pending", ready=False),
        ],
        [node("n1", 8)],
    )
    pl = Placement(fleet, snap)
    by_name = {r.pod.name: r for r in pl.roles}
    assert by_name["chat-primary-a"].gpu_indices == (0, 1, 2, 3)
    assert by_name["chat-primary-b"].gpu_indices == (4, 5, 6, 7)
    assert "chat-primary-c" not in {r.pod.name for r in pl.serving}
    holders = [s.holder.pod.name if s.holder else None for s in pl.gpus]
    assert holders == ["chat-primary-a"] * 4 + ["chat-primary-b"] * 4
    assert pl.gpus[3].uuid == gpu_uuid("n1", 3) and pl.gpus[3].uuid.startswith("GPU-")
    assert pl.gpus[0].model_name == "NVIDIA H100 80GB HBM3"


def test_traffic_splits_over_ready_pods_only(fleet: Fleet) -> None:
    two = Placement(
        fleet,
        ClusterSnapshot.from_dicts(
            [
                pod("chat-primary-a", "n1"),
                pod("chat-primary-b", "n1"),
                pod("chat-primary-c", "n2", ready=False),
            ],
            [node("n1", 8), node("n2", 8)],
        ),
    )
    rps = two.pod_rps(T)
    demand = two.workload_demand(fleet.workload("chat-primary"), T)
    assert rps == {
        ("llm-prod", "chat-primary-a"): demand / 2,
        ("llm-prod", "chat-primary-b"): demand / 2,
    }
    sig = two.evaluate(T)
    assert ("llm-prod", "chat-primary-c") not in sig.replicas  # not Ready: no serving metrics
    # its GPUs are still allocated (it is Running) but idle
    c_gpus = [
        g
        for s, g in zip(two.gpus, sig.gpus, strict=True)
        if s.holder and s.holder.pod.name.endswith("c")
    ]
    assert len(c_gpus) == 4 and all(g.gr_active == 0 for g in c_gpus)


def test_model_version_label_selects_the_performance_model(fleet: Fleet) -> None:
    pl = Placement(
        fleet,
        ClusterSnapshot.from_dicts(
            [
                pod("chat-primary-a", "n1", version="2025.07.0"),
                pod("chat-primary-b", "n1", version="2025.07.1-longctx", ready=False),
            ],
            [node("n1", 8)],
        ),
    )
    roles = {r.pod.name: r for r in pl.roles}
    assert (
        roles["chat-primary-a"].version is not None
        and roles["chat-primary-a"].version.error_rate == 0.07
    )
    assert roles["chat-primary-b"].crashing and not roles["chat-primary-b"].serving
    crash_gpu = next(
        g
        for s, g in zip(pl.gpus, pl.evaluate(T).gpus, strict=True)
        if s.holder and s.holder.pod.name == "chat-primary-b"
    )
    assert crash_gpu.fb_free_mib < 1200  # CUDA OOM: memory all but exhausted


def test_xid_node_loses_its_traffic_and_reports_the_code(fleet: Fleet) -> None:
    faults = {"data": {"faults.json": json.dumps({"xid": {"n1": 79}})}}
    pl = Placement(
        fleet,
        ClusterSnapshot.from_dicts(
            [pod("chat-primary-a", "n1"), pod("chat-primary-b", "n2")],
            [node("n1", 8, allocatable=0), node("n2", 8)],
            faults_configmap=faults,
        ),
    )
    rps = pl.pod_rps(T)
    assert rps[("llm-prod", "chat-primary-a")] == 0
    assert rps[("llm-prod", "chat-primary-b")] == pl.workload_demand(
        fleet.workload("chat-primary"), T
    )
    sig = pl.evaluate(T)
    for slot, g in zip(pl.gpus, sig.gpus, strict=True):
        if slot.node.name == "n1":
            assert g.xid == 79 and g.util_pct == 0
        else:
            assert g.xid == 0


def test_traffic_fault_multiplies_one_workload(fleet: Fleet) -> None:
    pods = [pod("chat-primary-a", "n1")]
    base = Placement(fleet, ClusterSnapshot.from_dicts(pods, [node("n1", 8)]))
    faults = {"data": {"faults.json": json.dumps({"traffic": {"llm-prod/chat-primary": 0.05}})}}
    idle = Placement(
        fleet, ClusterSnapshot.from_dicts(pods, [node("n1", 8)], faults_configmap=faults)
    )
    assert idle.pod_rps(T)[("llm-prod", "chat-primary-a")] == pytest.approx(
        0.05 * base.pod_rps(T)[("llm-prod", "chat-primary-a")]
    )
