"""GPU-class moves from the cost report, on a sandbox of their own running the real Argo Rollouts controller.

`llm-prod/notes-assist` (deploy/sandbox/fleet-rollouts.yaml) is an 8B model on two H100s it does not need,
`llm-prod/digest-assist` a 7B model on two whole A100s it uses a third of:

- moved by hand to L4s with the same two replicas, the canary lands on an L4 node (the real scheduler),
  its TTFT breaks the SLO there and the project's AnalysisTemplate aborts it; stable stays on the H100s;
- the cost report posted to Slack recommends A100s; a signed click on its **Create change request**
  button (through the real Bolt app) opens a deployment of the same version with the new node selector,
  checked on the A100 pool; two approvals run it as a canary on the A100 nodes, promoted to 100 %; the
  next report shows the workload on A100s at their price and no longer recommends the move;
- the report recommends one 3g.20gb MIG slice per replica for digest-assist; its button opens a deployment
  of the same version asking for `nvidia.com/mig-3g.20gb: 1` at TP 1, checked against the free slices of
  the MIG pool; the canary lands on the MIG nodes (the real scheduler, by the slice resource), is promoted,
  and the next report prices the workload per slice.

Slack's Web API is the local stand-in (tests/slack_standin.py); everything else is real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from slack_sdk.web.async_client import AsyncWebClient
from typer.testing import CliRunner

from agent.app import build_app
from agent.change.models import ChangeSpec, ChangeStage, ChangeStatus
from agent.entry.cli import app as cli
from agent.entry.commands.common import settings_for
from agent.entry.slack.reports import CostReportPoster
from agent.entry.slack.service import build_server
from agent.rightsize.changes import INSTANCE_TYPE_LABEL, spec_from_button
from agent.rightsize.report import CREATE_ACTION_ID
from agent.rightsize.schedule import CronSchedule
from deploy.sandbox import rollouts
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import LABEL_APP
from deploy.sandbox.fleet import LABEL_POOL as POOL
from deploy.sandbox.sandbox import SandboxSettings
from tests.integration.conftest import PORT_BASE as SANDBOX_PORT_BASE
from tests.integration.conftest import sandbox_lifetime
from tests.integration.promql import query
from tests.integration.test_rollouts import Approval
from tests.serving import serve
from tests.slack_standin import SlackClientSim, SlackStandIn

pytestmark = [pytest.mark.sandbox]

PORT_BASE = int(os.environ.get("OPSAGENT_TEST_MOVES_PORT_BASE", str(SANDBOX_PORT_BASE + 1500)))
NS, WORKLOAD = "llm-prod", "notes-assist"
H100, A100, L4 = "p5.48xlarge", "p4d.24xlarge", "g6.2xlarge"
ROOT = Path(__file__).parents[2]
SECRET, CHANNEL = "moves-test-signing-secret", "C0COSTREPORT"
CLICKER = "U0DANA001"  # dana on Slack: not an approver, so bob and alice can approve what she asks for


@pytest.fixture(scope="module")
def msandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = SandboxSettings(dir=tmp_path_factory.mktemp("moves-sandbox"), port_base=PORT_BASE, rollouts=True,
                               history_days=0.5, webhook_url=f"http://127.0.0.1:{PORT_BASE + 99}/alertmanager")
    yield from sandbox_lifetime(settings, tmp_path_factory, "moves-sandbox")


@pytest.fixture(scope="module")
def madmin(msandbox: dict[str, Any]) -> Iterator[client.ApiClient]:
    api = api_client(Path(msandbox["kubeconfigs"]["admin"]))
    yield api
    api.close()


@pytest.fixture(scope="module")
def mconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default policy with the deploy window lifted (tests run at any hour)."""
    d = tmp_path_factory.mktemp("moves-config")
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "deploy":
            rule.get("conditions", {}).pop("windows", None)
    (d / "policies").mkdir()
    (d / "policies" / "default.yaml").write_text(yaml.safe_dump(doc))
    (d / "settings.yaml").write_text(yaml.safe_dump({"policies_dir": str(d / "policies")}))
    return d / "settings.yaml"


@pytest.fixture(scope="module")
def mstate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("moves-state")


def _cli(sb: dict[str, Any], config: Path, state: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--sandbox", "--sandbox-dir", str(sb["_sandbox"].s.dir),
                                    "--state-dir", str(state), "--config", str(config)])


def _rollout(api: client.ApiClient, name: str = WORKLOAD) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        rollouts.GROUP, rollouts.VERSION, NS, "rollouts", name)
    return obj


