"""Deployments through the agent, on the real Argo Rollouts controller gated by the project's AnalysisTemplate.

A sandbox of its own (started with rollouts, on its own port range) runs the upstream controller
against the sandbox's API server; the simulator serves each pod's signals by the version it runs, and
the analysis reads them per pod-template hash from Prometheus. Each deployment is asked for the way a
user asks (`opsagent deploy`, or the CI API), approved by two people, written by the guarded executor
and watched by the agent. A good version must walk 10 % → 50 % → 100 % and be promoted; a bad one must
be aborted at the first step with stable serving throughout and its template put back; a version that
does not fit, a surge without free GPUs and a GitOps-owned target are refused before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from agent.app import App, build_app
from agent.change.flow import FlowState
from agent.change.models import ChangeStage, ChangeStatus
from agent.entry.cli import app as cli
from agent.entry.commands.common import settings_for
from agent.entry.slack.service import build_server
from deploy.sandbox import rollouts
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import LABEL_APP, LABEL_MODEL_VERSION, Fleet
from deploy.sandbox.sandbox import SandboxSettings
from tests.integration.conftest import PORT_BASE as SANDBOX_PORT_BASE
from tests.integration.conftest import sandbox_lifetime
from tests.integration.promql import query

PORT_BASE = int(os.environ.get("OPSAGENT_TEST_ROLLOUTS_PORT_BASE", str(SANDBOX_PORT_BASE + 1000)))
WORKLOAD = "assist-mini"
GOOD, BAD = "2025.09.0", "2025.08.0"  # fleet-rollouts.yaml / fleet.yaml: the bad one errs 8 %, TTFT 0.9 s
ROOT = Path(__file__).parents[2]
PIPELINE_TOKEN = "ci-model-assist-0123456789abcdef"


@pytest.fixture(scope="module")
def rsandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = SandboxSettings(dir=tmp_path_factory.mktemp("rollouts-sandbox"), port_base=PORT_BASE,
                               rollouts=True, history_days=0.5,
                               webhook_url=f"http://127.0.0.1:{PORT_BASE + 99}/alertmanager")
    yield from sandbox_lifetime(settings, tmp_path_factory, "rollouts-sandbox", must_run=("argo-rollouts",))


@pytest.fixture(scope="module")
def radmin(rsandbox: dict[str, Any]) -> Iterator[client.ApiClient]:
    api = api_client(Path(rsandbox["kubeconfigs"]["admin"]))
    yield api
    api.close()


@pytest.fixture(scope="module")
def rfleet() -> Fleet:
    return rollouts.merged_fleet(Fleet.load())[0]


@pytest.fixture(scope="module")
def rconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default policy with the deploy window lifted (tests run at any hour); one pipeline token."""
    d = tmp_path_factory.mktemp("deploy-config")
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "deploy":
            rule.get("conditions", {}).pop("windows", None)
    doc["limits"]["rate"]["max_changes_per_target_per_hour"] = 20  # every test here deploys the same Rollout
    (d / "policies").mkdir()
    (d / "policies" / "default.yaml").write_text(yaml.safe_dump(doc))
    (d / "settings.yaml").write_text(yaml.safe_dump({
        "policies_dir": str(d / "policies"), "server": {"pipeline_tokens": f"model-assist={PIPELINE_TOKEN}"}}))
    return d / "settings.yaml"


@pytest.fixture(scope="module")
def rstate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy-state")


def _app(rsandbox: dict[str, Any], rconfig: Path, rstate: Path) -> App:
    return build_app(settings_for(rconfig, rsandbox, state_dir=str(rstate)))


def _cli(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--sandbox", "--sandbox-dir", str(rsandbox["_sandbox"].s.dir),
                                    "--state-dir", str(rstate), "--config", str(rconfig)])


