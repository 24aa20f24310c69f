"""Node changes against the real API: a drain's blast radius is the serving capacity on the node, the
fleet limit counts nodes already cordoned, and a drain leaves pods outside the serving namespaces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent.audit.events import MemoryAudit
from agent.change.executor.core import Executor
from agent.change.ledger import Ledger
from agent.change.models import ChangeSpec, ChangeStatus
from agent.models import ActionKind, ObjectRef
from agent.policy.evaluate import load_policy
from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings

POLICY = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")
# The default policy, except that one change may remove a whole model: the drain below then executes
# whatever the sandbox placed on the node, and the test sees what it evicts and what it leaves.
WHOLE_MODEL = POLICY.model_copy(update={"limits": POLICY.limits.model_copy(update={"max_capacity_drop": 1.0})})
GPU = "nvidia.com/gpu"


@pytest.fixture
def executor(sandbox: dict[str, Any], tmp_path: Path) -> Iterator[Executor]:
    write = K8sWriteClient(K8sWriteSettings(kubeconfig=Path(sandbox["kubeconfigs"]["executor"])))
    ex = Executor(Ledger(tmp_path / "ledger.db"), WHOLE_MODEL, write, MemoryAudit(), cluster="sandbox")
    yield ex
    ex.ledger.close()
    write.close()


def node_change(action: ActionKind, node: str) -> ChangeSpec:
    return ChangeSpec(action=action, cluster="sandbox", target=ObjectRef(kind="Node", name=node))


def wait(pred: Any, what: str, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := pred()) is not None:
            return v
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def serving_pod(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                 for c in pod.status.conditions or [])


@pytest.fixture
def dns_on_gpu_node(admin: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A coredns-like Deployment in kube-system pinned to a GPU node that also serves a model; afterwards
    the Deployment is deleted and every node uncordoned."""
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    gpu_nodes = {n.metadata.name for n in core.list_node().items if int((n.status.capacity or {}).get(GPU, 0)) > 0}

    def busy_node() -> str | None:
        on = [p.spec.node_name for ns in POLICY.limits.drain_namespaces
              for p in core.list_namespaced_pod(ns).items if p.spec.node_name in gpu_nodes and serving_pod(p)]
        return on[0] if on else None

    node = wait(busy_node, "a serving pod on a GPU node")
    name = "coredns-like"
    apps.create_namespaced_deployment("kube-system", {
        "metadata": {"name": name}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "nodeName": node, "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "dns", "image": "registry.k8s.io/coredns/coredns:v1.11.3"}]}}}})

    def dns_running() -> str | None:
        pods = core.list_namespaced_pod("kube-system", label_selector=f"app={name}").items
        return pods[0].metadata.name if pods and serving_pod(pods[0]) else None

    pod = wait(dns_running, "the coredns-like pod to run")
    yield node, pod
    apps.delete_namespaced_deployment(name, "kube-system")
    for n in gpu_nodes:
        core.patch_node(n, {"spec": {"unschedulable": None}})


def test_a_drain_counts_the_serving_capacity_on_the_node_and_leaves_kube_system(
        executor: Executor, admin: client.ApiClient, dns_on_gpu_node: tuple[str, str]) -> None:
    node, dns_pod = dns_on_gpu_node
    core = client.CoreV1Api(admin)
    ch = asyncio.run(executor.propose(node_change(ActionKind.DRAIN_NODE, node), reason="xid", requester="agent:rules"))
    # Old code: capacity drop 0.0 for every node.
    assert ch.blast_radius.capacity_drop > 0 and ch.blast_radius.per_model, ch.blast_radius
    assert any(e.startswith(f"kube-system/{dns_pod}: namespace kube-system is not one")
               for e in ch.blast_radius.left_in_place), ch.blast_radius.left_in_place
    assert ch.status == ChangeStatus.PENDING_APPROVAL, ch.policy_reason
    executor.approve(ch.id, "alice")
    executor.approve(ch.id, "bob")
    res = asyncio.run(executor.execute(ch.id))
    assert res.status == ChangeStatus.APPLIED, res.detail
    left = res.detail["detail"]["left_in_place"]
    assert [e["pod"] for e in left] == [f"kube-system/{dns_pod}"] and "kube-system" in left[0]["reason"]
    assert any(e.startswith(tuple(POLICY.limits.drain_namespaces)) for e in res.detail["detail"]["evicted"])
    # The DNS pod is still there and not terminating; the node stays cordoned.
    still = core.read_namespaced_pod(dns_pod, "kube-system")
    assert still.metadata.deletion_timestamp is None and still.spec.node_name == node
    assert core.read_node(node).spec.unschedulable is True


def test_the_fleet_limit_counts_nodes_already_cordoned(
        executor: Executor, admin: client.ApiClient, dns_on_gpu_node: tuple[str, str]) -> None:
    node, _ = dns_on_gpu_node
    core = client.CoreV1Api(admin)
    others = [n.metadata.name for n in core.list_node().items
              if int((n.status.capacity or {}).get(GPU, 0)) > 0 and n.metadata.name != node]
    core.patch_node(node, {"spec": {"unschedulable": True}})  # one GPU node is already out
    ch = asyncio.run(executor.propose(node_change(ActionKind.CORDON_NODE, others[0]), reason="xid",
                                      requester="agent:rules"))
    assert ch.status == ChangeStatus.DENIED
    assert ch.policy_rule == "limits.max_unschedulable_gpu_nodes", ch.policy_reason


def test_an_alert_storm_from_one_node_asks_for_one_cordon_and_runs_it_once(
        executor: Executor, admin: client.ApiClient, dns_on_gpu_node: tuple[str, str]) -> None:
    """One failing node opens several incidents (Alertmanager groups GPUXidError per host, GPUsUnallocatable per
    node, and each hurt model's alerts apart). Each triage proposes the same cordon: the executor links them to
    one request, approvers are asked once, and it runs once. A proposal arriving after it ran is linked to it
    too (its dry run changes nothing), while the same incident proposing again is the same request as before."""
    node, _ = dns_on_gpu_node
    core = client.CoreV1Api(admin)
    spec_ = node_change(ActionKind.CORDON_NODE, node)

    async def propose(incident: str) -> Any:
        return await executor.propose(spec_, reason="xid", requester="agent:rules", incident_id=incident)

    first = asyncio.run(propose("inc-xid-host"))
    assert first.status == ChangeStatus.PENDING_APPROVAL, first.policy_reason
    linked = [asyncio.run(propose(f"inc-{i}")) for i in ("unallocatable", "ttft-chat", "errors-code")]
    assert {c.id for c in linked} == {first.id}, "one request for the storm, not one per incident"
    assert len(executor.ledger.list_changes()) == 1
    executor.approve(first.id, "alice")
    assert asyncio.run(executor.execute(first.id)).status == ChangeStatus.APPLIED
    assert core.read_node(node).spec.unschedulable is True
    late = asyncio.run(propose("inc-pending-pods"))
    assert late.id == first.id and late.status == ChangeStatus.APPLIED, (late.id, late.status)
    assert len(executor.ledger.list_changes()) == 1
    assert sum(1 for e in executor.audit.events if e.decision == "linked") == 4  # type: ignore[attr-defined]
