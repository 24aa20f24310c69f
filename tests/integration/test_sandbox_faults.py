"""Faults close the loop: injected through the API, seen in metrics and alerts, undone by real fixes."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import boto3
import pytest
from kubernetes import client

from agent import incidents
from agent.models import IncidentStatus
from agent.storage.store import SqlStore
from deploy.sandbox import faults
from deploy.sandbox.fleet import LABEL_APP, Fleet
from deploy.sandbox.receiver import Notification, WebhookReceiver
from tests.integration.promql import scalar, wait_until

pytestmark = pytest.mark.usefixtures("clean_faults")

TTFT_P95 = ('histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket'
            '{{namespace="{ns}", model_name="{model}"}}[30s])))')
_MODEL_PODS = ('* on (namespace, pod) group_left(model_name) (0 * max by (namespace, pod, model_name) '
               '(vllm:num_requests_running{{namespace="{ns}", model_name="{model}"}}) + 1)')
ERROR_SHARE = ('sum(rate(http_requests_total{{namespace="{ns}", status="5xx"}}[30s]) ' + _MODEL_PODS + ')'
               ' / sum(rate(http_requests_total{{namespace="{ns}"}}[30s]) ' + _MODEL_PODS + ')')


def _is_alert(names: set[str], **labels: str) -> Any:
    def match(n: Notification) -> bool:
        return any(a["labels"].get("alertname") in names and all(a["labels"].get(k) == v for k, v in labels.items())
                   for a in n.alerts())
    return match


def test_bad_rollout_alerts_and_a_rollback_recovers(
    sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver, kubectl: Any,
    record_property: Any,
) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    ttft = TTFT_P95.format(ns=w.namespace, model=w.model)
    errors = ERROR_SHARE.format(ns=w.namespace, model=w.model)
    baseline = wait_until(lambda: scalar(prom, ttft), 60, "a TTFT baseline")
    assert baseline < w.slo.ttft_p95_s

    t0 = time.time()
    faults.inject(admin, fleet, "bad-rollout")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (scalar(prom, ttft) or 0) > 2 * w.slo.ttft_p95_s, 90, "TTFT p95 to degrade")
    wait_until(lambda: (scalar(prom, errors) or 0) > 0.03, 60, "5xx share to rise")
    note = webhook.wait_for(_is_alert({"ModelServingErrorRateHigh", "ModelServingTTFTHigh"},
                                      namespace=w.namespace), timeout=240, since=t0)
    to_webhook = note.received_at - t0
    record_property("injection_to_webhook_s", round(to_webhook, 1))
    print(f"\ninjection → Alertmanager webhook: {to_webhook:.1f}s")

    history = kubectl("admin", "-n", w.namespace, "rollout", "history", f"deployment/{w.name}").stdout
    assert "deploy llama-3.1-70b-instruct 2025.07.0" in history, history

    t1 = time.time()
    kubectl("executor", "-n", w.namespace, "rollout", "undo", f"deployment/{w.name}")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (v := scalar(prom, ttft)) is not None and v < w.slo.ttft_p95_s, 120, "TTFT to recover")
    wait_until(lambda: (v := scalar(prom, errors)) is not None and v < 0.01, 60, "errors to recover")
    print(f"rollback → recovered TTFT and errors: {time.time() - t1:.1f}s")


def test_traffic_surge_saturates_the_kv_cache(sandbox: dict[str, Any], admin: client.ApiClient,
                                              fleet: Fleet) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["traffic-surge"]["workload"])
    kv = f'max(vllm:kv_cache_usage_perc{{namespace="{w.namespace}", model_name="{w.model}"}})'
    waiting = f'sum(vllm:num_requests_waiting{{namespace="{w.namespace}", model_name="{w.model}"}})'
    # A clean start: an earlier test on this sandbox may have surged the same model (its fault is cleared,
    # the gauge drains within a scrape or two); the surge below must be what fills the cache.
    wait_until(lambda: (scalar(prom, kv) or 0) < 0.9, 90, "the KV cache to drain from an earlier test's surge")
    faults.inject(admin, fleet, "traffic-surge")
    wait_until(lambda: (scalar(prom, kv) or 0) > 0.9, 60, "KV cache to saturate")
    wait_until(lambda: (scalar(prom, waiting) or 0) > 5, 60, "requests to queue")


def test_gpu_xid_takes_the_node_out_and_pods_go_pending(sandbox: dict[str, Any], admin: client.ApiClient,
                                                        fleet: Fleet, kubectl: Any) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["gpu-xid"]["workload"])
    rec = faults.inject(admin, fleet, "gpu-xid")
    node = rec["node"]
    core = client.CoreV1Api(admin)
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "0"

    def unschedulable() -> list[Any]:
        pods = core.list_namespaced_pod(w.namespace, label_selector=f"app.kubernetes.io/name={w.name}").items
        return [p for p in pods if p.status.phase == "Pending" and not p.spec.node_name]

    wait_until(unschedulable, 60, "a replacement pod the scheduler cannot place")

    def insufficient_gpu_event() -> bool:
        names = {p.metadata.name for p in unschedulable()}
        events = json.loads(kubectl("admin", "-n", w.namespace, "get", "events", "-o", "json").stdout)
        return any("Insufficient nvidia.com/gpu" in (e.get("message") or e.get("note") or "")
                   and e["involvedObject"]["name"] in names for e in events["items"])

    wait_until(insufficient_gpu_event, 60, "the scheduler to report Insufficient nvidia.com/gpu")
    wait_until(lambda: scalar(prom, f'max(DCGM_FI_DEV_XID_ERRORS{{Hostname="{node}"}})') == 79, 30, "XID 79")


def test_gpu_oom_rollout_crash_loops(sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["gpu-oom"]["workload"])
    faults.inject(admin, fleet, "gpu-oom")
    crash = f'sum(kube_pod_container_status_waiting_reason{{namespace="{w.namespace}", reason="CrashLoopBackOff"}})'
    wait_until(lambda: (scalar(prom, crash) or 0) >= 1, 90, "a crash-looping pod in kube-state-metrics")
    restarts = (f'max(kube_pod_container_status_restarts_total{{namespace="{w.namespace}", '
                f'pod=~"{w.name}-.*"}})')
    first = scalar(prom, restarts) or 0
    wait_until(lambda: (scalar(prom, restarts) or 0) > first, 90, "the restart count to rise")
    logs = boto3.client("logs", region_name=fleet.region, endpoint_url=sandbox["endpoints"]["cloudwatch"],
                        aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    group = f"/aws/containerinsights/{fleet.cluster}/application"
    def oom_logged() -> bool:
        events = logs.filter_log_events(logGroupName=group, filterPattern="CUDA out of memory",
                                        startTime=int((time.time() - 600) * 1000))["events"]
        return any("CUDA out of memory" in e["message"] for e in events)
    wait_until(oom_logged, 120, "a CUDA OOM log line in CloudWatch Logs", interval=5)


def test_idle_overprovision_scales_up_with_no_traffic(sandbox: dict[str, Any], admin: client.ApiClient,
                                                      fleet: Fleet) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    spec = fleet.faults["idle-overprovision"]
    w = fleet.workload(spec["workload"])
    faults.inject(admin, fleet, "idle-overprovision")
    apps = client.AppsV1Api(admin)
    wait_until(lambda: (apps.read_namespaced_deployment(w.name, w.namespace).status.available_replicas or 0)
               == spec["replicas"], 60, "the extra replicas to become available")
    busy = (f'avg(DCGM_FI_PROF_GR_ENGINE_ACTIVE{{namespace="{w.namespace}", pod=~"{w.name}-.*"}})')
    wait_until(lambda: (v := scalar(prom, busy)) is not None and v < 0.03, 60, "the GPUs to sit idle")


def test_context_limit_rollout_refuses_long_prompts_with_4xx_and_a_rollback_recovers(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver, kubectl: Any,
) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["context-limit"]["workload"])
    refused = ERROR_SHARE.format(ns=w.namespace, model=w.model).replace('status="5xx"', 'status="4xx"')
    errors = ERROR_SHARE.format(ns=w.namespace, model=w.model)
    ttft = TTFT_P95.format(ns=w.namespace, model=w.model)
    before = wait_until(lambda: scalar(prom, ttft), 60, "a TTFT baseline")

    t0 = time.time()
    faults.inject(admin, fleet, "context-limit")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (scalar(prom, refused) or 0) > 0.08, 90, "the 4xx share to rise")
    assert (scalar(prom, errors) or 0) < 0.01, "refusals are 4xx, not 5xx"
    assert (scalar(prom, ttft) or 0) < max(2 * before, w.slo.ttft_p95_s), "latency is unchanged"
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).

    logs = boto3.client("logs", region_name=fleet.region, endpoint_url=sandbox["endpoints"]["cloudwatch"],
                        aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    group = f"/aws/containerinsights/{fleet.cluster}/application"

    def reason_logged() -> bool:
        events = logs.filter_log_events(logGroupName=group, filterPattern='"maximum context length"',
                                        startTime=int(t0 * 1000))["events"]
        return any("maximum context length is 8192" in e["message"] for e in events)
    wait_until(reason_logged, 120, "the refusal's reason in the server's logs", interval=5)

    kubectl("executor", "-n", w.namespace, "rollout", "undo", f"deployment/{w.name}")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (v := scalar(prom, refused)) is not None and v < 0.001, 120, "refusals to stop")


def test_image_pull_rollout_leaves_pods_waiting_while_the_old_replicaset_serves(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver, kubectl: Any,
) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["image-pull"]["workload"])
    faults.inject(admin, fleet, "image-pull")
    waiting = (f'sum(kube_pod_container_status_waiting_reason{{namespace="{w.namespace}", '
               f'reason="ImagePullBackOff", pod=~"{w.name}-.*"}})')
    wait_until(lambda: (scalar(prom, waiting) or 0) >= 1, 90, "an ImagePullBackOff pod in kube-state-metrics")
    pods = client.CoreV1Api(admin).list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
    stuck = [p for p in pods if any(c.state.waiting and c.state.waiting.reason == "ImagePullBackOff"
                                    for c in p.status.container_statuses or [])]
    assert stuck and all(p.status.phase == "Pending" for p in stuck)
    assert all("v0.10.3-rc1" in p.spec.containers[0].image for p in stuck)
    serving = [p for p in pods if p.status.phase == "Running" and p not in stuck]
    assert len(serving) == w.replicas - 1, "maxUnavailable 1: the old ReplicaSet keeps the other replicas"
    dep = client.AppsV1Api(admin).read_namespaced_deployment(w.name, w.namespace)
    assert (dep.status.ready_replicas or 0) == w.replicas - 1 and (dep.status.updated_replicas or 0) >= 1
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).

    kubectl("executor", "-n", w.namespace, "rollout", "undo", f"deployment/{w.name}")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (scalar(prom, waiting) or 0) == 0, 120, "no pod waiting on its image")


def test_host_oom_rollout_is_oomkilled_with_restarts_climbing(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, kubectl: Any) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["host-oom"]["workload"])
    faults.inject(admin, fleet, "host-oom")
    killed = (f'sum(kube_pod_container_status_last_terminated_reason{{namespace="{w.namespace}", '
              f'reason="OOMKilled", pod=~"{w.name}-.*"}})')
    wait_until(lambda: (scalar(prom, killed) or 0) >= 1, 90, "an OOMKilled container in kube-state-metrics")
    restarts = f'max(kube_pod_container_status_restarts_total{{namespace="{w.namespace}", pod=~"{w.name}-.*"}})'
    first = scalar(prom, restarts) or 0
    wait_until(lambda: (scalar(prom, restarts) or 0) > first, 90, "the restart count to climb")
    pods = client.CoreV1Api(admin).list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
    terms = [c.last_state.terminated for p in pods for c in p.status.container_statuses or []
             if c.last_state and c.last_state.terminated]
    assert terms and all((t.reason, t.exit_code) == ("OOMKilled", 137) for t in terms)
    kubectl("executor", "-n", w.namespace, "rollout", "undo", f"deployment/{w.name}")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    crash = f'sum(kube_pod_container_status_waiting_reason{{namespace="{w.namespace}", reason="CrashLoopBackOff"}})'
    wait_until(lambda: (scalar(prom, crash) or 0) == 0, 120, "no pod crash-looping after the rollback")


def test_a_scale_up_past_the_pool_leaves_pods_unschedulable(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["gpu-capacity"]["workload"])
    rec = faults.inject(admin, fleet, "gpu-capacity")
    core = client.CoreV1Api(admin)

    def unschedulable() -> list[Any]:
        pods = core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
        return [p for p in pods if p.status.phase == "Pending" and any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            and "Insufficient nvidia.com/gpu" in (c.message or "") for c in p.status.conditions or [])]
    stuck = wait_until(unschedulable, 90, "a pod the real scheduler cannot place")
    assert len(stuck) == 1 and rec["replicas"] == w.replicas + 2, "only the replica beyond the pool waits"
    nodes = core.list_node(label_selector=f"opsagent.dev/node-pool={w.pool}").items
    assert all(n.status.allocatable["nvidia.com/gpu"] == n.status.capacity["nvidia.com/gpu"] for n in nodes)
    metric = f'sum(kube_pod_status_unschedulable{{namespace="{w.namespace}"}})'
    wait_until(lambda: (scalar(prom, metric) or 0) >= 1, 90, "kube_pod_status_unschedulable in kube-state-metrics")
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).
    faults.clear(admin, fleet)
    wait_until(lambda: not unschedulable(), 90, "no pod left unschedulable once the replicas are restored")


def test_a_rollout_whose_pods_never_turn_ready_passes_its_deadline_while_the_old_replicaset_serves(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, kubectl: Any) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    spec = fleet.faults["slow-start"]
    w = fleet.workload(spec["workload"])
    faults.inject(admin, fleet, "slow-start")
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)

    def loading() -> list[Any]:
        pods = core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
        return [p for p in pods if p.metadata.labels.get("model-version") == spec["version"]
                and p.status.phase == "Running" and p.status.container_statuses
                and all(c.state.running and not c.ready and c.restart_count == 0 for c in p.status.container_statuses)]
    assert len(wait_until(loading, 60, "a new pod Running but not Ready")) == 1

    def progressing() -> Any:
        dep = apps.read_namespaced_deployment(w.name, w.namespace)
        return next((c for c in dep.status.conditions or [] if c.type == "Progressing"), None)
    cond = wait_until(lambda: (c := progressing()) is not None and c.status == "False" and c,
                      spec["progress_deadline_s"] + 60, "the controller to report ProgressDeadlineExceeded")
    assert cond.reason == "ProgressDeadlineExceeded", cond
    dep = apps.read_namespaced_deployment(w.name, w.namespace)
    assert (dep.status.ready_replicas or 0) == w.replicas - 1, "maxUnavailable 1: the old ReplicaSet keeps serving"
    stuck = (f'max(kube_deployment_status_condition{{namespace="{w.namespace}", deployment="{w.name}", '
             f'condition="Progressing", status="false"}})')
    wait_until(lambda: scalar(prom, stuck) == 1, 60, "the stuck rollout in kube-state-metrics")
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).

    kubectl("executor", "-n", w.namespace, "rollout", "undo", f"deployment/{w.name}")
    kubectl("admin", "-n", w.namespace, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    wait_until(lambda: (c := progressing()) is not None and c.status == "True", 60, "the rollout to progress again")
    wait_until(lambda: not loading(), 60, "no pod left loading")


def test_spot_nodes_reclaimed_together_leave_the_evicted_pods_pending_until_capacity_returns(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, kubectl: Any) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    spec = fleet.faults["spot-loss"]
    w = fleet.workload(spec["workload"])
    core = client.CoreV1Api(admin)
    pool_nodes = f"opsagent.dev/node-pool={w.pool}"
    before = {n.metadata.name for n in core.list_node(label_selector=pool_nodes).items}
    assert all(n.metadata.labels["karpenter.sh/capacity-type"] == "spot"
               for n in core.list_node(label_selector=pool_nodes).items)
    rec = faults.inject(admin, fleet, "spot-loss")
    assert len(rec["nodes"]) == spec["nodes"]
    after = {n.metadata.name for n in core.list_node(label_selector=pool_nodes).items}
    assert after == before - set(rec["nodes"]), "the reclaimed nodes are gone from the API"

    def pending() -> list[Any]:
        pods = core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
        return [p for p in pods if p.status.phase == "Pending" and any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            and "Insufficient nvidia.com/gpu" in (c.message or "") for c in p.status.conditions or [])]
    stuck = wait_until(pending, 90, "an evicted pod's replacement the scheduler cannot place")
    assert len(stuck) == w.replicas - (len(before) - len(rec["nodes"])), "only what the surviving node holds runs"
    events = json.loads(kubectl("admin", "-n", "default", "get", "events", "-o", "json").stdout)["items"]
    interrupted = {e["involvedObject"]["name"] for e in events if e["reason"] == "SpotInterrupted"}
    assert interrupted >= set(rec["nodes"])
    nodes_metric = f'count(kube_node_labels{{label_opsagent_dev_node_pool="{w.pool}"}})'
    wait_until(lambda: scalar(prom, nodes_metric) == len(after), 90, "kube-state-metrics to count fewer nodes")
    metric = f'sum(kube_pod_status_unschedulable{{namespace="{w.namespace}"}})'
    wait_until(lambda: (scalar(prom, metric) or 0) >= 1, 90, "kube_pod_status_unschedulable in kube-state-metrics")
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).

    faults.clear(admin, fleet)  # replacement instances join the pool
    wait_until(lambda: {n.metadata.name for n in core.list_node(label_selector=pool_nodes).items} == before, 30,
               "the pool's nodes to come back")
    wait_until(lambda: not pending(), 120, "every pod scheduled once capacity returned")


def test_a_hung_worker_stays_ready_with_busy_gpus_and_no_tokens_until_its_pod_is_restarted(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, kubectl: Any) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["hung-worker"]["workload"])
    rec = faults.inject(admin, fleet, "hung-worker")
    pod, ns = rec["pod"], w.namespace
    tokens = f'sum(rate(vllm:generation_tokens_total{{namespace="{ns}", pod="{pod}"}}[30s]))'
    peers = f'sum(rate(vllm:generation_tokens_total{{namespace="{ns}", model_name="{w.model}", pod!="{pod}"}}[30s]))'
    running = f'max(vllm:num_requests_running{{namespace="{ns}", pod="{pod}"}})'
    util = f'avg(DCGM_FI_DEV_GPU_UTIL{{namespace="{ns}", pod="{pod}"}})'
    wait_until(lambda: scalar(prom, tokens) == 0, 90, "the hung replica's token rate to drop to zero")
    assert (scalar(prom, peers) or 0) > 0, "the other replicas keep generating"
    assert (scalar(prom, running) or 0) >= 200, "its running batch stays full"
    assert (scalar(prom, util) or 0) >= 90, "its GPUs read busy"
    p = client.CoreV1Api(admin).read_namespaced_pod(pod, ns)
    assert p.status.phase == "Running" and all(c.ready and c.restart_count == 0 for c in p.status.container_statuses)
    # The alert and its triage: tests/integration/test_triage.py (one wait for an alert per fault).

    kubectl("admin", "-n", ns, "delete", "pod", pod, "--wait=true", "--timeout=60s")  # the human's fix
    kubectl("admin", "-n", ns, "rollout", "status", f"deployment/{w.name}", "--timeout=120s")
    per_pod = f'rate(vllm:generation_tokens_total{{namespace="{ns}", model_name="{w.model}"}}[30s])'
    wait_until(lambda: scalar(prom, f"count(max by (pod) ({per_pod}) > 0)") == w.replicas, 120,
               "every replica generating again")


def test_a_pod_marked_not_ready_for_a_silent_node_turns_ready_again_once_the_node_reports(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet) -> None:
    """The node lifecycle controller marks every pod of a node that missed its heartbeats NotReady (on a loaded
    machine KWOK's heartbeat can come late). A kubelet reports them Ready again when the node is back; the
    sandbox's pods once stayed NotReady for good, so a fault staged on their node later showed nothing."""
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    w = fleet.workload(fleet.faults["gpu-thermal"]["workload"])
    pod = next(p for p in core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
               if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []))
    core.patch_namespaced_pod_status(pod.metadata.name, w.namespace, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "NodeNotReady",
         "lastTransitionTime": dt.datetime.now(dt.UTC).isoformat()}]}})

    def ready() -> bool:
        p = core.read_namespaced_pod(pod.metadata.name, w.namespace)
        return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])

    assert not ready(), "the status patch did not take"
    wait_until(ready, 60, f"{pod.metadata.name} Ready again")
    wait_until(lambda: (apps.read_namespaced_deployment(w.name, w.namespace).status.available_replicas or 0)
               == w.replicas, 60, f"{w.namespace}/{w.name} fully available again")


