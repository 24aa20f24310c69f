"""The sandbox's Rollout-managed models: the overlay merges, the Rollout is gated by the shipped analysis."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.sandbox import components, rollouts
from deploy.sandbox.fleet import LABEL_APP, LABEL_MODEL_VERSION, Fleet
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.model import VllmSignals
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.series import build_series


def test_the_overlay_adds_a_pool_and_rollout_workloads_without_touching_the_base() -> None:
    base = Fleet.load()
    fleet, names = rollouts.merged_fleet(base)
    assert names == ("assist-mini", "notes-assist", "digest-assist")
    assert {w.name for w in base.workloads} < {w.name for w in fleet.workloads}
    assert [p.name for p in fleet.pools][: len(base.pools)] == [p.name for p in base.pools]
    w = fleet.workload("assist-mini")
    pool = fleet.pool(w.pool)
    assert pool.nodes > w.replicas, "the canary's surge pod has a GPU to land on"


def test_an_overlay_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "o.yaml"
    bad.write_text("workload: []\n")
    with pytest.raises(ValueError, match="unknown keys"):
        rollouts.merged_fleet(Fleet.load(), bad)


def test_the_rollout_runs_a_canary_gated_by_the_projects_analysis_at_each_step() -> None:
    fleet, _ = rollouts.merged_fleet(Fleet.load())
    w = fleet.workload("assist-mini")
    ro = rollouts.rollout_manifest(fleet, w, "http://127.0.0.1:9090")
    steps = ro["spec"]["strategy"]["canary"]["steps"]
    assert [s.get("setWeight") for s in steps if "setWeight" in s] == [10, 50]
    analyses = [s["analysis"] for s in steps if "analysis" in s]
    assert len(analyses) == 2 and all(a["templates"] == [{"templateName": "gpu-serving-slo"}] for a in analyses)
    args = {a["name"]: a for a in analyses[0]["args"]}
    assert args["canary-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    assert args["ttft-p95-max"]["value"] == "0.5" and args["error-share-max"]["value"] == "0.01"
    template = rollouts.analysis_template()
    declared = {a["name"] for a in template["spec"]["args"]}
    assert set(args) == declared, "the Rollout passes exactly the arguments the template declares"
    assert ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] == "2025.05.2"


def test_the_analysis_fails_on_breach_and_is_inconclusive_without_data() -> None:
    for m in rollouts.analysis_template()["spec"]["metrics"]:
        assert m["failureLimit"] == 0, "one breach aborts"
        assert "len(result) > 0" in m["successCondition"] and "len(result) > 0" in m["failureCondition"], \
            "an empty result matches neither condition: Inconclusive, never Successful"
        assert "isNaN" in m["successCondition"]
        assert 'rollouts_pod_template_hash="{{args.canary-hash}}"' in m["provider"]["prometheus"]["query"]


def test_controller_binds_nothing_but_the_ports_it_is_given() -> None:
    argv = rollouts.controller_argv(Path("/x/rollouts-controller"), Path("/k"), 17290, 17291)
    assert "--metricsPort=17290" in argv and "--healthzPort=17291" in argv and "--leader-elect=false" in argv
    assert components.build_component("rollouts_controller") == "argo-rollouts"


def test_simulated_series_of_rollout_pods_carry_their_pod_template_hash() -> None:
    fleet, _ = rollouts.merged_fleet(Fleet.load())
    w = fleet.workload("assist-mini")
    node = {"metadata": {"name": "l4-rollouts-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
            "status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}}}

    def pod(name: str, version: str, rhash: str | None) -> dict[str, object]:
        labels = {LABEL_APP: w.name, "model": w.model, LABEL_MODEL_VERSION: version}
        if rhash:
            labels["rollouts-pod-template-hash"] = rhash
        return {"metadata": {"name": name, "namespace": w.namespace, "labels": labels},
                "spec": {"nodeName": "l4-rollouts-0", "containers": [
                    {"name": "server", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running", "podIP": "10.0.0.9",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    snap = ClusterSnapshot.from_dicts([pod("a", "2025.09.0", "abc123"), pod("b", "2025.05.2", None)], [node])
    specs, _ = build_series(Placement(fleet, snap))
    hashes: dict[str, set[str | None]] = {}
    for s in specs:
        labels = dict(s.labels)
        if labels.get("job") == "vllm":  # the serving exporter's series (DCGM's carry their own labels)
            hashes.setdefault(labels["pod"], set()).add(labels.get("rollouts_pod_template_hash"))
    assert hashes == {"a": {"abc123"}, "b": {None}}


def test_the_mig_pool_advertises_slices_with_the_labels_real_nodes_carry() -> None:
    from deploy.sandbox.fleet import load_prices, node_manifest

    fleet, _ = rollouts.merged_fleet(Fleet.load())
    n = node_manifest(fleet, load_prices(), fleet.pool("a100-mig"), 0)
    labels, alloc = n["metadata"]["labels"], n["status"]["allocatable"]
    # The device plugin's mixed strategy: every A100 cut in two 3g.20gb slices, no whole GPU left.
    assert alloc["nvidia.com/mig-3g.20gb"] == "16" and "nvidia.com/gpu" not in alloc
    assert labels["nvidia.com/mig.strategy"] == "mixed" and labels["nvidia.com/mig.config"] == "all-3g.20gb"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["nvidia.com/mig-3g.20gb.count"] == "16" and labels["nvidia.com/mig-3g.20gb.memory"] == "19968"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in n["spec"]["taints"]


@pytest.mark.parametrize("layout", [{"8g.40gb": 1}, {"3g.20gb": 3}, {"nvidia.com/gpu": 1}])
def test_a_mig_layout_no_gpu_can_hold_is_refused(layout: dict[str, int]) -> None:
    from deploy.sandbox.fleet import Pool

    with pytest.raises(ValueError, match="MIG"):
        Pool(name="x", instance_type="p4d.24xlarge", nodes=1, zone="us-east-1a", mig=layout)


def test_a_replica_on_a_mig_slice_serves_at_its_share_of_the_gpu() -> None:
    fleet, _ = rollouts.merged_fleet(Fleet.load())
    w = fleet.workload("digest-assist")
    node = {"metadata": {"name": "a100-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}},
            "status": {"capacity": {"nvidia.com/gpu": "8", "nvidia.com/mig-3g.20gb": "16"},
                       "allocatable": {"nvidia.com/gpu": "8", "nvidia.com/mig-3g.20gb": "16"}}}

    def pod(name: str, resource: str) -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": w.namespace,
                             "labels": {LABEL_APP: w.name, "model": w.model, LABEL_MODEL_VERSION: w.version}},
                "spec": {"nodeName": "a100-0", "containers": [
                    {"name": "server", "resources": {"requests": {resource: "1"}}}]},
                "status": {"phase": "Running", "podIP": "10.0.0.9",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    pl = Placement(fleet, ClusterSnapshot.from_dicts([pod("whole", "nvidia.com/gpu"),
                                                      pod("slice", "nvidia.com/mig-3g.20gb")], [node]))
    speed = {r.pod.name: r.speed for r in pl.serving}
    assert speed["whole"] == pytest.approx(fleet.gpu_speed["NVIDIA-A100-SXM4-40GB"])
    assert speed["slice"] == pytest.approx(speed["whole"] * 3 / 7)
    sig = pl.evaluate(1_780_012_800.0)
    ttft = {k[1]: v.ttft.median for k, v in sig.replicas.items() if isinstance(v, VllmSignals)}
    assert ttft["slice"] > ttft["whole"], "a slice with 3/7 of the compute answers slower at the same load"