def _pods_by_class(api: client.ApiClient, name: str = WORKLOAD,
                   label: str = INSTANCE_TYPE_LABEL) -> dict[str, set[str]]:
    """Live pods of the workload: pod-template hash → the `label` (instance type) of the nodes they run on."""
    core = client.CoreV1Api(api)
    types = {n.metadata.name: (n.metadata.labels or {}).get(label, "") for n in core.list_node().items}
    out: dict[str, set[str]] = {}
    for p in core.list_namespaced_pod(NS, label_selector=f"{LABEL_APP}={name}").items:
        if p.metadata.deletion_timestamp or not p.spec.node_name:
            continue
        out.setdefault((p.metadata.labels or {}).get("rollouts-pod-template-hash", ""), set()).add(
            types.get(p.spec.node_name, "?"))
    return out


def _ttft_p95_by_class(prometheus: str) -> dict[str, float]:
    """TTFT p95 of the workload's pods per node instance type, as a person would check it in Prometheus."""
    q = ('histogram_quantile(0.95, sum by (le, label_node_kubernetes_io_instance_type) ('
         f'rate(vllm:time_to_first_token_seconds_bucket{{namespace="{NS}", pod=~"{WORKLOAD}-.*"}}[1m]) '
         '* on (namespace, pod) group_left(node) max by (namespace, pod, node) (kube_pod_info) '
         '* on (node) group_left(label_node_kubernetes_io_instance_type) '
         'max by (node, label_node_kubernetes_io_instance_type) (kube_node_labels)))')
    return {r["metric"].get("label_node_kubernetes_io_instance_type", ""): float(r["value"][1])
            for r in query(prometheus, q) if not math.isnan(float(r["value"][1]))}


def _approve(sb: dict[str, Any], config: Path, state: Path, change_id: str) -> Approval:
    out = _cli(sb, config, state, "changes", "approve", change_id, "--as", "bob")
    assert out.exit_code == 0 and "awaiting_approval" in out.output, out.output  # one of two
    second = Approval(sb, config, state, change_id)
    second.start()
    while not second.started_at:
        time.sleep(0.1)
    return second


def _recommendation(sb: dict[str, Any], config: Path, state: Path, name: str = WORKLOAD) -> dict[str, Any]:
    import json

    out = _cli(sb, config, state, "rightsize", "--window", "1d", "--format", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout[out.stdout.index("{"):])
    rec: dict[str, Any] = next(r for r in doc["recommendations"] if r["name"] == name)
    return rec


def _click_create(sb: dict[str, Any], config: Path, state: Path, name: str) -> tuple[str, ChangeSpec, str]:
    """Post the cost report to Slack and click `name`'s Create change request button, signed, through Bolt.

    Returns the report's section for `name`, the spec its button carries, and the change id the click opened.
    """
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = settings_for(config, sb, state_dir=str(state), slack={
            "enabled": True, "bot_token": "xoxb-test", "signing_secret": SECRET, "channel": CHANNEL,
            "api_url": f"{api_url}/api/"}, rightsize={"window": "1d"})
        app = build_app(settings)
        try:
            poster = CostReportPoster(app, AsyncWebClient(token="xoxb-test", base_url=f"{api_url}/api/"), CHANNEL,
                                      CronSchedule("* * * * *"))
            try:
                assert asyncio.run(poster.post_due(dt.datetime.now(dt.UTC))) is not None
            finally:
                poster.leases.close()
                poster.posts.close()
            report = api.wait(lambda: api.of("chat.postMessage"), what="the cost report")[0]
            section = next(b for b in report.args["blocks"] if name in str(b.get("text", {}).get("text", "")))
            value = section["accessory"]["value"]
            assert section["accessory"]["action_id"] == CREATE_ACTION_ID
            _, spec = spec_from_button(value)
            asgi, bot = build_server(app)
            assert bot is not None
            with serve(asgi) as url:
                sim = SlackClientSim(url, SECRET, api)
                assert sim.click(CLICKER, CREATE_ACTION_ID, value, CHANNEL, report.args["_ts"]).status_code == 200
                note = api.wait(lambda: api.of("chat.postEphemeral"), timeout=120, what="the click's answer")[0]
        finally:
            app.close()
    text = str(note.args.get("text"))
    assert "Opened change request `chg-" in text and "deploy" in text, text
    return str(section["text"]["text"]), spec, text.split("`")[1]


