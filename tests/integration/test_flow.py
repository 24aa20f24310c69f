"""The change flow on the real sandbox: a LangGraph interrupt holds each change until the approvals policy
asks for are in; `opsagent changes approve` resumes it; the executor applies it; verification decides;
a regression is rolled back automatically. Also: 409 conflicts are retried only after a re-read that
finds the approved spec unchanged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from agent.app import App, build_app
from agent.change.flow import FlowEvent
from agent.change.models import ChangeSpec, ChangeStatus
from agent.change.verify import signal_queries
from agent.entry.cli import app as cli
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox.fleet import Fleet, pod_template

ROOT = Path(__file__).parents[2]


def _policy(tmp: Path, *, scale_approvers: int = 1) -> Path:
    """The default policy, with the deploy window lifted (tests run at any hour) and, optionally, scaling
    asking for more approvers: policies are data, and tests use their own."""
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "deploy":
            rule.get("conditions", {}).pop("windows", None)
        if rule["id"] == "scale":
            rule["approvers"]["count"] = scale_approvers
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    (d / "default.yaml").write_text(yaml.safe_dump(doc))
    return d


@pytest.fixture
def config(tmp_path: Path) -> Path:
    f = tmp_path / "settings.yaml"
    f.write_text(yaml.safe_dump({"policies_dir": str(_policy(tmp_path, scale_approvers=2)),
                                 # a killed child's claim is abandoned at once (production waits 30 s)
                                 "execution": {"claim_ttl_s": 0}}))
    return f


@pytest.fixture
def app(sandbox: dict[str, Any], tmp_path: Path, config: Path) -> Iterator[App]:
    a = build_app(settings_for(config, sandbox, state_dir=str(tmp_path / "state")))
    yield a
    a.close()


def _cli(sandbox: dict[str, Any], config: Path, state: Path, *args: str) -> Any:
    sb_dir = sandbox["_sandbox"].s.dir
    return CliRunner().invoke(cli, [*args, "--sandbox", "--sandbox-dir", str(sb_dir), "--state-dir", str(state),
                                    "--config", str(config)])


def _baseline(sandbox: dict[str, Any], namespace: str, model: str, seconds: float = 75) -> None:
    """Verification compares with the minute before the change: wait until Prometheus has one, and a
    healthy one (an earlier test's fault may still show in the rate windows)."""
    prom = sandbox["endpoints"]["prometheus"]
    qs = signal_queries(namespace, model, 15)
    floors = {"ttft_p95": 1.5, "error_share": 0.02}

    def window(q: str) -> list[float]:
        end = time.time()
        r = httpx.get(f"{prom}/api/v1/query_range", params={"query": q, "start": end - seconds, "end": end,
                                                             "step": 2.5}, timeout=10).json()
        res = r["data"]["result"]
        return [float(v) for _, v in res[0]["values"]] if res else []

    def healthy() -> bool:
        for name, floor in floors.items():
            vals = window(qs[name])
            if len(vals) < seconds / 2.5 - 2 or max(vals) >= floor:
                return False
        return True

    _wait(healthy, 240)


def _replicas(admin: client.ApiClient, ns: str, name: str) -> int:
    return int(client.AppsV1Api(admin).read_namespaced_deployment(name, ns).spec.replicas)


def _run(app: App, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work
        finally:
            await app.aclose_clients()

    return asyncio.run(go())


def test_a_change_waits_at_its_interrupt_until_the_cli_brings_enough_approvals(
        app: App, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, config: Path,
        tmp_path: Path) -> None:
    w = fleet.workload("chat-lite")
    before = _replicas(admin, w.namespace, w.name)
    events: list[FlowEvent] = []

    async def record(ev: FlowEvent) -> None:
        events.append(ev)

    flow = app.flow(on_event=record)
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": before + 1})
    ch = _run(app, app.executor().propose(spec, reason="queue building up", requester="agent:rules"))
    st = _run(app, flow.open(ch))
    assert st.waiting and st.stage == "awaiting_approval"
    assert st.change.status == ChangeStatus.PENDING_APPROVAL and st.change.approvals_required == 2
    assert _run(app, flow.open(ch)).waiting, "opening twice continues the same thread, it does not restart it"

    state = tmp_path / "state"
    listed = _cli(sandbox, config, state, "changes", "list")
    assert ch.id in listed.output and "pending_approval" in listed.output

    first = _cli(sandbox, config, state, "changes", "approve", ch.id, "--as", "bob")
    assert first.exit_code == 0, first.output
    assert "awaiting_approval" in first.output
    assert _replicas(admin, w.namespace, w.name) == before, "one approval of two: nothing happened"

    denied = _cli(sandbox, config, state, "changes", "approve", ch.id, "--as", "mallory")
    assert denied.exit_code == 4 and "not anyone in the policy's people table" in denied.output
    assert _replicas(admin, w.namespace, w.name) == before

    _baseline(sandbox, w.namespace, w.model)
    second = _cli(sandbox, config, state, "changes", "approve", ch.id, "--as", "carol")
    assert second.exit_code == 0, second.output
    assert "verified" in second.output, second.output
    assert _replicas(admin, w.namespace, w.name) == before + 1
    final = app.ledger.get(ch.id)
    assert final is not None and final.status == ChangeStatus.VERIFIED
    assert [a.approver for a in app.ledger.approvals(ch.id)] == ["bob", "carol"]
    st = _run(app, flow.state(ch.id))
    assert not st.waiting and st.stage == "verified"
    kinds = [(e["kind"], e["decision"]) for e in app.audit.events(None) if ch.id in e["action"]]
    assert ("approval", "refused") in kinds and ("execution", "applied") in kinds and \
        ("verification", "pass") in kinds
    assert app.audit.verify().ok
    client.AppsV1Api(admin).patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": before}})


def test_a_rejection_ends_the_flow_and_nothing_runs(app: App, admin: client.ApiClient, fleet: Fleet) -> None:
    w = fleet.workload("summarizer")
    before = _replicas(admin, w.namespace, w.name)
    flow = app.flow()
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": before + 1})
    ch = _run(app, app.executor().propose(spec, reason="test", requester="agent:rules"))
    _run(app, flow.open(ch))
    st = _run(app, flow.decide(ch.id, "alice", "reject", via="cli"))
    assert st.stage == "rejected" and not st.waiting
    assert _replicas(admin, w.namespace, w.name) == before
    assert app.ledger.execution(ch.id) is None
    with pytest.raises(Exception, match="rejected"):
        _run(app, flow.decide(ch.id, "bob", "approve"))


def test_a_regressing_deploy_is_rolled_back_by_its_flow(
        app: App, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet) -> None:
    apps = client.AppsV1Api(admin)
    w = fleet.workload("chat-lite")
    good_version = apps.read_namespaced_deployment(w.name, w.namespace).spec.template.metadata.labels[
        "model-version"]
    bad = fleet.version(w.model, "2025.08.0")
    assert bad is not None
    tpl = pod_template(fleet, w, bad)
    spec = ChangeSpec(action=ActionKind.DEPLOY, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"container": "server", "image": bad.image, "args": tpl["spec"]["containers"][0]["args"],
                              "labels": {"model-version": "2025.08.0"},
                              "change_cause": "deploy llama-3.1-8b-instruct 2025.08.0"})
    flow = app.flow()
    ch = _run(app, app.executor().propose(spec, reason="new model version", requester="user:carol"))
    assert ch.approvals_required == 2
    assert _run(app, flow.open(ch)).waiting
    assert _run(app, flow.decide(ch.id, "alice")).waiting
    _baseline(sandbox, w.namespace, w.model)
    st = _run(app, flow.decide(ch.id, "bob"))
    assert st.stage == "rolled_back", (st.stage, st.detail, st.verification)
    assert "regression" in (st.verification or "")
    _wait(lambda: apps.read_namespaced_deployment(w.name, w.namespace).spec.template.metadata.labels[
        "model-version"] == good_version, 60)
    final = app.ledger.get(ch.id)
    assert final is not None and final.status == ChangeStatus.ROLLED_BACK
    undo = [c for c in app.ledger.list_changes() if c.rollback_of == ch.id]
    assert len(undo) == 1 and undo[0].status == ChangeStatus.APPLIED and undo[0].requester == "executor:auto-rollback"


def test_a_scale_out_beyond_the_free_gpus_is_judged_on_what_came_up_not_rolled_back(
        app: App, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet) -> None:
    # chat-lite runs 2 replicas on the L4 pool of 4 GPUs: asking for 6 leaves 2 Pending (Unschedulable).
    # The 4 that run are more capacity than before; waiting for the 2 would time out and roll back to 2.
    w = fleet.workload("chat-lite")
    before = _replicas(admin, w.namespace, w.name)
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": 6})
    flow = app.flow()
    ch = _run(app, app.executor().propose(spec, reason="surge", requester="agent:rules"))
    assert _run(app, flow.open(ch)).waiting
    assert _run(app, flow.decide(ch.id, "alice")).waiting
    _baseline(sandbox, w.namespace, w.model)
    try:
        st = _run(app, flow.decide(ch.id, "bob"))
        assert st.stage in ("verified", "inconclusive"), (st.stage, st.detail, st.verification)
        assert "unschedulable" in (st.verification or "") and "4/6 available" in (st.verification or "")
        assert _replicas(admin, w.namespace, w.name) == 6
        assert not [c for c in app.ledger.list_changes() if c.rollback_of == ch.id]
    finally:
        client.AppsV1Api(admin).patch_namespaced_deployment(w.name, w.namespace, {"spec": {"replicas": before}})


def test_a_409_is_retried_after_a_reread_finds_the_approved_spec_unchanged(
        app: App, admin: client.ApiClient, fleet: Fleet) -> None:
    """Another writer keeps touching the Deployment's metadata (as controllers and labelers do): the
    executor's writes, made with the resourceVersion it checked, meet 409s; each is audited, the object
    re-read, the fingerprint re-checked, and the change lands once."""
    w = fleet.workload("embed-api")
    apps = client.AppsV1Api(admin)
    before = _replicas(admin, w.namespace, w.name)
    stop = threading.Event()
    touches = 0

    def conflicted() -> bool:
        return any(e["decision"] == "conflict" for e in app.audit.events(None))

    def busy() -> None:  # writes until the executor has met a 409, then lets its retry through
        nonlocal touches
        while not stop.is_set() and not conflicted():
            apps.patch_namespaced_deployment(w.name, w.namespace,
                                             {"metadata": {"annotations": {"test/touch": str(time.monotonic())}}})
            touches += 1

    spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": before + 1})
    ex = app.executor()
    ch = _run(app, ex.propose(spec, reason="test", requester="agent:rules"))
    ex.approve(ch.id, "alice")
    ex.approve(ch.id, "bob")
    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        result = _run(app, ex.execute(ch.id))
    finally:
        stop.set()
        t.join()
    assert touches > 0
    assert result.status == ChangeStatus.APPLIED, result.detail
    assert _replicas(admin, w.namespace, w.name) == before + 1
    conflicts = [e for e in app.audit.events(None) if e["decision"] == "conflict" and ch.id in e["action"]]
    assert conflicts, "the busy writer should have caused at least one 409"
    assert all("spec unchanged, retrying" in e["reason"] for e in conflicts)
    apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": before}})


@pytest.mark.parametrize("crash", ["after-claim", "after-applied"])
def test_a_flow_killed_mid_change_is_resumed_and_applies_once(
        crash: str, app: App, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, config: Path,
        tmp_path: Path) -> None:
    """SIGKILL while the approved change executes; on restart `resume_pending` continues the thread from
    its last checkpoint: the executor reconciles, the change is applied exactly once and then verified."""
    apps = client.AppsV1Api(admin)
    w = fleet.workload("summarizer")
    before = _replicas(admin, w.namespace, w.name)
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": before + 1})
    ch = _run(app, app.executor().propose(spec, reason="test", requester="agent:rules"))
    _run(app, app.flow().open(ch))
    _run(app, app.flow().decide(ch.id, "bob"))  # one of two approvals; carol's comes in the child
    _baseline(sandbox, w.namespace, w.model)
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({k: v for k, v in sandbox.items() if not k.startswith("_")}))
    child = subprocess.run([sys.executable, "-m", "tests.integration.flow_child", str(status_file), str(config),
                            str(tmp_path / "state"), ch.id, "carol", crash], capture_output=True, text=True,
                           timeout=180, cwd=ROOT)
    assert child.returncode == -9, f"the child was to be killed at {crash}: {child.stderr[-800:]}"
    gen_after_crash = apps.read_namespaced_deployment(w.name, w.namespace).metadata.generation
    restarted = build_app(app.settings)  # a new process's view: same state directory
    try:
        resumed = _run(restarted, restarted.flow().resume_pending())
    finally:
        restarted.close()
    mine = [r for r in resumed if r.change.id == ch.id]
    assert len(mine) == 1 and mine[0].stage == "verified", [(r.change.id, r.stage, r.detail) for r in resumed]
    assert _replicas(admin, w.namespace, w.name) == before + 1
    d = apps.read_namespaced_deployment(w.name, w.namespace)
    expected_gen = gen_after_crash + (1 if crash == "after-claim" else 0)
    assert d.metadata.generation == expected_gen, "the spec was written exactly once"
    assert app.ledger.execution(ch.id).state == "applied"  # type: ignore[union-attr]
    assert app.audit.verify().ok
    apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": before}})


def _wait(ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(1)
    raise AssertionError("condition not met in time")