def test_a_surge_on_a_timer_makes_its_alert_resolve_and_fire_again_and_stays_one_incident(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver,
        tmp_path: Any) -> None:
    spec = fleet.faults["traffic-flap"]
    w = fleet.workload(spec["workload"])
    t0 = time.time()
    faults.inject(admin, fleet, "traffic-flap")

    def status_of(n: Notification) -> str | None:
        alerts = [a for a in n.body.get("alerts", []) if a["labels"].get("alertname") == "KVCacheSaturated"
                  and a["labels"].get("namespace") == w.namespace]
        return alerts[0]["status"] if alerts else None

    period = spec["period_s"]
    fired = webhook.wait_for(lambda n: status_of(n) == "firing", timeout=period + 60, since=t0)
    resolved = webhook.wait_for(lambda n: status_of(n) == "resolved", timeout=period + 60, since=fired.received_at)
    again = webhook.wait_for(lambda n: status_of(n) == "firing", timeout=period + 60, since=resolved.received_at)
    gap = again.received_at - fired.received_at
    print(f"\nfired → resolved → fired again: {resolved.received_at - fired.received_at:.0f}s, {gap:.0f}s")
    assert 0.5 * period <= gap <= 1.5 * period, "it re-fires on the fault's period"

    store = SqlStore(tmp_path / "store.db")  # every delivery, resolved ones included, into the agent's intake
    try:
        opened = None
        for n in (fired, resolved, again):
            at = dt.datetime.fromtimestamp(n.received_at, dt.UTC)
            inc, _ = store.record_notification(incidents.parse(json.dumps(n.body).encode()), at)
            opened = opened or inc.id
            assert inc.id == opened
        assert inc.status == IncidentStatus.FIRING and inc.reopened == 1
        assert len(store.incidents()) == 1
    finally:
        store.close()