def test_a_move_to_a_class_where_the_model_is_too_slow_is_aborted_by_analysis_and_stable_stays(
        msandbox: dict[str, Any], madmin: client.ApiClient, mconfig: Path, mstate: Path) -> None:
    import json

    before = _rollout(madmin)
    stable = str((before.get("status") or {}).get("stableRS") or "")
    assert stable and _pods_by_class(madmin) == {stable: {H100}}
    out = _cli(msandbox, mconfig, mstate, "deploy", f"{NS}/{WORKLOAD}", "--node-selector",
               f"{INSTANCE_TYPE_LABEL}={L4}", "--as", "dana", "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout[out.stdout.index("{"):])
    assert body["status"] == "pending_approval", body
    capacity = next(c for c in body["preflight"] if c["name"] == "GPU capacity")
    assert capacity["ok"] and "all replicas of the move" in capacity["summary"], capacity
    approval = _approve(msandbox, mconfig, mstate, str(body["change_id"]))
    canary_classes: set[str] = set()
    deadline = time.monotonic() + 300
    # The executor puts the template back as soon as the watch sees the abort: follow until the watch ends.
    while approval.is_alive() and time.monotonic() < deadline:
        st = _rollout(madmin).get("status") or {}
        for h, types in _pods_by_class(madmin).items():
            if h != stable:
                canary_classes |= types
        assert st.get("stableRS") == stable, f"the stable ReplicaSet changed: {st}"
        time.sleep(0.5)
    assert canary_classes == {L4}, f"the canary ran on {canary_classes}, not on the L4 nodes"
    approval.join(180)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage in (ChangeStage.ROLLED_BACK, ChangeStage.REGRESSION), approval.state.stage
    verdict = str(approval.state.verification)
    assert "aborted by analysis" in verdict and "ttft" in verdict.lower(), verdict
    # and says how the new class did against the old one, from Prometheus
    assert f"canary on {L4}: TTFT p95" in verdict and f"stable on {H100}: TTFT p95" in verdict, verdict
    end = time.monotonic() + 120
    while _pods_by_class(madmin) != {stable: {H100}} and time.monotonic() < end:
        time.sleep(1)
    assert _pods_by_class(madmin) == {stable: {H100}}, "after the abort every pod is stable, on the H100s"
    assert _rollout(madmin)["spec"]["template"]["spec"]["nodeSelector"] == \
        before["spec"]["template"]["spec"]["nodeSelector"], "the template is put back"
    print(f"\n[figure] move to L4 aborted: {verdict}")


def test_the_reports_button_moves_the_model_as_a_canary_on_the_new_class_and_the_next_report_shows_the_saving(
        msandbox: dict[str, Any], madmin: client.ApiClient, mconfig: Path, mstate: Path) -> None:
    prometheus = msandbox["endpoints"]["prometheus"]
    stable = str((_rollout(madmin).get("status") or {}).get("stableRS") or "")
    section, spec, change_id = _click_create(msandbox, mconfig, mstate, WORKLOAD)
    assert "NVIDIA-A100-SXM4-40GB" in section, section
    assert spec.params["node_selector"] == {INSTANCE_TYPE_LABEL: A100}
    app = build_app(settings_for(mconfig, msandbox, state_dir=str(mstate)))
    try:
        ch = app.ledger.get(change_id)
    finally:
        app.close()
    assert ch is not None and ch.status == ChangeStatus.PENDING_APPROVAL and ch.requester == f"slack:{CLICKER}"
    assert ch.spec.target.kind == "Rollout" and ch.spec.params["node_selector"] == {INSTANCE_TYPE_LABEL: A100}
    assert "labels" not in ch.spec.params and "image" not in ch.spec.params, "the same version moves"
    assert "GPU capacity" in ch.reason and "all replicas of the move" in ch.reason, ch.reason
    assert ch.cost_delta_per_month is not None and ch.cost_delta_per_month < 0
    assert _rollout(madmin)["status"]["stableRS"] == stable, "nothing is written before the approvals"

    approval = _approve(msandbox, mconfig, mstate, change_id)
    t0 = approval.started_at
    canary_classes: set[str] = set()
    ttft: dict[str, float] = {}
    deadline = time.monotonic() + 420
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _rollout(madmin)
        st = ro.get("status") or {}
        for h, types in _pods_by_class(madmin).items():
            if h != stable:
                canary_classes |= types
        if len(canary_classes) and not ttft:
            got = _ttft_p95_by_class(prometheus)
            if H100 in got and A100 in got:
                ttft = got
        if rollouts.phase(ro) == "Healthy" and st.get("stableRS") and st["stableRS"] != stable:
            break
        assert not st.get("abort"), f"the move was aborted: {st.get('message')}"
        if not approval.is_alive():  # the watch has its verdict: what the Rollout says now is the outcome
            ro = _rollout(madmin)
            break
        time.sleep(0.5)
    elapsed = time.time() - t0
    assert rollouts.phase(ro) == "Healthy" and ro["status"]["stableRS"] != stable, \
        f"not promoted: {ro.get('status')}; the agent: {approval.state or approval.error}"
    promoted_at = time.time()
    assert canary_classes == {A100}, f"the canary ran on {canary_classes}"
    assert set().union(*_pods_by_class(madmin).values()) == {A100}, "after promotion every pod is on an A100 node"
    approval.join(120)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage == ChangeStage.VERIFIED, (approval.state.stage, approval.state.verification)
    assert f"canary on {A100}: TTFT p95" in str(approval.state.verification), approval.state.verification
    print(f"\n[figure] GPU-class move H100 → A100 from the report's button: approval → 100 % in {elapsed:.1f} s; "
          f"TTFT p95 per class during the canary: {ttft}")

    # The next report: its history steps are aligned to 5 minutes; read it once a step after the promotion.
    time.sleep(max(0.0, math.ceil(promoted_at / 300) * 300 + 20 - time.time()))
    rec = _recommendation(msandbox, mconfig, mstate)
    per_gpu = 21.96 / 8  # p4d.24xlarge, tools/rightsize/price-catalog.yaml
    assert rec["current"]["gpu_product"] == "NVIDIA-A100-SXM4-40GB", rec["current"]
    assert rec["monthly_cost_current"] == pytest.approx(2 * per_gpu * 730, abs=1), rec
    assert rec["recommended"] == rec["current"] and "keep" in rec["reason"], \
        f"the next report recommends no further move: {rec['reason']}"
    print(f"[figure] the next report: {rec['reason']}; ${rec['monthly_cost_current']:,.0f}/month "
          "(was $10,045 on H100s)")


def test_a_plain_deployment_moves_by_a_rolling_update_that_is_verified_on_the_new_class(
        msandbox: dict[str, Any], madmin: client.ApiClient, mconfig: Path, mstate: Path) -> None:
    import json

    ns, name = "llm-prod", "chat-lite"  # a Deployment: two replicas of one L4 each
    apps, core = client.AppsV1Api(madmin), client.CoreV1Api(madmin)
    before = apps.read_namespaced_deployment(name, ns)
    out = _cli(msandbox, mconfig, mstate, "deploy", f"{ns}/{name}", "--node-selector",
               f"{INSTANCE_TYPE_LABEL}={A100}", "--as", "dana", "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout[out.stdout.index("{"):])
    assert body["kind"] == "Deployment" and "(rolling)" in body["summary"] and "GPU-class move" in body["summary"]
    capacity = next(c for c in body["preflight"] if c["name"] == "GPU capacity")
    assert capacity["ok"] and "all replicas of the move" in capacity["summary"], capacity
    approval = _approve(msandbox, mconfig, mstate, str(body["change_id"]))
    approval.join(600)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage == ChangeStage.VERIFIED, (approval.state.stage, approval.state.verification)
    dep = apps.read_namespaced_deployment(name, ns)
    assert dep.spec.template.spec.node_selector == {INSTANCE_TYPE_LABEL: A100}
    assert dep.spec.template.metadata.labels == before.spec.template.metadata.labels, "the same version"
    types = {n.metadata.name: (n.metadata.labels or {}).get(INSTANCE_TYPE_LABEL) for n in core.list_node().items}
    pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={name}").items
            if not p.metadata.deletion_timestamp]
    assert len(pods) == 2 and {types.get(p.spec.node_name) for p in pods} == {A100}, \
        [(p.metadata.name, p.spec.node_name) for p in pods]
    print(f"\n[figure] plain Deployment {name} moved L4 → A100: {approval.state.verification}")


def test_a_mig_move_from_the_report_runs_as_a_canary_on_the_mig_pool_and_the_next_report_prices_the_slices(
        msandbox: dict[str, Any], madmin: client.ApiClient, mconfig: Path, mstate: Path) -> None:
    name, profile, resource = "digest-assist", "3g.20gb", "nvidia.com/mig-3g.20gb"
    per_gpu = 21.96 / 8  # p4d.24xlarge, tools/rightsize/price-catalog.yaml
    before = _recommendation(msandbox, mconfig, mstate, name)
    assert before["current"]["mig_profile"] is None and before["recommended"]["mig_profile"] == profile, \
        json.dumps(before, indent=1, default=str)[:6000]  # the whole recommendation: its why and its arithmetic
    assert before["monthly_cost_current"] == pytest.approx(2 * per_gpu * 730, abs=1), before
    stable = str((_rollout(madmin, name).get("status") or {}).get("stableRS") or "")
    assert stable and _pods_by_class(madmin, name, POOL) == {stable: {"a100"}}

    section, spec, change_id = _click_create(msandbox, mconfig, mstate, name)
    assert f"MIG {profile}" in section, section
    assert spec.params["mig_profile"] == profile and spec.params["node_selector"] == {INSTANCE_TYPE_LABEL: A100}
    app = build_app(settings_for(mconfig, msandbox, state_dir=str(mstate)))
    try:
        ch = app.ledger.get(change_id)
    finally:
        app.close()
    assert ch is not None and ch.status == ChangeStatus.PENDING_APPROVAL and ch.spec.target.kind == "Rollout"
    assert ch.spec.params["mig_profile"] == profile and "gpus" not in ch.spec.params
    assert "labels" not in ch.spec.params and "image" not in ch.spec.params, "the same version moves"
    assert "args" not in ch.spec.params, "already --tensor-parallel-size 1: one slice needs no other args"
    # The preflight's numbers, in the request a person approves: free slices of the profile, the slice's memory.
    assert f"free MIG {profile} slices" in ch.reason and "all replicas of the move" in ch.reason, ch.reason
    assert f"19.5 GiB per GPU (MIG {profile}: node" in ch.reason, ch.reason  # GPU feature discovery's label
    assert f"1 MIG {profile} slice (3/7 GPU)" in ch.reason, ch.reason
    assert ch.cost_delta_per_month == pytest.approx(2 * (3 / 7 - 1) * per_gpu * 730, abs=1), ch.cost_delta_per_month
    assert _rollout(madmin, name)["status"]["stableRS"] == stable, "nothing is written before the approvals"

    approval = _approve(msandbox, mconfig, mstate, change_id)
    t0 = approval.started_at
    canary_pools: set[str] = set()
    deadline = time.monotonic() + 420
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _rollout(madmin, name)
        st = ro.get("status") or {}
        for h, pools in _pods_by_class(madmin, name, POOL).items():
            if h != stable:
                canary_pools |= pools
        if rollouts.phase(ro) == "Healthy" and st.get("stableRS") and st["stableRS"] != stable:
            break
        assert not st.get("abort"), f"the move was aborted: {st.get('message')}"
        if not approval.is_alive():
            ro = _rollout(madmin, name)
            break
        time.sleep(0.5)
    elapsed = time.time() - t0
    assert rollouts.phase(ro) == "Healthy" and ro["status"]["stableRS"] != stable, \
        f"not promoted: {ro.get('status')}; the agent: {approval.state or approval.error}"
    promoted_at = time.time()
    assert canary_pools == {"a100-mig"}, f"the canary ran on {canary_pools}"
    core = client.CoreV1Api(madmin)
    pods = [p for p in core.list_namespaced_pod(NS, label_selector=f"{LABEL_APP}={name}").items
            if not p.metadata.deletion_timestamp]
    assert len(pods) == 2 and _pods_by_class(madmin, name, POOL) == {ro["status"]["stableRS"]: {"a100-mig"}}
    for p in pods:  # scheduled by the real scheduler onto a node that advertises the slice
        limits = p.spec.containers[0].resources.limits
        assert limits.get(resource) == "1" and "nvidia.com/gpu" not in limits, limits
    approval.join(120)
    assert approval.error is None and approval.state is not None, approval.error
    assert approval.state.stage == ChangeStage.VERIFIED, (approval.state.stage, approval.state.verification)
    assert f"canary on {A100} (MIG all-{profile}): TTFT p95" in str(approval.state.verification), \
        approval.state.verification
    print(f"\n[figure] MIG move 2 × A100 → 2 × A100 MIG {profile} from the report's button: approval → 100 % in "
          f"{elapsed:.1f} s; {approval.state.verification}")

    time.sleep(max(0.0, math.ceil(promoted_at / 300) * 300 + 20 - time.time()))
    after = _recommendation(msandbox, mconfig, mstate, name)
    assert after["current"]["mig_profile"] == profile, after["current"]
    assert after["monthly_cost_current"] == pytest.approx(2 * per_gpu * 3 / 7 * 730, abs=1), after
    # The capacity it saw on whole GPUs before the move is scaled to the slice: no cut below what the load needs.
    assert after["recommended"]["replicas"] >= 2, f"the next report would starve the slices: {after['reason']}"
    print(f"[figure] the next report: {after['reason']}; ${after['monthly_cost_current']:,.0f}/month "
          f"(was ${before['monthly_cost_current']:,.0f} on whole A100s)")
