"""Right-sizing on the real sandbox: `idle-overprovision` is found, priced and turned into a change request."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from deploy.sandbox import faults
from deploy.sandbox.fleet import Fleet
from tools.rightsize.catalog import DEFAULT_CATALOG, HOURS_PER_MONTH, PriceCatalog

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("clean_faults")]


def _prom_value(url: str, query: str) -> float | None:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    res = r["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def _cli(sandbox: dict[str, Any], state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.entry.cli", *args, "--sandbox", "--sandbox-dir", sandbox["dir"],
                           "--state-dir", str(state)], capture_output=True, text=True, timeout=300)


def test_idle_overprovision_is_found_and_priced(sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet,
                                                tmp_path: Path) -> None:
    target = fleet.faults["idle-overprovision"]["workload"]
    w = fleet.workload(target)
    faults.inject(admin, fleet, "idle-overprovision")
    prom = sandbox["endpoints"]["prometheus"]
    deadline = time.monotonic() + 120
    query = f'kube_deployment_spec_replicas{{namespace="{w.namespace}",deployment="{target}"}}'
    while _prom_value(prom, query) != 6.0:
        assert time.monotonic() < deadline, "Prometheus never saw the 6 replicas"
        time.sleep(3)

    out = _cli(sandbox, tmp_path, "report", "cost", "--window", "14d", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["queries"] <= 20
    rec = next(r for r in doc["recommendations"] if r["name"] == target)
    print(f"[rightsize] {rec['reason']}; ${rec['monthly_cost_current']:,.2f} → ${rec['monthly_cost_recommended']:,.2f}"
          f"/month, saves ${rec['monthly_savings']:,.2f} (windows {len(rec['scale_windows'])}); fleet node cost "
          f"${doc['cost']['node_cost']:,.2f}, idle ${doc['cost']['idle_cost']:,.2f}, reconciliation error "
          f"{doc['cost']['reconciliation_error']}; {doc['queries']} queries in {doc['query_seconds']}s")
    cur, new = rec["current"], rec["recommended"]
    assert cur["replicas"] == 6 and cur["gpus"] == w.gpus
    assert new["replicas"] < 6 or new["gpu_product"] != cur["gpu_product"]
    # Savings are the price catalog's arithmetic: GPUs × per-GPU price × 730 h, plus scale-down windows.
    catalog = PriceCatalog.load(DEFAULT_CATALOG)
    it = catalog.instance_types[fleet.pool(w.pool).instance_type]
    assert rec["monthly_cost_current"] == pytest.approx(6 * w.gpus * it.price_per_hour / it.gpus * HOURS_PER_MONTH,
                                                        abs=0.01)
    new_cost = new["replicas"] * new["price_per_replica_hour"] * HOURS_PER_MONTH
    windows = sum(x["monthly_savings"] for x in rec["scale_windows"])
    assert rec["monthly_savings"] == pytest.approx(rec["monthly_cost_current"] - new_cost + windows, abs=0.05)
    assert rec["monthly_savings"] > 0.5 * rec["monthly_cost_current"]

    cost = doc["cost"]
    assert cost["idle_cost"] > 0 and cost["node_cost"] > 0
    assert abs(cost["reconciliation_error"]) <= 0.01 * cost["node_cost"]
    assert cost["workload_cost"] + cost["unallocated_cost"] == pytest.approx(cost["node_cost"], rel=0.01)
    assert {m["key"] for m in cost["by_model"]} >= {x.model for x in fleet.workloads}

    html = tmp_path / "report.html"
    out = _cli(sandbox, tmp_path, "report", "cost", "--format", "html", "--output", str(html))
    assert out.returncode == 0, out.stderr
    assert html.read_text().count("data:image/png;base64,") == 3

    out = _cli(sandbox, tmp_path, "rightsize", "--propose", "--only", f"{w.namespace}/{target}")
    assert out.returncode == 0, out.stderr
    proposed = [line for line in out.stdout.splitlines() if line.startswith("proposed chg-")]
    assert len(proposed) == 1 and "scale" in proposed[0], out.stdout + out.stderr


def test_a_workload_declared_in_cloudwatch_is_costed_from_the_sandboxs_cloudwatch(
        sandbox: dict[str, Any], fleet: Fleet, tmp_path: Path) -> None:
    """chat-lite declared as measured in CloudWatch (Container Insights + its ALB target group), preferred there."""
    from deploy.sandbox.simulator.cloudwatch import load_balancer, target_group

    w = fleet.workload("chat-lite")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"rightsize": {"cloudwatch": {"cluster_name": fleet.cluster, "workloads": [
        {"namespace": w.namespace, "name": w.name, "load_balancer": load_balancer(fleet.cluster),
         "target_group": target_group(w.namespace, w.name), "prefer": "cloudwatch"}]}}}))
    plain = _cli(sandbox, tmp_path / "a", "report", "cost", "--window", "1d", "--format", "json")
    assert plain.returncode == 0, plain.stderr
    out = _cli(sandbox, tmp_path / "b", "report", "cost", "--window", "1d", "--format", "json", "--config", str(config))
    assert out.returncode == 0, out.stderr
    before = {x["name"]: x for x in json.loads(plain.stdout)["cost"]["workloads"]}
    doc = json.loads(out.stdout)
    after = {x["name"]: x for x in doc["cost"]["workloads"]}
    assert not [n for n in doc["notes"] if "CloudWatch" in n], doc["notes"]
    lite = after[w.name]
    print(f"[rightsize/cloudwatch] {w.name}: {lite['requests']:.0f} requests from the ALB vs "
          f"{before[w.name]['requests']:.0f} from Prometheus; GPU busy {lite['gpu_busy_mean']} (Container Insights "
          f"utilisation) vs {before[w.name]['gpu_busy_mean']} (DCGM engine active); "
          f"${lite['cost_per_million_requests']}/M requests")
    assert lite["source"] == "cloudwatch" and lite["sources"] == {"gpu_busy": "cloudwatch", "requests": "cloudwatch"}
    assert {x["source"] for n, x in after.items() if n != w.name} == {"prometheus"}
    # The same traffic, counted by the load balancer and by the runtime's own counters.
    assert lite["requests"] == pytest.approx(before[w.name]["requests"], rel=0.1)
    assert 0 < lite["gpu_busy_mean"] <= 1
    assert lite["cost"] == pytest.approx(before[w.name]["cost"], rel=1e-6)  # allocation is Prometheus' either way