def test_a_bad_rollouts_error_and_latency_alerts_come_in_two_groups_and_make_one_incident(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver,
        tmp_path: Any) -> None:
    """The sandbox's route groups by alertname (deploy/sandbox/monitoring.py), as many real ones do: one bad
    rollout pages twice. The intake folds the second group into the first one's incident (ticket-206)."""
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    names = {"ModelServingErrorRateHigh", "ModelServingTTFTHigh"}
    t0 = time.time()
    faults.inject(admin, fleet, "bad-rollout")

    def firing_groups() -> dict[str, str]:
        """alertname → the group key of its first firing notification for the workload since the injection."""
        out: dict[str, str] = {}
        for n in list(webhook.notifications):
            for a in n.alerts():
                if (n.received_at >= t0 and a["status"] == "firing" and a["labels"].get("alertname") in names
                        and a["labels"].get("namespace") == w.namespace
                        and a["labels"].get("model_name") == w.model):
                    out.setdefault(a["labels"]["alertname"], n.body["groupKey"])
        return out

    def both() -> dict[str, str] | None:
        g = firing_groups()
        return g if len(g) == 2 else None

    groups = wait_until(both, 300, "both alerts to fire")
    assert len(set(groups.values())) == 2, "Alertmanager delivers them as two groups"

    store = SqlStore(tmp_path / "store.db")  # every delivery since the injection, in the order they came
    try:
        for n in [n for n in list(webhook.notifications) if n.received_at >= t0]:
            store.record_alerts(incidents.parse(json.dumps(n.body).encode()),
                                dt.datetime.fromtimestamp(n.received_at, dt.UTC))
        # This model's incidents: another model of the namespace may page meanwhile (the sandbox is shared by
        # the tests before this one); its alerts name another workload and rightly stay apart.
        mine = [i for i in store.incidents(limit=1000)
                if any(a.name in names and a.labels.get("model_name") == w.model for a in i.alerts)]
        assert len(mine) == 1, [(i.id, i.group_key, [a.name for a in i.alerts]) for i in mine]
        (inc,) = mine
        assert {a.name for a in inc.alerts if a.status == "firing"} == names
        assert sorted([inc.group_key, *inc.folded_groups]) == sorted(groups.values())
    finally:
        store.close()


