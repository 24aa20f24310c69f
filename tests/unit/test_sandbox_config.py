"""The sandbox's data files and generated configuration: validated, and accepted by the real tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.sandbox import kwok, monitoring
from deploy.sandbox.fleet import DEFAULT_FLEET, Fleet, deployment_manifest, load_prices, node_manifest


def test_shipped_fleet_and_prices_load() -> None:
    fleet, catalog = Fleet.load(), load_prices()
    for pool in fleet.pools:
        assert pool.instance_type in catalog.instance_types
    assert {w.runtime for w in fleet.workloads} == {"vllm", "triton"}


def test_fleet_rejects_unknown_keys_and_dangling_references(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEFAULT_FLEET.read_text())
    doc["workloads"][0]["replicaz"] = 3
    bad = tmp_path / "fleet.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="replicaz"):
        Fleet.load(bad)
    doc = yaml.safe_load(DEFAULT_FLEET.read_text())
    doc["workloads"][0]["pool"] = "tpu"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="unknown pool 'tpu'"):
        Fleet.load(bad)
    bad.write_text("pools: [")
    with pytest.raises(ValueError, match="not valid YAML"):
        Fleet.load(bad)


def test_scaling_the_fleet_resizes_gpu_pools_only() -> None:
    fleet = Fleet.load()
    big = fleet.scaled(80)
    gpu_nodes = sum(p.nodes for p in big.pools if p.gpu)
    assert 76 <= gpu_nodes <= 84
    assert [p.nodes for p in big.pools if not p.gpu] == [p.nodes for p in fleet.pools if not p.gpu]


def test_gpu_nodes_and_workloads_request_gpus() -> None:
    fleet, catalog = Fleet.load(), load_prices()
    h100 = fleet.pool("h100")
    node = node_manifest(fleet, catalog, h100, 0)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node_manifest(fleet, catalog, h100, 0) == node, "node manifests are deterministic"
    dep = deployment_manifest(fleet, fleet.workload("chat-primary"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert dep["spec"]["template"]["metadata"]["labels"]["model-version"] == "2025.06.1"


def test_sandbox_rules_keep_expressions_and_pass_promtool(tmp_path: Path) -> None:
    prod = yaml.safe_load(monitoring.RULES.read_text())
    fast = monitoring.sandbox_rules()
    prod_rules = [r for g in prod["groups"] for r in g["rules"]]
    fast_rules = [r for g in fast["groups"] for r in g["rules"]]
    assert [r["expr"] for r in prod_rules] == [r["expr"] for r in fast_rules]
    assert all(r["for"] in ("15s", "0m") for r in fast_rules)
    path = monitoring.write_yaml(tmp_path / "rules.yaml", fast)
    for rules in (monitoring.RULES, path):
        res = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_and_alertmanager_configs_are_valid(tmp_path: Path) -> None:
    rules = monitoring.write_yaml(tmp_path / "rules.yaml", monitoring.sandbox_rules())
    prom = monitoring.write_yaml(tmp_path / "prometheus.yml", monitoring.prometheus_config(
        cluster="c", alertmanager="127.0.0.1:1", simulator="127.0.0.1:2", kube_state_metrics="127.0.0.1:3",
        rules_file=rules))
    res = subprocess.run(["promtool", "check", "config", str(prom)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    token = tmp_path / "webhook-token"
    token.write_text("t" * 64)
    am = monitoring.write_yaml(tmp_path / "am.yml", monitoring.alertmanager_config("http://127.0.0.1:8080/x", token))
    amtool = subprocess.run(["amtool", "check-config", str(am)], capture_output=True, text=True)
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr
    hook = yaml.safe_load(am.read_text())["receivers"][0]["webhook_configs"][0]
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": str(token)}, \
        "the sandbox's Alertmanager authenticates to opsagent serve"


def test_kwok_crash_stage_matches_only_crashing_versions() -> None:
    fleet = Fleet.load()
    stages = {s["metadata"]["name"]: s for s in kwok.stages(fleet)}
    crash_values = stages["pod-crash"]["spec"]["selector"]["matchExpressions"][1]["values"]
    assert crash_values == ["2025.07.1-longctx"]
    ready_expr = stages["pod-ready"]["spec"]["selector"]["matchExpressions"][2]
    pull_values = stages["pod-image-pull"]["spec"]["selector"]["matchExpressions"][2]["values"]
    assert pull_values == ["2025.07.4"]
    killed = stages["pod-crash-oomkilled-137"]["spec"]["selector"]["matchExpressions"][1]["values"]
    assert killed == ["2025.07.5"]
    assert "exitCode: 137" in stages["pod-crash-oomkilled-137"]["spec"]["next"]["statusTemplate"]
    start_values = stages["pod-starting"]["spec"]["selector"]["matchExpressions"][2]["values"]
    assert start_values == ["2025.07.6", "5"]
    assert ready_expr["operator"] == "NotIn" and sorted(ready_expr["values"]) == sorted(
        crash_values + killed + pull_values + start_values)
    late = stages["pod-ready-after-14400s"]["spec"]
    assert late["delay"]["durationMilliseconds"] == 14_400_000, "slow versions turn Ready only after startup_s"
    assert late["selector"]["matchExpressions"][-1]["values"] == start_values
