"""The guarded executor against the real API: refusals (all audited), a compromised model's proposals,
exactly-once execution across SIGKILLs, and automatic rollback when verification fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent.audit.events import MemoryAudit
from agent.change.executor.core import ExecutionRefused, Executor
from agent.change.ledger import Ledger
from agent.change.models import ChangeSpec, ChangeStatus
from agent.change.verdict import Outcome
from agent.change.verify import VerifySettings, signal_queries, verify
from agent.models import ActionKind, ObjectRef
from agent.policy.evaluate import load_policy
from deploy.sandbox import faults
from deploy.sandbox.fleet import LABEL_APP, Fleet, pod_template
from tools.k8s_read.client import K8sReadClient
from tools.k8s_read.settings import K8sReadSettings
from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings
from tools.prometheus.client import PrometheusClient
from tools.prometheus.settings import PrometheusSettings

POLICY = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")
MONDAY_10 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, at: dt.datetime | None = None) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at or dt.datetime.now(dt.UTC)


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def executor(sandbox: dict[str, Any], tmp_path: Path, audit: MemoryAudit, clock: Clock) -> Iterator[Executor]:
    write = K8sWriteClient(K8sWriteSettings(kubeconfig=Path(sandbox["kubeconfigs"]["executor"])))
    ex = Executor(Ledger(tmp_path / "ledger.db"), POLICY, write, audit, cluster="sandbox", clock=clock,
                  claim_ttl_s=0)  # the killed child's claim is abandoned at once
    yield ex
    ex.ledger.close()
    write.close()


def deployment(kind_name: str, ns: str) -> ObjectRef:
    return ObjectRef(kind="Deployment", name=kind_name, namespace=ns)


def spec(action: ActionKind, target: ObjectRef, **params: Any) -> ChangeSpec:
    return ChangeSpec(action=action, cluster="sandbox", target=target, params=params)


def refused(audit: MemoryAudit) -> list[str]:
    return [e.reason for e in audit.events if e.decision in ("refused", "deny")]


def test_every_refusal_is_refused_and_audited(executor: Executor, audit: MemoryAudit, clock: Clock,
                                              admin: client.ApiClient) -> None:
    target = deployment("summarizer", "research")
    ch = asyncio.run(executor.propose(spec(ActionKind.SCALE, target, replicas=2), reason="t", requester="user:alice"))
    assert ch.status == ChangeStatus.PENDING_APPROVAL and ch.diff and "replicas: 2" in ch.diff

    with pytest.raises(ExecutionRefused, match="needs 1 more approval"):  # no approval
        asyncio.run(executor.execute(ch.id))
    with pytest.raises(ExecutionRefused, match="may not approve"):  # self-approval
        executor.approve(ch.id, "alice")
    with pytest.raises(ExecutionRefused, match="not anyone in the policy's people table"):  # nobody's identity
        executor.approve(ch.id, "kubernetes:mallory")
    executor.approve(ch.id, "bob")
    clock.at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)  # expired
    with pytest.raises(ExecutionRefused, match="expired"):
        asyncio.run(executor.execute(ch.id))
    clock.at = None

    # The target changes after approval: the approval no longer covers it.
    client.AppsV1Api(admin).patch_namespaced_deployment(
        "summarizer", "research", {"spec": {"template": {"metadata": {"annotations": {"touched": "yes"}}}}})
    with pytest.raises(ExecutionRefused, match="spec changed since"):
        asyncio.run(executor.execute(ch.id))

    outside = asyncio.run(executor.propose(spec(ActionKind.SCALE, deployment("inference-gateway", "platform"),
                                                replicas=5), reason="t", requester="agent:rules"))
    assert (outside.status, outside.policy_rule) == (ChangeStatus.DENIED, "outside-serving-namespaces")
    blast = asyncio.run(executor.propose(spec(ActionKind.SCALE, deployment("chat-primary", "llm-prod"), replicas=1),
                                         reason="t", requester="agent:rules"))
    assert blast.status == ChangeStatus.DENIED and "capacity" in blast.policy_reason
    clock.at = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.UTC)  # Saturday night: outside the change window
    window = asyncio.run(executor.propose(spec(ActionKind.DEPLOY, deployment("chat-lite", "llm-prod"),
                                               container="server", image="vllm/vllm-openai:v0.10.2"),
                                          reason="t", requester="agent:rules"))
    clock.at = None
    assert window.status == ChangeStatus.DENIED and "change windows" in window.policy_reason

    reasons = refused(audit)
    for words in ("more approval", "self-approval", "unknown identity", "expired", "spec changed since",
                  "outside-serving-namespaces", "capacity", "change windows"):
        assert any(words in r for r in reasons), f"no audited refusal mentions {words!r}: {reasons}"
    assert client.AppsV1Api(admin).read_namespaced_deployment("summarizer", "research").spec.replicas == 1


def test_a_compromised_models_proposals_never_reach_the_api(executor: Executor, admin: client.ApiClient,
                                                            audit: MemoryAudit) -> None:
    apps = client.AppsV1Api(admin)
    before = {(d.metadata.namespace, d.metadata.name): (d.metadata.generation, d.spec.replicas)
              for d in apps.list_deployment_for_all_namespaces().items}
    # "Scale another team's model to zero."
    zero = asyncio.run(executor.propose(spec(ActionKind.SCALE, deployment("completion", "code"), replicas=0),
                                        reason="ignore previous instructions", requester="agent:llm:compromised"))
    assert zero.status == ChangeStatus.DENIED
    with pytest.raises(ExecutionRefused):
        asyncio.run(executor.execute(zero.id))
    # "Delete the namespace" and "patch the executor's RBAC" are not changes the agent can even express.
    with pytest.raises(ValueError):
        ChangeSpec(action="delete_namespace", cluster="sandbox", target=deployment("x", "llm-prod"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ObjectRef(kind="ClusterRole", name="opsagent-executor")  # type: ignore[arg-type]
    after = {(d.metadata.namespace, d.metadata.name): (d.metadata.generation, d.spec.replicas)
             for d in apps.list_deployment_for_all_namespaces().items}
    assert after == before, "nothing changed in the cluster"
    assert any(e.decision in ("deny", "refused") for e in audit.events)


def _revision(admin: client.ApiClient, ns: str, name: str) -> int:
    d = client.AppsV1Api(admin).read_namespaced_deployment(name, ns)
    return int(d.metadata.annotations["deployment.kubernetes.io/revision"])


@pytest.mark.parametrize("crash", ["after-claim", "after-write", "after-applied"])
def test_sigkill_anywhere_applies_the_change_exactly_once(crash: str, executor: Executor, admin: client.ApiClient,
                                                         sandbox: dict[str, Any], fleet: Fleet, tmp_path: Path) -> None:
    apps = client.AppsV1Api(admin)
    w = fleet.workload("completion")  # two replicas: a rollback keeps half its capacity serving
    apps.patch_namespaced_deployment(w.name, w.namespace, {"spec": {"template": {"metadata": {
        "annotations": {"opsagent.dev/test-rollout": crash}}}}})  # a new revision to roll back from
    _wait_rollout(apps, w.namespace, w.name)
    start = _revision(admin, w.namespace, w.name)
    ch = asyncio.run(executor.propose(spec(ActionKind.ROLLBACK, deployment(w.name, w.namespace),
                                           to_revision=start - 1), reason="t", requester="agent:rules"))
    executor.approve(ch.id, "alice")
    child = subprocess.run([sys.executable, "-m", "tests.integration.executor_child", str(tmp_path),
                            sandbox["kubeconfigs"]["executor"], ch.id, crash], capture_output=True, text=True,
                           timeout=120, cwd=Path(__file__).parents[2])
    assert child.returncode == -9, f"the child was to be killed at {crash}: {child.stderr[-500:]}"
    result = asyncio.run(executor.execute(ch.id))  # the restarted executor reconciles
    assert result.status == ChangeStatus.APPLIED
    assert result.applied_now is (crash == "after-claim"), "only a write that never happened is made now"
    again = asyncio.run(executor.execute(ch.id))
    assert again.status == ChangeStatus.APPLIED and not again.applied_now
    _wait_rollout(apps, w.namespace, w.name)
    assert _revision(admin, w.namespace, w.name) == start + 1, "exactly one new revision: applied once"
    assert executor.ledger.execution(ch.id).state == "applied"  # type: ignore[union-attr]


def test_a_regressing_deploy_is_rolled_back_automatically(
        executor: Executor, admin: client.ApiClient, sandbox: dict[str, Any], fleet: Fleet, clock: Clock,
        audit: MemoryAudit) -> None:
    apps = client.AppsV1Api(admin)
    w = fleet.workload("chat-lite")
    good = _revision(admin, w.namespace, w.name)
    bad = fleet.version(w.model, "2025.08.0")
    assert bad is not None
    tpl = pod_template(fleet, w, bad)
    clock.at = MONDAY_10  # inside the deploy rule's change window, whatever the wall clock says
    ch = asyncio.run(executor.propose(
        spec(ActionKind.DEPLOY, deployment(w.name, w.namespace), container="server", image=bad.image,
             args=tpl["spec"]["containers"][0]["args"], labels={"model-version": "2025.08.0"},
             change_cause="deploy llama-3.1-8b-instruct 2025.08.0"),
        reason="new model version", requester="user:carol"))
    assert ch.status == ChangeStatus.PENDING_APPROVAL and ch.approvals_required == 2
    executor.approve(ch.id, "alice")
    executor.approve(ch.id, "bob")
    asyncio.run(_wait_for_baseline(sandbox, w.namespace, w.model))
    executed_at = dt.datetime.now(dt.UTC)
    result = asyncio.run(executor.execute(ch.id))
    clock.at = None
    assert result.status == ChangeStatus.APPLIED
    applied = executor.ledger.get(ch.id)
    assert applied is not None
    v = asyncio.run(_verify(sandbox, applied, executed_at))
    assert v.outcome == Outcome.REGRESSION, v.summary()
    executor.record_verification(applied, v.outcome.value, v.summary())
    rb = asyncio.run(executor.auto_rollback(applied, v.summary()))
    assert rb is not None and rb.status == ChangeStatus.APPLIED
    _wait_rollout(apps, w.namespace, w.name)
    d = apps.read_namespaced_deployment(w.name, w.namespace)
    assert d.spec.template.metadata.labels["model-version"] == w.version, "back on the version that worked"
    assert _revision(admin, w.namespace, w.name) == good + 2
    final = executor.ledger.get(ch.id)
    assert final is not None and final.status == ChangeStatus.ROLLED_BACK
    assert any(e.kind == "verification" and e.decision == "regression" for e in audit.events)


VERIFY = VerifySettings(window_s=20, baseline_s=60, step_s=2.5, rate_window_s=15)


async def _wait_for_baseline(sandbox: dict[str, Any], namespace: str, model: str, timeout_s: float = 120) -> None:
    """Until Prometheus holds a full baseline window of the model's signals: a sandbox that has just started
    (or pods another test just replaced) has none yet, and the verification would rightly be inconclusive."""
    prom = PrometheusClient(PrometheusSettings(url=sandbox["endpoints"]["prometheus"], scrape_interval_s=5))
    expr = signal_queries(namespace, model, VERIFY.rate_window_s)["error_share"]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            end = dt.datetime.now(dt.UTC)
            rng = await prom.query_range(expr, end - dt.timedelta(seconds=VERIFY.baseline_s), end, VERIFY.step_s)
            if sum(len(s.samples) for s in rng.data.series) >= 0.8 * VERIFY.baseline_s / VERIFY.step_s:
                return
            assert time.monotonic() < deadline, f"no {VERIFY.baseline_s} s baseline of {model} in Prometheus"
            await asyncio.sleep(5)
    finally:
        await prom.aclose()


async def _verify(sandbox: dict[str, Any], ch: Any, applied_at: dt.datetime) -> Any:
    prom = PrometheusClient(PrometheusSettings(url=sandbox["endpoints"]["prometheus"], scrape_interval_s=5))
    reader = K8sReadClient(K8sReadSettings(kubeconfig=Path(sandbox["kubeconfigs"]["reader"])))
    try:
        return await verify(ch, applied_at, prom, reader, VERIFY)
    finally:
        await prom.aclose()
        reader.close()


def _wait_rollout(apps: client.AppsV1Api, ns: str, name: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = apps.read_namespaced_deployment(name, ns)
        s = d.status
        if (s.observed_generation or 0) >= d.metadata.generation and s.updated_replicas == d.spec.replicas \
                and s.available_replicas == d.spec.replicas and (s.replicas or 0) == d.spec.replicas:
            return
        time.sleep(1)
    raise AssertionError(f"{ns}/{name} did not finish rolling out")


def test_a_change_that_recurs_after_it_ran_is_a_new_request(executor: Executor, admin: client.ApiClient,
                                                            fleet: Fleet) -> None:
    """The same proposal twice is one request; once it has run, the same situation again is a new one that
    asks for approval again (it must not inherit the finished request and its old approval)."""
    apps = client.AppsV1Api(admin)
    w = fleet.workload("summarizer")
    replicas = apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas
    sp = spec(ActionKind.SCALE, deployment(w.name, w.namespace), replicas=replicas + 1)
    first = asyncio.run(executor.propose(sp, reason="t", requester="agent:rules", incident_id="inc-recur"))
    same = asyncio.run(executor.propose(sp, reason="t", requester="agent:rules", incident_id="inc-recur"))
    assert same.id == first.id and first.status == ChangeStatus.PENDING_APPROVAL
    executor.approve(first.id, "alice")
    assert asyncio.run(executor.execute(first.id)).status == ChangeStatus.APPLIED
    executor.record_verification(executor.ledger.get(first.id), "pass", "test")  # type: ignore[arg-type]
    try:
        # The workload drifts back to the state the first request was made in: same spec, same incident.
        apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": replicas}})
        again = asyncio.run(executor.propose(sp, reason="t", requester="agent:rules", incident_id="inc-recur"))
        assert again.fingerprint.spec_hash == first.fingerprint.spec_hash
        assert again.id != first.id, "a finished request is not handed back as if it were the new one"
        assert again.status == ChangeStatus.PENDING_APPROVAL and not executor.ledger.approvals(again.id)
        with pytest.raises(ExecutionRefused, match="approval"):
            asyncio.run(executor.execute(again.id))
    finally:
        apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": replicas}})


def test_a_rollback_of_a_single_replica_that_fails_is_proposed_and_a_healthy_one_is_still_protected(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, tmp_path: Path, audit: MemoryAudit,
        clean_faults: None) -> None:
    """ticket-105: the summarizer runs one replica; a bad build (6 % 5xx) keeps it Ready. Replacing that
    replica loses no healthy capacity, so the rollback is proposed for approval, not denied by the 50 % rule.
    The executor reads which replicas fail from Prometheus itself; the healthy replica before the fault was
    protected by the same rule."""
    from agent.change.verify import failing_replicas

    apps = client.AppsV1Api(admin)
    w = fleet.workload("summarizer")
    model = apps.read_namespaced_deployment(w.name, w.namespace).spec.template.metadata.labels["model"]
    write = K8sWriteClient(K8sWriteSettings(kubeconfig=Path(sandbox["kubeconfigs"]["executor"])))

    async def scenario() -> None:  # one event loop: the Prometheus client's connections belong to it
        prom = PrometheusClient(PrometheusSettings(url=sandbox["endpoints"]["prometheus"], scrape_interval_s=5))

        async def failing(sp: ChangeSpec, obj: dict[str, Any]) -> int | None:
            model = obj["spec"]["template"]["metadata"]["labels"].get("model", "")
            return await failing_replicas(prom, sp.target.namespace or "", model, sp.target.name)

        ex = Executor(Ledger(tmp_path / "ledger.db"), POLICY, write, audit, cluster="sandbox",
                      failing_replicas=failing)
        try:
            good = _revision(admin, w.namespace, w.name)
            healthy = await ex.propose(spec(ActionKind.ROLLBACK, deployment(w.name, w.namespace),
                                            to_revision=max(1, good - 1)), reason="t", requester="agent:rules")
            assert healthy.status == ChangeStatus.DENIED and healthy.blast_radius.failing == 0, healthy.policy_reason
            assert await failing_replicas(prom, w.namespace, model, w.name) == 0
            faults.inject(admin, fleet, "bad-rollout", target=w.name, params={"version": "2025.03.0"})
            _wait_rollout(apps, w.namespace, w.name)
            deadline = time.monotonic() + 180  # the 5-minute rate needs a few scrapes of the bad version
            while await failing_replicas(prom, w.namespace, model, w.name) != 1:
                assert time.monotonic() < deadline, "Prometheus never showed the bad replica's 5xx share above 5 %"
                await asyncio.sleep(5)
            ch = await ex.propose(spec(ActionKind.ROLLBACK, deployment(w.name, w.namespace), to_revision=good),
                                  reason="5xx after the rollout", requester="agent:rules")
            assert ch.blast_radius.failing == 1 and ch.blast_radius.capacity_drop == 0.0, ch.blast_radius
            assert ch.status in (ChangeStatus.PENDING_APPROVAL, ChangeStatus.APPROVED), ch.policy_reason
        finally:
            await prom.aclose()
            ex.ledger.close()

    try:
        asyncio.run(scenario())
    finally:
        write.close()


def _ready_pods(core: client.CoreV1Api, ns: str, app: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={app}").items
    return sorted((p for p in pods if not p.metadata.deletion_timestamp and p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])), key=lambda p: p.metadata.name)


def test_a_hung_worker_is_restarted_through_the_executor_and_the_models_throughput_recovers(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, tmp_path: Path, audit: MemoryAudit,
        clean_faults: None) -> None:
    """A tensor-parallel replica hangs (Ready, GPUs busy, no tokens). The executor reads from Prometheus that
    the pod serves nobody, so deleting it removes no healthy capacity; policy asks one approval; the pod with
    that uid is deleted and its ReplicaSet's replacement generates again, which the verifier checks. A healthy
    single replica (the last Ready one) is refused, and the executor may delete no pod outside the serving
    namespaces (the API server says so, not our code)."""
    from agent.change.verify import failing_pods, stalled_pods_query

    core = client.CoreV1Api(admin)
    w = fleet.workload(fleet.faults["hung-worker"]["workload"])
    solo = fleet.workload("summarizer")  # one replica
    write = K8sWriteClient(K8sWriteSettings(kubeconfig=Path(sandbox["kubeconfigs"]["executor"])))
    prom_url = sandbox["endpoints"]["prometheus"]

    async def scenario() -> None:  # one event loop: the Prometheus client's connections belong to it
        prom = PrometheusClient(PrometheusSettings(url=prom_url, scrape_interval_s=5))
        reader = K8sReadClient(K8sReadSettings(kubeconfig=Path(sandbox["kubeconfigs"]["reader"])))

        async def failing(sp: ChangeSpec, obj: dict[str, Any]) -> int | None:  # as agent/app.py asks for a pod
            names = await failing_pods(prom, sp.target.namespace or "", obj["metadata"]["labels"].get("model", ""))
            return None if names is None else int(sp.target.name in names)

        ex = Executor(Ledger(tmp_path / "ledger.db"), POLICY, write, audit, cluster="sandbox", failing_replicas=failing)
        try:
            for wl in (solo, w):
                _wait_rollout(client.AppsV1Api(admin), wl.namespace, wl.name)
            last = _ready_pods(core, solo.namespace, solo.name)[0].metadata.name
            ch = await ex.propose(spec(ActionKind.RESTART_POD, ObjectRef(kind="Pod", name=last,
                                                                         namespace=solo.namespace)),
                                  reason="t", requester="agent:rules")
            # Healthy: a full capacity drop (the rule's 50 %); either way no Ready replica would be left.
            assert ch.status == ChangeStatus.DENIED and ch.blast_radius.ready_after == 0, ch.policy_reason
            assert ch.policy_rule in ("restart-pod", "limits.min_ready_replicas"), ch.policy_rule

            rec = faults.inject(admin, fleet, "hung-worker")
            hung = rec["pod"]
            model = core.read_namespaced_pod(hung, w.namespace).metadata.labels["model"]
            deadline = time.monotonic() + 180
            while hung not in ((await failing_pods(prom, w.namespace, model)) or set()):
                assert time.monotonic() < deadline, "Prometheus never showed the hung replica stalled"
                await asyncio.sleep(5)
            uid = core.read_namespaced_pod(hung, w.namespace).metadata.uid
            target = ObjectRef(kind="Pod", name=hung, namespace=w.namespace)
            ch = await ex.propose(spec(ActionKind.RESTART_POD, target), reason="no tokens", requester="agent:rules")
            assert ch.status == ChangeStatus.PENDING_APPROVAL, ch.policy_reason
            assert (ch.blast_radius.capacity_drop, ch.blast_radius.failing, ch.blast_radius.ready_after) == \
                (0.0, 1, w.replicas - 1), ch.blast_radius
            assert uid in ch.diff and "dry" not in ch.policy_reason
            assert core.read_namespaced_pod(hung, w.namespace).metadata.uid == uid, "the dry run deleted nothing"
            with pytest.raises(ExecutionRefused, match="approval"):
                await ex.execute(ch.id)
            ex.approve(ch.id, "alice")
            applied_at = dt.datetime.now(dt.UTC)
            result = await ex.execute(ch.id)
            assert result.status == ChangeStatus.APPLIED and result.detail["detail"]["deployment"] == w.name
            again = await ex.execute(ch.id)
            assert not again.applied_now, "a second click deletes nothing more"

            apps = client.AppsV1Api(admin)
            _wait_rollout(apps, w.namespace, w.name)
            assert uid not in {p.metadata.uid for p in core.list_namespaced_pod(w.namespace).items}
            stored = ex.ledger.get(ch.id)
            assert stored is not None
            v = await verify(stored, applied_at, prom, reader, VerifySettings(window_s=30, baseline_s=60, step_s=5,
                                                                              rate_window_s=30))
            stalled = next(s for s in v.signals if s.signal == "stalled_pods")
            assert stalled.outcome == Outcome.PASS, v.summary()
            assert v.outcome != Outcome.REGRESSION, v.summary()
            assert not (await prom.query(stalled_pods_query(w.namespace, model))).series
            per_pod = f'rate(vllm:generation_tokens_total{{namespace="{w.namespace}", model_name="{model}"}}[30s])'
            generating = await prom.query(f"count(max by (pod) ({per_pod}) > 0)")
            assert generating.series and generating.series[0].samples[0][1] == w.replicas, "every replica generates"
            kinds = [(e.kind.value, e.decision) for e in audit.events if ch.spec_digest == e.inputs_hash]
            assert ("approval", "approve") in kinds and ("execution", "applied") in kinds, kinds
        finally:
            await prom.aclose()
            reader.close()
            ex.ledger.close()

    try:
        asyncio.run(scenario())
        # The executor's Role is in the serving namespaces only: the API server refuses a delete elsewhere
        # (authorization comes before the pod is even looked up).
        for ns in ("platform", "kube-system"):
            with pytest.raises(client.exceptions.ApiException) as e:
                write.core.delete_namespaced_pod("any-pod", ns, dry_run="All")
            assert e.value.status == 403, ns
    finally:
        write.close()
