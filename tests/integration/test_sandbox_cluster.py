"""The sandbox's control plane is real: GPU nodes, serving workloads, rollouts and RBAC."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from deploy.sandbox.fleet import Fleet


def test_gpu_nodes_are_listed_with_capacity_and_labels(kubectl: Any, fleet: Fleet) -> None:
    out = json.loads(kubectl("admin", "get", "nodes", "-o", "json").stdout)
    gpu_nodes = [n for n in out["items"] if "nvidia.com/gpu" in n["status"]["capacity"]]
    expected = sum(p.nodes for p in fleet.pools if p.gpu)
    assert len(gpu_nodes) == expected
    products = {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in gpu_nodes}
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L4"} <= products
    for n in gpu_nodes:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == n["status"]["capacity"]["nvidia.com/gpu"]
        assert any(t["key"] == "nvidia.com/gpu" for t in n["spec"]["taints"])
        assert n["metadata"]["labels"]["node.kubernetes.io/instance-type"]
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}
        assert ready["Ready"] == "True"


def test_serving_deployments_are_available_on_gpu_nodes(kubectl: Any, fleet: Fleet) -> None:
    for w in fleet.workloads:
        # The sandbox is shared: an earlier test's clean-up may still be rolling a Deployment back.
        kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=55s")
        dep = json.loads(kubectl("admin", "-n", w.namespace, "get", "deployment", w.name, "-o", "json").stdout)
        assert dep["status"].get("availableReplicas") == w.replicas, f"{w.name}: {dep['status']}"
        pods = json.loads(kubectl("admin", "-n", w.namespace, "get", "pods", "-l",
                                  f"app.kubernetes.io/name={w.name}", "-o", "json").stdout)["items"]
        assert len(pods) == w.replicas
        for pod in pods:
            assert pod["spec"]["nodeName"], "scheduled by the real scheduler"
            assert pod["status"]["phase"] == "Running"
            labels = pod["metadata"]["labels"]
            assert labels["model"] == w.model and labels["serving-runtime"] == w.runtime and labels["team"] == w.team
            req = pod["spec"]["containers"][0]["resources"]["requests"]
            assert req["nvidia.com/gpu"] == str(w.gpus)


def test_kubectl_rollout_undo_creates_the_expected_revision(kubectl: Any, admin: client.ApiClient,
                                                            namespace: str) -> None:
    apps = client.AppsV1Api(admin)
    labels = {"app.kubernetes.io/name": "echo"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "echo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"nodeSelector": {"opsagent.dev/node-pool": "general"},
                     "containers": [{"name": "c", "image": "registry.example/echo:v1"}]}}},
    })
    kubectl("admin", "-n", namespace, "rollout", "status", "deployment/echo", "--timeout=60s")
    kubectl("admin", "-n", namespace, "set", "image", "deployment/echo", "c=registry.example/echo:v2")
    kubectl("admin", "-n", namespace, "rollout", "status", "deployment/echo", "--timeout=60s")
    kubectl("admin", "-n", namespace, "rollout", "undo", "deployment/echo")
    kubectl("admin", "-n", namespace, "rollout", "status", "deployment/echo", "--timeout=60s")

    dep = apps.read_namespaced_deployment("echo", namespace)
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert dep.spec.template.spec.containers[0].image == "registry.example/echo:v1"
    rs = {r.spec.template.spec.containers[0].image: r for r in apps.list_namespaced_replica_set(namespace).items}
    assert set(rs) == {"registry.example/echo:v1", "registry.example/echo:v2"}, "undo reuses the v1 ReplicaSet"
    assert rs["registry.example/echo:v1"].metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert rs["registry.example/echo:v1"].spec.replicas == 2
    assert rs["registry.example/echo:v2"].spec.replicas == 0


def test_reader_identity_cannot_write(kubectl: Any) -> None:
    res = kubectl("reader", "-n", "llm-prod", "annotate", "deployment/chat-primary", "x=y", check=False)
    assert res.returncode != 0
    assert "Forbidden" in res.stderr and "opsagent-reader" in res.stderr
    assert kubectl("reader", "get", "pods", "-A").returncode == 0
    res = kubectl("reader", "-n", "llm-prod", "get", "secrets", check=False)
    assert "Forbidden" in res.stderr


def test_executor_may_patch_serving_namespaces_only(kubectl: Any) -> None:
    ok = kubectl("executor", "-n", "llm-prod", "annotate", "--overwrite", "deployment/chat-lite",
                 "opsagent.dev/rbac-check=ok", check=False)
    assert ok.returncode == 0, ok.stderr
    denied = kubectl("executor", "-n", "platform", "annotate", "--overwrite", "deployment/inference-gateway",
                     "opsagent.dev/rbac-check=no", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    denied = kubectl("executor", "-n", "llm-prod", "delete", "deployment/chat-lite", "--dry-run=server", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    denied = kubectl("executor", "auth", "can-i", "create", "clusterrolebindings", check=False)
    assert denied.stdout.strip() == "no"


def test_the_agents_identities_read_routes_and_neither_can_change_their_weights(kubectl: Any) -> None:
    # Triage reads the route's weights; a compromised agent asking either identity to move them is refused.
    listed = kubectl("reader", "-n", "llm-prod", "get", "httproutes.gateway.networking.k8s.io", "-o", "name")
    assert "httproute.gateway.networking.k8s.io/chat" in listed.stdout
    shift = '{"spec":{"rules":[{"backendRefs":[{"name":"chat-lite","port":8000,"weight":100}]}]}}'
    for identity in ("reader", "executor"):
        denied = kubectl(identity, "-n", "llm-prod", "patch", "httproute/chat", "--type=merge", "-p", shift,
                         "--dry-run=server", check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, (identity, denied.stderr)