def test_the_balancer_fails_requests_itself_while_targets_stay_healthy_and_its_alarm_fires_then_clears(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet) -> None:
    from deploy.sandbox.simulator.alarms import alb_5xx_alarm
    from deploy.sandbox.simulator.cloudwatch import ALB_NAMESPACE, load_balancer, target_group

    cw = boto3.client("cloudwatch", region_name=fleet.region, endpoint_url=sandbox["endpoints"]["cloudwatch"],
                      aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    lb = [{"Name": "LoadBalancer", "Value": load_balancer(fleet.cluster)}]
    alarm = alb_5xx_alarm(fleet.cluster)["AlarmName"]

    def last_minute(name: str, dims: list[dict[str, str]], stat: str = "Sum") -> float | None:
        end = dt.datetime.now(dt.UTC)
        r = cw.get_metric_data(MetricDataQueries=[{"Id": "m", "MetricStat": {
            "Metric": {"Namespace": ALB_NAMESPACE, "MetricName": name, "Dimensions": dims},
            "Period": 60, "Stat": stat}}], StartTime=end - dt.timedelta(minutes=3), EndTime=end,
            ScanBy="TimestampDescending")["MetricDataResults"][0]
        return float(r["Values"][0]) if r["Values"] else None

    def state() -> str:
        return str(cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"])

    prom = sandbox["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["alb-5xx"]["workload"])
    share = fleet.faults["alb-5xx"]["share"]
    pods_share = 'sum(rate(http_requests_total{status="5xx"}[2m])) / sum(rate(http_requests_total[2m]))'
    # A clean start: an earlier test's bad rollout on this shared sandbox leaves its 5xx in the window.
    wait_until(lambda: (scalar(prom, pods_share) or 0) < 0.01, 300, "an earlier test's 5xx to leave the window")
    faults.inject(admin, fleet, "alb-5xx")
    wait_until(lambda: state() == "ALARM", 200, f"alarm {alarm} in ALARM")
    requests, elb, target = (last_minute(m, lb) or 0.0 for m in
                             ("RequestCount", "HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count"))
    assert 0.5 * share < elb / requests < 1.5 * share, (elb, requests)
    assert target <= 0.005 * requests, "the targets answer what reaches them"
    tg = [*lb, {"Name": "TargetGroup", "Value": target_group(w.namespace, w.name)}]
    assert last_minute("HealthyHostCount", tg, "Minimum") == w.replicas
    assert last_minute("UnHealthyHostCount", tg, "Maximum") == 0
    assert (scalar(prom, pods_share) or 0) < 0.01, "the pods' own error share does not move"
    # Its delivery as an alert and the triage: tests/integration/test_triage.py.

    faults.clear(admin, fleet)
    wait_until(lambda: state() == "OK", 200, f"alarm {alarm} back to OK")
    assert last_minute("HTTPCode_ELB_5XX_Count", lb) == 0