def _request(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, version: str) -> str:
    """`opsagent deploy` as a user types it; the change id it prints."""
    out = _cli(rsandbox, rconfig, rstate, "deploy", f"llm-prod/{WORKLOAD}", "--version", version, "--as", "dana",
               "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout[out.stdout.index("{"):])
    assert body["status"] == "pending_approval" and body["approvals_required"] == 2, body
    assert all(c["ok"] for c in body["preflight"]), body["preflight"]
    assert f"+      model-version: {version}" in body["diff"], body["diff"]
    return str(body["change_id"])


class Approval(threading.Thread):
    """The second approval, in its own thread and App: it runs the execution and the watch to the end."""

    def __init__(self, rsandbox: dict[str, Any], rconfig: Path, rstate: Path, change_id: str) -> None:
        super().__init__(daemon=True)
        self.args_ = (rsandbox, rconfig, rstate)
        self.change_id = change_id
        self.state: FlowState | None = None
        self.error: BaseException | None = None
        self.started_at = 0.0

    def run(self) -> None:
        app = _app(*self.args_)
        self.started_at = time.time()
        try:
            self.state = asyncio.run(self._decide(app))
        except BaseException as e:
            self.error = e
        finally:
            app.close()

    async def _decide(self, app: App) -> FlowState:
        try:
            return await app.flow().decide(self.change_id, "alice", "approve", via="cli")
        finally:
            await app.aclose_clients()


def _approve(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, change_id: str) -> Approval:
    out = _cli(rsandbox, rconfig, rstate, "changes", "approve", change_id, "--as", "bob")
    assert out.exit_code == 0 and "awaiting_approval" in out.output, out.output  # one of two
    second = Approval(rsandbox, rconfig, rstate, change_id)
    second.start()
    return second


def _audit(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, needle: str) -> list[dict[str, Any]]:
    app = _app(rsandbox, rconfig, rstate)
    try:
        return [e for e in app.audit.events() if needle in (e["action"] + " " + e["reason"])]
    finally:
        app.close()


def _stored(rsandbox: dict[str, Any], rconfig: Path, rstate: Path) -> tuple[int, int]:
    """(change requests, audit events) in the store: what a refused request must not add to."""
    app = _app(rsandbox, rconfig, rstate)
    try:
        return len(app.ledger.list_changes(limit=10_000)), sum(1 for _ in app.audit.events())
    finally:
        app.close()


@dataclass
class Watch:
    """What was seen while a rollout ran: canary pod counts per version, steps, the stable hash."""

    max_pods: dict[str, int] = field(default_factory=dict)
    weights: list[int] = field(default_factory=list)
    stable_hashes: set[str] = field(default_factory=set)
    min_stable_ready: int = 10**6
    first_canary_at: float | None = None
    last_canary_at: float | None = None


def _rollout(api: client.ApiClient, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        rollouts.GROUP, rollouts.VERSION, ns, "rollouts", WORKLOAD)
    return obj


def _deploy(api: client.ApiClient, rsandbox: dict[str, Any], rconfig: Path, rstate: Path,
            version: str) -> tuple[str, Approval]:
    """Ask for `version` through the agent and approve it twice; the stable hash before, the approval thread."""
    before = _rollout(api, "llm-prod")
    change_id = _request(rsandbox, rconfig, rstate, version)
    assert _rollout(api, "llm-prod")["metadata"]["generation"] == before["metadata"]["generation"], \
        "nothing is written before the approvals"
    return str((before.get("status") or {}).get("stableRS") or ""), _approve(rsandbox, rconfig, rstate, change_id)


def _observe(api: client.ApiClient, ns: str, version: str, w: Watch, stable_hash: str) -> dict[str, Any]:
    ro = _rollout(api, ns)
    st = ro.get("status") or {}
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    new = [p for p in live if (p.metadata.labels or {}).get(LABEL_MODEL_VERSION) == version]
    w.max_pods[version] = max(w.max_pods.get(version, 0), len(new))
    if new:
        w.last_canary_at = time.time()
        w.first_canary_at = w.first_canary_at or w.last_canary_at
    stable_ready = sum(1 for p in live if (p.metadata.labels or {}).get("rollouts-pod-template-hash") == stable_hash
                       and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))
    w.min_stable_ready = min(w.min_stable_ready, stable_ready)
    if st.get("stableRS"):
        w.stable_hashes.add(str(st["stableRS"]))
    if not st.get("currentPodHash") or st["currentPodHash"] == stable_hash:
        return ro  # the controller has not taken up the new template yet: its step index is the old one's
    weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
    if weight is None and st.get("currentStepIndex") is not None:
        weight = _weight_at(ro, int(st["currentStepIndex"]))
    if weight is not None and (not w.weights or w.weights[-1] != weight):
        w.weights.append(int(weight))
    return ro


def _weight_at(ro: dict[str, Any], index: int) -> int:
    steps = ro["spec"]["strategy"]["canary"]["steps"]
    weight = 0
    for s in steps[: index + 1]:
        weight = int(s.get("setWeight", weight))
    return 100 if index >= len(steps) else weight


def _served(prometheus: str, ns: str, canary_hash: str, start: float, end: float) -> tuple[float, float]:
    """Requests the canary's pods served, and all the workload's pods served, between start and end.

    The canary's counters start at zero with its pods, so their highest value is what they served
    (increase() would drop the first sample of a new series and flatter the canary); the other pods'
    counters run on, so theirs is the increase over the window.
    """
    window = f"{max(1, round(end - start))}s"
    sel = f'namespace="{ns}", pod=~"{WORKLOAD}-.*"'
    canary = query(prometheus, f'sum(max_over_time(http_requests_total{{{sel}, '
                               f'rollouts_pod_template_hash="{canary_hash}"}}[{window}]))', at=end)
    others = query(prometheus, f'sum(increase(http_requests_total{{{sel}, '
                               f'rollouts_pod_template_hash!="{canary_hash}"}}[{window}]))', at=end)
    bad = float(canary[0]["value"][1]) if canary else 0.0
    return bad, bad + (float(others[0]["value"][1]) if others else 0.0)


def test_a_good_version_walks_the_canary_steps_and_is_promoted(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    ns = rfleet.workload(WORKLOAD).namespace
    stable_before, approval = _deploy(radmin, rsandbox, rconfig, rstate, GOOD)
    while not approval.started_at:
        time.sleep(0.1)
    t0 = approval.started_at
    seen = Watch()
    deadline = time.monotonic() + 420
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _observe(radmin, ns, GOOD, seen, stable_before)
        st = ro.get("status") or {}
        if rollouts.phase(ro) == "Healthy" and st.get("stableRS") and st["stableRS"] != stable_before:
            break
        assert not st.get("abort"), f"the good version was aborted: {st.get('message')}"
        time.sleep(0.5)
    elapsed = time.time() - t0
    st = ro.get("status") or {}
    assert rollouts.phase(ro) == "Healthy" and st.get("stableRS") != stable_before, \
        f"not promoted within 420 s: phase {rollouts.phase(ro)}, status {st}"
    assert [x for x in seen.weights if x in (10, 50, 100)][:3] == [10, 50, 100], f"steps seen: {seen.weights}"
    pods = client.CoreV1Api(radmin).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
    versions = {(p.metadata.labels or {}).get(LABEL_MODEL_VERSION) for p in pods if not p.metadata.deletion_timestamp}
    assert versions == {GOOD}, f"after promotion every pod runs {GOOD}: {versions}"
    approval.join(120)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage == ChangeStage.VERIFIED, (approval.state.stage, approval.state.verification)
    assert approval.state.change.status == ChangeStatus.VERIFIED
    assert "promoted to 100 %" in str(approval.state.verification)
    watched = [e["reason"] for e in _audit(rsandbox, rconfig, rstate, f"watch {approval.change_id}")]
    assert any("canary at 10 %" in r for r in watched) and any(r.startswith("promoted") for r in watched), watched
    print(f"\n[figure] good version {GOOD}: approval → promoted at 100 % in {elapsed:.1f} s "
          f"(steps {seen.weights}); the agent reported: {watched[-1]}")


def test_a_bad_version_is_aborted_by_analysis_at_the_first_step(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    ns = rfleet.workload(WORKLOAD).namespace
    replicas = rfleet.workload(WORKLOAD).replicas
    stable_before, approval = _deploy(radmin, rsandbox, rconfig, rstate, BAD)
    while not approval.started_at:
        time.sleep(0.1)
    t0 = approval.started_at
    assert stable_before
    seen = Watch()
    deadline = time.monotonic() + 300
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _observe(radmin, ns, BAD, seen, stable_before)
        if (ro.get("status") or {}).get("abort"):
            break
        time.sleep(0.5)
    st = ro.get("status") or {}
    assert st.get("abort"), f"the bad version was not aborted within 300 s: {st}"
    aborted_at = time.time()
    canary_hash = str(st.get("currentPodHash") or "")
    # Aborted at the first step's analysis: never beyond 10 %, one canary pod of ten at most.
    assert int(st.get("currentStepIndex", 99)) <= 1, f"aborted at step {st.get('currentStepIndex')}"
    assert max(seen.weights or [0]) <= 10, f"weights seen: {seen.weights}"
    assert seen.max_pods.get(BAD, 0) <= 1, f"bad version pods at most: {seen.max_pods}"
    assert seen.stable_hashes == {stable_before}, f"the stable ReplicaSet changed: {seen.stable_hashes}"
    assert "analysis" in str(st.get("message", "")).lower() or st.get("phase") == "Degraded", st
    # Stable scales back to every replica and the canary's pods go away.
    def settled() -> bool:
        _observe(radmin, ns, BAD, Watch(), stable_before)
        pods = client.CoreV1Api(radmin).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        return (sum(1 for p in live if p.metadata.labels.get("rollouts-pod-template-hash") == stable_before) == replicas
                and not any(p.metadata.labels.get(LABEL_MODEL_VERSION) == BAD for p in live))
    end = time.monotonic() + 120
    while not settled() and time.monotonic() < end:
        time.sleep(1)
    assert settled(), "after the abort, stable runs every replica and no bad pod is left"
    assert seen.min_stable_ready >= replicas - 1, f"stable dipped to {seen.min_stable_ready} Ready pods"
    # Requests the bad version served, against everything the workload served while it was exposed.
    time.sleep(12)  # two scrapes past the abort, so the counters' last samples are in
    start = (seen.first_canary_at or t0) - 5
    bad, total = _served(rsandbox["endpoints"]["prometheus"], ns, canary_hash, start, aborted_at + 10)
    assert total > 0, "Prometheus saw the workload's traffic"
    share = bad / total
    print(f"\n[figure] bad version {BAD}: aborted {aborted_at - t0:.1f} s after the change; it served "
          f"{bad:.0f} of {total:.0f} requests ({share:.1%}) while exposed")
    assert bad > 0, "the canary did serve (so the analysis had evidence)"
    assert share <= 0.10 * 1.1, f"the bad version served {share:.1%}, more than the first step's 10 %"
    # The agent says why, and puts the Rollout's template back to the stable one under the same approval.
    approval.join(120)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage in (ChangeStage.ROLLED_BACK, ChangeStage.REGRESSION), approval.state.stage
    assert "aborted by analysis at step" in str(approval.state.verification), approval.state.verification
    watched = [e["reason"] for e in _audit(rsandbox, rconfig, rstate, f"watch {approval.change_id}")]
    aborted = [r for r in watched if r.startswith("aborted")]
    assert aborted and ("error-share" in aborted[0] or "ttft" in aborted[0]), watched
    ro = _rollout(radmin, ns)
    assert ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] != BAD, "the template is put back"
    assert (ro.get("status") or {}).get("stableRS") == stable_before
    print(f"[figure] the agent reported: {aborted[0]}")


def test_a_version_that_does_not_fit_or_a_surge_without_free_gpus_is_refused_at_preflight(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    before = _stored(rsandbox, rconfig, rstate)
    generation = _rollout(radmin, "llm-prod")["metadata"]["generation"]
    out = _cli(rsandbox, rconfig, rstate, "deploy", f"llm-prod/{WORKLOAD}", "--version", GOOD,
               "--model", "llama-3.1-70b-instruct", "--as", "dana")
    assert out.exit_code == 4, out.output
    assert "refused at preflight, no change request made" in out.output
    assert "llama-3.1-70b-instruct at TP 1 does not fit 24 GiB GPUs: 131.5 GiB of weights per GPU" in out.output
    assert "weights per GPU = 70.6 B params × 2 B ÷ TP 1 = 131.5 GiB" in out.output
    # Fill the pool's free GPUs: the canary's surge pod has nowhere to go.
    w = rfleet.workload(WORKLOAD)
    template = _rollout(radmin, "llm-prod")["spec"]["template"]["spec"]
    core = client.CoreV1Api(radmin)
    free = 12 - w.replicas  # fleet-rollouts.yaml: twelve one-L4 nodes, ten replicas
    fillers = [f"filler-{i}" for i in range(free)]
    for name in fillers:
        core.create_namespaced_pod("llm-prod", {"metadata": {"name": name}, "spec": {
            "nodeSelector": template["nodeSelector"], "tolerations": template["tolerations"],
            "containers": [{"name": "c", "image": "pause", "resources": {
                "requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}]}})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                not core.read_namespaced_pod(n, "llm-prod").spec.node_name for n in fillers):
            time.sleep(1)
        out = _cli(rsandbox, rconfig, rstate, "deploy", f"llm-prod/{WORKLOAD}", "--version", GOOD, "--as", "dana")
        assert out.exit_code == 4, out.output
        assert "1 new pod(s) of 1 GPU need 1 GPUs on opsagent.dev/node-pool=l4-rollouts; room for 0 pod(s) " \
               "(0 free GPUs)" in out.output, out.output
    finally:
        for name in fillers:
            core.delete_namespaced_pod(name, "llm-prod", grace_period_seconds=0)
    changes, events = _stored(rsandbox, rconfig, rstate)
    assert changes == before[0], "a refusal is not a change request"
    assert events == before[1] + 2, "each refusal is audited once"
    refusals = _audit(rsandbox, rconfig, rstate, "preflight (cli)")
    assert any("does not fit 24 GiB" in e["reason"] for e in refusals)
    assert any("room for 0 pod(s)" in e["reason"] for e in refusals)
    assert _rollout(radmin, "llm-prod")["metadata"]["generation"] == generation, "nothing was written"


def test_a_gitops_owned_rollout_gets_a_manifest_patch_and_no_write(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rconfig: Path, rstate: Path) -> None:
    custom = client.CustomObjectsApi(radmin)
    tracking = {"argocd.argoproj.io/tracking-id": f"assist:argoproj.io/Rollout:llm-prod/{WORKLOAD}"}

    def annotate(value: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, "llm-prod", "rollouts", WORKLOAD,
                                              {"metadata": {"annotations": value}})

    annotate(tracking)
    try:
        before = _rollout(radmin, "llm-prod")
        out = _cli(rsandbox, rconfig, rstate, "deploy", f"llm-prod/{WORKLOAD}", "--version", "2025.10.1",
                   "--as", "dana", "--json")
        assert out.exit_code == 4, out.output  # denied: nothing to approve, the patch goes to Git
        body = json.loads(out.stdout[out.stdout.index("{"):])
        assert body["status"] == "denied" and body["policy"].startswith("gitops-owned:"), body
        assert "A direct write would be reverted" in body["policy"]
        assert f"a/llm-prod/rollout-{WORKLOAD}.yaml" in body["diff"]
        assert "+        model-version: 2025.10.1" in body["diff"]
        app = _app(rsandbox, rconfig, rstate)
        try:
            with pytest.raises(Exception, match="refused"):
                asyncio.run(app.executor().execute(body["change_id"]))
        finally:
            app.close()
        after = _rollout(radmin, "llm-prod")
        assert after["metadata"]["generation"] == before["metadata"]["generation"], "the executor wrote nothing"
    finally:
        annotate({"argocd.argoproj.io/tracking-id": None})


def test_the_ci_api_refuses_a_bad_token_and_an_unknown_target_storing_nothing(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rconfig: Path, rstate: Path) -> None:
    app = _app(rsandbox, rconfig, rstate)
    asgi, _ = build_server(app)
    good = {"authorization": f"Bearer {PIPELINE_TOKEN}"}
    request = {"target": f"llm-prod/{WORKLOAD}", "version": "2025.10.2"}

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://opsagent") as http:
            return [
                await http.post("/deployments", json=request),
                await http.post("/deployments", json=request, headers={"authorization": "Bearer wrong-token"}),
                await http.post("/deployments", json=request,
                                headers={"authorization": f"Bearer {PIPELINE_TOKEN[:-1]}"}),
                await http.post("/deployments", json={**request, "target": "llm-prod/no-such-model"}, headers=good),
                await http.get("/deployments/chg-000000000000", headers=good),
            ]

    before = _stored(rsandbox, rconfig, rstate)
    try:
        missing, wrong, almost, unknown, unknown_id = asyncio.run(calls())
    finally:
        app.close()
    assert [missing.status_code, wrong.status_code, almost.status_code] == [401, 401, 401]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert unknown.status_code == 404 and "no Rollout or Deployment llm-prod/no-such-model" in unknown.json()["error"]
    assert unknown_id.status_code == 404
    assert _stored(rsandbox, rconfig, rstate) == before, "nothing stored, nothing audited"

    app = _app(rsandbox, rconfig, rstate)
    asgi, _ = build_server(app)

    async def accepted() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://opsagent") as http:
            made = await http.post("/deployments", json=request, headers=good)
            status = await http.get(f"/deployments/{made.json().get('id')}", headers=good)
            anon = await http.get(f"/deployments/{made.json().get('id')}")
            return made, status, anon

    try:
        made, status, anon = asyncio.run(accepted())
        change = app.ledger.get(made.json()["id"])
    finally:
        app.close()
    assert made.status_code == 202, made.text
    assert change is not None and change.requester == "ci:model-assist"
    assert change.status == ChangeStatus.PENDING_APPROVAL
    assert status.status_code == 200 and status.json()["status"] == "pending_approval"
    assert status.json()["approvals"] == {"have": 0, "required": 2, "roles": ["ml-platform", "oncall"]}
    assert anon.status_code == 401


def test_an_abort_asked_for_mid_canary_is_a_change_request_and_the_template_goes_back(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    ns = rfleet.workload(WORKLOAD).namespace
    stable_version = _rollout(radmin, ns)["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION]
    version = GOOD if stable_version != GOOD else "2025.05.2"  # a good build either way: only a human stops it
    stable_before, deploying = _deploy(radmin, rsandbox, rconfig, rstate, version)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the canary to run (its first step)
        st = _rollout(radmin, ns).get("status") or {}
        if st.get("currentPodHash") and st["currentPodHash"] != stable_before:
            break
        time.sleep(1)
    out = _cli(rsandbox, rconfig, rstate, "rollout", "abort", f"{ns}/{WORKLOAD}", "--as", "dana",
               "--reason", "the canary's tokens look wrong to a human")
    assert out.exit_code == 0 and "pending_approval" in out.output, out.output
    abort_id = out.output.split("change request ", 1)[1].split()[0]
    assert not (_rollout(radmin, ns).get("status") or {}).get("abort"), "nothing written before the approval"
    app = _app(rsandbox, rconfig, rstate)

    async def approve() -> FlowState:
        try:
            return await app.flow().decide(abort_id, "alice", "approve", via="cli")
        finally:
            await app.aclose_clients()

    try:
        st_abort = asyncio.run(approve())
    finally:
        app.close()
    assert st_abort.stage == ChangeStage.VERIFIED, (st_abort.stage, st_abort.verification, st_abort.detail)
    assert "aborted as asked" in str(st_abort.verification)
    # The deployment's own watch sees the abort, and its template is put back under its approval.
    deploying.join(240)
    assert deploying.error is None and deploying.state is not None, deploying.error
    assert deploying.state.stage in (ChangeStage.ROLLED_BACK, ChangeStage.REGRESSION), deploying.state.stage
    ro = _rollout(radmin, ns)
    assert ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] == stable_version
    assert (ro.get("status") or {}).get("stableRS") == stable_before
    assert _audit(rsandbox, rconfig, rstate, f"execute {abort_id}"), "the abort's execution is audited"


def test_ops_deploy_in_slack_refuses_with_the_numbers_or_posts_the_change_for_approval(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rconfig: Path, rstate: Path) -> None:
    from tests.serving import serve
    from tests.slack_standin import SlackClientSim, SlackStandIn, buttons, render

    secret, channel = "rollouts-test-signing-secret", "C0DEPLOYS"
    api = SlackStandIn()
    generation = _rollout(radmin, "llm-prod")["metadata"]["generation"]
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = settings_for(rconfig, rsandbox, state_dir=str(rstate), slack={
            "enabled": True, "bot_token": "xoxb-test", "signing_secret": secret, "channel": channel,
            "api_url": f"{api_url}/api/"})
        app = build_app(settings)
        try:
            asgi, bot = build_server(app)
            assert bot is not None
            with serve(asgi) as url:
                sim = SlackClientSim(url, secret, api)
                for text in (f"deploy llm-prod/{WORKLOAD} --version 2025.10.3 --model llama-3.1-70b-instruct",
                             f"deploy llm-prod/{WORKLOAD} --version 2025.10.3", f"deploy {WORKLOAD} --version 1"):
                    assert sim.command("U0DANA001", text, channel=channel).status_code == 200
                replies = api.wait(lambda: len(api.responses) >= 3 and api.responses, what="three replies",
                                   timeout=180)
                texts = [r["text"] for r in sorted(replies, key=lambda r: int(r["key"].removeprefix("cmd")))]
                blocks_posted = api.wait(lambda: [c for c in api.of("chat.postMessage")
                                                  if c.args.get("channel") == channel], what="the change block")
        finally:
            app.close()
    assert "refused at preflight" in texts[0] and "does not fit 24 GiB GPUs" in texts[0], texts[0]
    assert texts[1].startswith("Change request `chg-"), texts[1]
    change_id = texts[1].split("`")[1]
    assert "needs 2 approval(s)" in texts[1] and "version" in texts[1]
    block = next(c for c in blocks_posted if change_id in render(c.args))
    assert buttons(block.args), "the change block carries Approve / Reject"
    assert "NAMESPACE/NAME" in texts[2], texts[2]
    assert _rollout(radmin, "llm-prod")["metadata"]["generation"] == generation, "nothing written from chat"


def test_a_plain_deployment_gets_a_rolling_update_with_the_surge_the_free_gpus_hold(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    w = rfleet.workload("chat-lite")  # a Deployment on the l4 pool (four one-L4 nodes, two replicas here)
    apps = client.AppsV1Api(radmin)
    dep = apps.read_namespaced_deployment(w.name, w.namespace)
    args = [*dep.spec.template.spec.containers[0].args, "--max-model-len", "16384"]
    out = _cli(rsandbox, rconfig, rstate, "deploy", f"{w.namespace}/{w.name}", "--version", GOOD,
               "--args", " ".join(args), "--as", "dana", "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout[out.stdout.index("{"):])
    assert body["kind"] == "Deployment" and "(rolling)" in body["summary"]
    capacity = next(c for c in body["preflight"] if c["name"] == "GPU capacity")
    assert capacity["ok"] and "rolling update with maxSurge 1" in capacity["summary"], capacity
    approval = _approve(rsandbox, rconfig, rstate, body["change_id"])
    approval.join(600)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage not in (ChangeStage.ROLLED_BACK, ChangeStage.FAILED, ChangeStage.REFUSED), \
        (approval.state.stage, approval.state.verification, approval.state.detail)
    dep = apps.read_namespaced_deployment(w.name, w.namespace)
    assert dep.spec.strategy.rolling_update.max_surge == 1 and dep.spec.strategy.rolling_update.max_unavailable == 0
    assert dep.spec.template.metadata.labels["model-version"] == GOOD
    assert dep.metadata.annotations["kubernetes.io/change-cause"].startswith("opsagent deploy: version")
    pods = client.CoreV1Api(radmin).list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
    assert {(p.metadata.labels or {}).get(LABEL_MODEL_VERSION) for p in pods if not p.metadata.deletion_timestamp} \
        == {GOOD}
    print(f"[figure] plain Deployment {w.name}: {approval.state.stage} — {approval.state.verification}")


def test_the_staging_soak_query_reads_how_long_a_version_served_within_slo(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet) -> None:
    from agent.change.preflight import staging_soak, staging_soak_queries
    from tests.integration.promql import query_range

    w = rfleet.workload(WORKLOAD)
    ro = _rollout(radmin, w.namespace)
    version = ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION]
    pods = client.CoreV1Api(radmin).list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={WORKLOAD}")
    serving = {(p.metadata.labels or {}).get(LABEL_MODEL_VERSION) for p in pods.items}
    stable = next(v for v in serving if v)  # after the tests above: the promoted version, the abort undone
    ttft_q, err_q = staging_soak_queries(w.namespace, WORKLOAD, stable, window="1m")
    prom = rsandbox["endpoints"]["prometheus"]
    end = time.time()
    start = end - 120

    def series(promql: str) -> dict[float, float]:
        res = query_range(prom, promql, start, end, 10)
        assert res, f"no data for {promql}"
        return {float(t): float(v) for t, v in res[0]["values"]}

    ttft, err = series(ttft_q), series(err_q)
    samples = [(t, ttft.get(t), err.get(t)) for t in sorted(ttft)]
    c = staging_soak(samples, ttft_p95_max_s=w.slo.ttft_p95_s, error_share_max=w.slo.error_rate,
                     required_s=60, now=end, step_s=10)
    assert c.ok, (c, version, serving)
    # The same query for a version nobody runs has no data, and no data is never soak.
    ttft_none, _ = staging_soak_queries(w.namespace, WORKLOAD, "1999.01.0", window="1m")
    assert not query_range(prom, ttft_none, start, end, 10)
    assert not staging_soak([], ttft_p95_max_s=1, error_share_max=1, required_s=60, now=end, step_s=10).ok


def test_a_slow_preflight_does_not_hold_the_request_and_get_reports_its_end(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rconfig: Path, rstate: Path, tmp_path: Path) -> None:
    """The API server answers the agent's reads late: POST answers 202 with a request id at the bound, the
    preflight goes on, and GET reports the refusal, the unknown target or the change request it came to."""
    from urllib.parse import urlparse

    from agent.entry.commands.common import sandbox_overrides
    from tests.slow_proxy import slow

    kc = yaml.safe_load(Path(rsandbox["kubeconfigs"]["reader"]).read_text())
    api = urlparse(kc["clusters"][0]["cluster"]["server"])
    over = sandbox_overrides(rsandbox)
    good = {"authorization": f"Bearer {PIPELINE_TOKEN}"}
    generation = _rollout(radmin, "llm-prod")["metadata"]["generation"]
    with slow(api.hostname or "127.0.0.1", api.port or 443, delay_s=1.5) as proxy:
        kc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        (tmp_path / "reader.kubeconfig").write_text(yaml.safe_dump(kc))
        settings = settings_for(rconfig, rsandbox, state_dir=str(rstate), kubernetes={
            **over["kubernetes"], "reader_kubeconfig": str(tmp_path / "reader.kubeconfig")}, server={
            **over.get("server", {}), "pipeline_tokens": f"model-assist={PIPELINE_TOKEN}", "deploy_wait_s": 1})
        app = build_app(settings)
        asgi, _ = build_server(app)

        async def calls() -> list[list[httpx.Response]]:
            transport = httpx.ASGITransport(app=asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://opsagent") as http:
                out = []
                for body in ({"target": f"llm-prod/{WORKLOAD}", "version": "2025.10.5",
                              "model": "llama-3.1-70b-instruct"},
                             {"target": "llm-prod/no-such-model", "version": "2025.10.5"},
                             {"target": f"llm-prod/{WORKLOAD}", "version": "2025.10.5"}):
                    seen = [await http.post("/deployments", json=body, headers=good)]
                    url = seen[0].json().get("url", "")
                    seen.append(await http.get(url, headers=good))  # right away: still in its preflight
                    seen.append(await http.get(url, headers={"authorization": "Bearer wrong"}))
                    for _ in range(120):
                        if seen[-1].json().get("status") not in ("preflight", None):
                            break
                        await asyncio.sleep(0.5)
                        seen.append(await http.get(url, headers=good))
                    out.append(seen)
                return out

        before = _stored(rsandbox, rconfig, rstate)
        try:
            refused, unknown, proposed = asyncio.run(calls())
        finally:
            app.close()
    for seen in (refused, unknown, proposed):
        assert seen[0].status_code == 202 and seen[0].json()["status"] == "preflight", seen[0].text
        assert seen[0].json()["id"].startswith("req-") and seen[1].json()["status"] == "preflight"
        assert seen[2].status_code == 401, "a request's progress is not shown without a pipeline token"
    assert refused[-1].status_code == 422 and refused[-1].json()["status"] == "refused", refused[-1].text
    assert any("does not fit 24 GiB GPUs" in r for r in refused[-1].json()["reasons"]), refused[-1].json()
    assert unknown[-1].status_code == 404 and "no Rollout or Deployment llm-prod/no-such-model" in \
        unknown[-1].json()["error"], unknown[-1].text
    # Once proposed, the request's id reads as the change's own status (a pipeline polls one URL to the end).
    assert proposed[-1].status_code == 200 and proposed[-1].json()["status"] == "pending_approval", proposed[-1].text
    change_id = proposed[-1].json()["id"]
    assert change_id.startswith("chg-") and proposed[-1].json()["url"] == f"/deployments/{change_id}"
    assert proposed[-1].json()["request"] == proposed[0].json()["id"]
    assert proposed[-1].json()["approvals"] == {"have": 0, "required": 2, "roles": ["ml-platform", "oncall"]}
    changes, _ = _stored(rsandbox, rconfig, rstate)
    assert changes == before[0] + 1, "only the proposal is a change request (not the refusal, not the 404)"
    refusals = [e for e in _audit(rsandbox, rconfig, rstate, "preflight (ci)") if "2025.10.5" in json.dumps(e)
                or "llama-3.1-70b" in e["reason"]]
    assert refusals, "the refusal is audited"
    assert _rollout(radmin, "llm-prod")["metadata"]["generation"] == generation, "nothing was written"


@contextlib.contextmanager
def _bot(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, channel: str,
         **overrides: Any) -> Iterator[tuple[App, Any, Any]]:
    """The real Bolt app on `serve`'s HTTP app, Slack's Web API a stand-in: (app, stand-in, signed client)."""
    from tests.serving import serve
    from tests.slack_standin import SlackClientSim, SlackStandIn

    secret = f"{channel}-signing-secret"
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        app = build_app(settings_for(rconfig, rsandbox, state_dir=str(rstate), slack={
            "enabled": True, "bot_token": "xoxb-test", "signing_secret": secret, "channel": channel,
            "api_url": f"{api_url}/api/"}, **overrides))
        try:
            asgi, bot = build_server(app)
            assert bot is not None
            with serve(asgi) as url:
                yield app, api, SlackClientSim(url, secret, api)
        finally:
            app.close()


def test_deploy_asked_in_an_incident_thread_and_an_executor_that_does_not_answer(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path,
        tmp_path: Path) -> None:
    import datetime as dt

    from evals import alerts
    from tests.slack_standin import ONCALL, buttons, render

    channel = "C0THREADS"
    generation = _rollout(radmin, "llm-prod")["metadata"]["generation"]
    w = rfleet.workload(WORKLOAD)
    body = alerts.build({"alertname": "ModelServingTTFTHigh", "namespace": w.namespace, "model_name": w.model},
                        omit=[], now=dt.datetime.now(dt.UTC), cluster=str(rsandbox.get("cluster") or "sandbox"),
                        prometheus_url=rsandbox["endpoints"]["prometheus"], alertmanager_url="")
    token = Path(rsandbox["webhook_token_file"]).read_text().strip()
    with _bot(rsandbox, rconfig, rstate, channel) as (app, api, sim):
        r = httpx.post(f"{sim.bot_url}/alertmanager", json=body, headers={"authorization": f"Bearer {token}"},
                       timeout=30)
        assert r.status_code == 200, r.text
        top = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("channel") == channel
                                and not c.args.get("thread_ts")], what="the incident's message", timeout=120)[0]
        thread = top.args["_ts"]
        sim.event({"type": "message", "user": "U0DANA001", "channel": channel, "thread_ts": thread,
                   "ts": f"{time.time():.6f}", "text": f"opsagent deploy 2025.10.6 to llm-prod/{WORKLOAD}"})
        reply = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == thread
                                  and "Change request `chg-" in str(c.args.get("text"))],
                         what="the deployment's answer in the thread", timeout=120)[0]
        change_id = str(reply.args["text"]).split("`")[1]
        block = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == thread
                                  and buttons(c.args) and change_id in render(c.args)],
                         what="the change block in the thread")[0]
    assert "needs 2 approval(s)" in reply.args["text"] and "2025.10.6" in reply.args["text"], reply.args["text"]
    assert ("change_approve", change_id) in buttons(block.args)
    app = _app(rsandbox, rconfig, rstate)
    try:
        ch = app.ledger.get(change_id)
    finally:
        app.close()
    assert ch is not None and ch.requester == "user:U0DANA001" and ch.status == ChangeStatus.PENDING_APPROVAL
    assert ch.spec.params["labels"] == {"model-version": "2025.10.6"}
    assert _rollout(radmin, "llm-prod")["metadata"]["generation"] == generation, "nothing written from a thread"

    # The executor process is down (its socket answers nobody): each Slack path says so in words.
    down = {"executor": {"mode": "socket", "socket": str(tmp_path / "executor.sock")}}
    with _bot(rsandbox, rconfig, rstate, channel, **down) as (app, api, sim):
        assert sim.command("U0DANA001", f"deploy llm-prod/{WORKLOAD} --version 2025.10.7",
                           channel=channel).status_code == 200
        assert sim.command("U0DANA001", f"rollout abort llm-prod/{WORKLOAD}", channel=channel).status_code == 200
        said = api.wait(lambda: len(api.responses) >= 2 and api.responses, what="two answers", timeout=120)
        assert sim.click(ONCALL, "change_approve", change_id, channel, block.args["_ts"], thread).status_code == 200
        note = api.wait(lambda: api.of("chat.postEphemeral"), what="the approver's private note")[0]
    texts = [r["text"] for r in sorted(said, key=lambda r: int(r["key"].removeprefix("cmd")))]
    assert "Deployment of `llm-prod/assist-mini` not proposed: the executor is unavailable" in texts[0], texts[0]
    assert "No abort rollout proposed" in texts[1] and "the executor is unavailable" in texts[1], texts[1]
    assert all("Nothing was executed" in t and "opsagent executor serve" in t for t in texts), texts
    assert f"Your approve of `{change_id}` was not recorded: the executor is unavailable" in note.args["text"]
    app = _app(rsandbox, rconfig, rstate)
    try:
        assert not [a for a in app.ledger.approvals(change_id) if a.decision == "approve"], "no approval recorded"
    finally:
        app.close()
    assert _rollout(radmin, "llm-prod")["metadata"]["generation"] == generation


def _aborted_events(api: client.ApiClient, ns: str, since: float) -> list[Any]:
    """The Argo Rollouts controller's RolloutAborted events on the workload's Rollout newer than `since`."""
    events = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.kind=Rollout,involvedObject.name={WORKLOAD}").items
    return [e for e in events if e.reason == "RolloutAborted"
            and (e.last_timestamp or e.event_time or e.metadata.creation_timestamp).timestamp() >= since - 1]


def _story(rsandbox: dict[str, Any], rconfig: Path, rstate: Path, abort_id: str, deploy_id: str, api: Any) -> str:
    """What the ledger, the audit, the Rollout, its analysis runs and the Slack thread say: a failure's why."""
    admin = api_client(Path(rsandbox["kubeconfigs"]["admin"]))
    custom = client.CustomObjectsApi(admin)
    app = _app(rsandbox, rconfig, rstate)
    try:
        lines = []
        for cid in (abort_id, deploy_id):
            c = app.ledger.get(cid)
            lines.append(f"{cid}: {c.status.value} {c.spec.action.value} {c.result}" if c else f"{cid}: missing")
        lines += [f"audit {e['kind']} {e['action']} -> {e['decision']}: {e['reason'][:200]}"
                  for e in app.audit.events() if abort_id in e["action"] or deploy_id in e["action"]][-20:]
        ro = custom.get_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, "llm-prod", "rollouts", WORKLOAD)
        writers = [(m.get("manager"), m.get("time"), m.get("subresource")) for m in ro["metadata"]["managedFields"]]
        lines.append(f"rollout generation {ro['metadata']['generation']}, written by {writers}")
        for r in custom.list_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, "llm-prod",
                                                      "analysisruns")["items"]:
            results = [(m.get("name"), m.get("phase"), [x.get("value") for x in m.get("measurements") or []])
                       for m in (r.get("status") or {}).get("metricResults") or []]
            lines.append(f"analysisrun {r['metadata']['name']} {(r.get('status') or {}).get('phase')}: {results}")
        lines += [f"slack {c.method}: {str(c.args.get('text'))[:200]}" for c in api.calls[-15:]]
        return "\n".join(lines)
    finally:
        app.close()
        admin.close()


def test_abort_from_a_canary_progress_message_is_a_change_request_only_an_approval_carries_out(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet, rconfig: Path, rstate: Path) -> None:
    from tests.slack_standin import ONCALL, PLATFORM, buttons, render

    channel, ns = "C0CANARY", rfleet.workload(WORKLOAD).namespace
    stable_version = _rollout(radmin, ns)["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION]
    version = GOOD if stable_version != GOOD else "2025.05.2"  # a good build: only a person stops it
    # A manual gate after the first step (a pause without a duration, as teams put before wider exposure):
    # the canary waits at 10 % for a person, so the clicks below race nothing (a good build's canary can
    # otherwise finish on its own before the abort is approved on a loaded machine).
    custom = client.CustomObjectsApi(radmin)
    steps = _rollout(radmin, ns)["spec"]["strategy"]["canary"]["steps"]

    def set_steps(value: list[dict[str, Any]]) -> None:
        custom.patch_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, ns, "rollouts", WORKLOAD,
                                              {"spec": {"strategy": {"canary": {"steps": value}}}})

    set_steps([steps[0], {"pause": {}}, *steps[1:]])
    started = time.time()
    try:
        stable_before = str((_rollout(radmin, ns).get("status") or {}).get("stableRS") or "")
        with _bot(rsandbox, rconfig, rstate, channel) as (app, api, sim):
            assert sim.command("U0DANA001", f"deploy {ns}/{WORKLOAD} --version {version}",
                               channel=channel).status_code == 200
            block = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("channel") == channel
                                      and not c.args.get("thread_ts") and buttons(c.args)],
                             what="the deployment's change block", timeout=120)[0]
            deploy_id = buttons(block.args)[0][1]
            for who in (ONCALL, PLATFORM):
                assert sim.click(who, "change_approve", deploy_id, channel, block.args["_ts"]).status_code == 200
            abort_button = ("rollout_abort", f"{ns}/{WORKLOAD}")
            progress = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") ==
                                         block.args["_ts"] and abort_button in buttons(c.args)],
                                what="a progress message with Abort", timeout=120)[0]
            assert ("rollout_promote", f"{ns}/{WORKLOAD}") in buttons(progress.args)
            # Someone who is nobody in the policy clicks Abort: a change request, nothing more.
            assert sim.click("U0MALLORY", "rollout_abort", f"{ns}/{WORKLOAD}", channel, progress.args["_ts"],
                             block.args["_ts"]).status_code == 200
            note = api.wait(lambda: [c for c in api.of("chat.postEphemeral") if c.args.get("user") == "U0MALLORY"],
                            what="the clicker's note")[0]
            abort_id = note.args["text"].split("`")[1]
            assert "abort rollout" in note.args["text"] and "pending approval" in note.args["text"], \
                f'{note.args["text"]}\n{_story(rsandbox, rconfig, rstate, abort_id, deploy_id, api)}'

            abort_block = api.wait(lambda: [c for c in api.of("chat.postMessage") if abort_id in render(c.args)
                                            and ("change_approve", abort_id) in buttons(c.args)],
                                   what="the abort's change block")[0]
            assert abort_block.args.get("thread_ts") == block.args["_ts"], "it goes in the deployment's thread"
            time.sleep(3)
            assert not (_rollout(radmin, ns).get("status") or {}).get("abort"), "a click alone aborts nothing"
            # The clicker cannot approve it either; an on-call approval carries it out.
            assert sim.click("U0MALLORY", "change_approve", abort_id, channel, abort_block.args["_ts"],
                             block.args["_ts"]).status_code == 200
            refused = api.wait(lambda: [c for c in api.of("chat.postEphemeral") if c.args.get("user") == "U0MALLORY"
                                        and "refused" in str(c.args.get("text"))], what="the refusal")[0]
            assert abort_id in refused.args["text"]
            assert not (_rollout(radmin, ns).get("status") or {}).get("abort")
            early = _aborted_events(radmin, ns, since=started)
            assert not early, f"nothing aborted before an approval: {[(e.message, e.last_timestamp) for e in early]}" \
                              f"{_story(rsandbox, rconfig, rstate, abort_id, deploy_id, api)}"
            approved_at = time.time()
            assert sim.click(ONCALL, "change_approve", abort_id, channel, abort_block.args["_ts"],
                             block.args["_ts"]).status_code == 200
            # The controller's own record that it aborted: `status.abort` lasts only until the agent puts the
            # stable template back (a second or two), its RolloutAborted event stays.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not _aborted_events(radmin, ns, since=approved_at):
                time.sleep(1)
            assert _aborted_events(radmin, ns, since=approved_at), \
                f"the approved abort aborted the canary: {_story(rsandbox, rconfig, rstate, abort_id, deploy_id, api)}"
            api.wait(lambda: "*rolled back*" in "\n".join(render(c.args) for c in api.of("chat.postMessage")
                                                          if c.args.get("thread_ts") == block.args["_ts"]),
                     what="the deployment's end in its thread", timeout=240)
        app = _app(rsandbox, rconfig, rstate)
        try:
            abort, deploy = app.ledger.get(abort_id), app.ledger.get(deploy_id)
            assert abort is not None and abort.requester == "slack:U0MALLORY" and abort.status == ChangeStatus.VERIFIED
            assert deploy is not None and deploy.status == ChangeStatus.ROLLED_BACK, deploy.status if deploy else None
            executed = [e for e in app.audit.events() if e["kind"] == "execution" and abort_id in e["action"]]
            assert executed, "the abort's execution is audited"
        finally:
            app.close()
        ro = _rollout(radmin, ns)
        assert ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] == stable_version
        assert (ro.get("status") or {}).get("stableRS") == stable_before
    finally:
        set_steps(steps)
