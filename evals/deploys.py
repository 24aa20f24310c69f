"""Deployment scenarios: a pipeline asks for a version over the CI API; the change flow does the rest.

live: the harness asks the way a model's CI pipeline does — `POST /deployments` on the real `serve`
HTTP app with a pipeline token — and polls `GET /deployments/{id}`. A refused preflight ends there.
A change request is approved by the scenario's approvers through `ChangeFlow.decide` (the product's one
door to a decision); the guarded executor writes the template, and the agent's watch follows the Argo
Rollouts canary to its promotion or its abort by analysis. Meanwhile the harness watches the Rollout
itself (weights, the canary's pod-template hash, the stable one) and afterwards reads from Prometheus how
many requests the new version served against the workload's total.

replay: the recorded preflight inputs (target, nodes, pods) go through today's preflight checks and the
recorded policy request through today's policy; both must decide what the live run decided, and the
record is re-scored. Nothing reaches a cluster.

The policy is the default one with the deployment window lifted: the scenarios judge delivery, not the
calendar (the window itself is tested in the policy's table tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s

from agent.app import App, build_app
from agent.change.deploy import DeployRequest, checks, deploy_params
from agent.change.executor.owned import RULE as OWNED_RULE
from agent.change.models import ChangeSpec
from agent.change.rollout_watch import weight_at
from agent.entry.commands.common import sandbox_overrides, settings_for
from agent.entry.slack.service import build_server
from agent.policy.evaluate import evaluate, load_policy
from agent.policy.model import Request
from deploy.sandbox import rollouts
from deploy.sandbox.fleet import Fleet
from evals.record import ChangeOutcome, DeployRun, RunRecord
from evals.schema import DeployStep, Scenario
from tools.rightsize.catalog import PriceCatalog

PIPELINE = "eval-pipeline"
PENDING = ("preflight",)  # the API's status while the preflight still runs
SETTLE_AFTER_S = 12.0  # two scrapes past the outcome, so the counters' last samples are in Prometheus


def deploy_fleet() -> Fleet:
    """The sandbox's fleet with the Rollout-managed workloads (`sandbox up --rollouts`)."""
    return rollouts.merged_fleet(Fleet.load())[0]


def policies_without_window(state: Path, policies_dir: Path) -> Path:
    """A copy of the default policy with the deployment rule's change window lifted."""
    doc = yaml.safe_load((policies_dir / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "deploy":
            rule.get("conditions", {}).pop("windows", None)
    out = state / "policies"
    out.mkdir(parents=True, exist_ok=True)
    (out / "default.yaml").write_text(yaml.safe_dump(doc))
    return out


def deploy_app(status: dict[str, Any], state: Path) -> tuple[App, str]:
    """The agent as `opsagent serve` builds it for the sandbox, with one pipeline token; (app, token)."""
    token = secrets.token_hex(24)
    base = settings_for(None, status, state_dir=str(state))
    policies = policies_without_window(state, Path(base.policies_dir))
    server = {**sandbox_overrides(status).get("server", {}), "pipeline_tokens": f"{PIPELINE}={token}"}
    settings = settings_for(None, status, state_dir=str(state), policies_dir=str(policies), server=server)
    return build_app(settings), token


# ---- what the preflight reads, trimmed to what it uses (replay) ------------------------------------------
def _trim_node(n: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = n.get("metadata") or {}, n.get("spec") or {}, n.get("status") or {}
    return {"metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}},
            "spec": {k: spec[k] for k in ("taints", "unschedulable") if spec.get(k)},
            "status": {"allocatable": status.get("allocatable") or {},
                       "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]}}


def _trim_pod(p: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
    return {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"nodeName": spec.get("nodeName"), "nodeSelector": spec.get("nodeSelector") or {},
                     "tolerations": spec.get("tolerations") or [],
                     "containers": [{"name": c.get("name"), "resources": c.get("resources") or {}}
                                    for c in spec.get("containers") or []]},
            "status": {"phase": status.get("phase")}}


def _trim_target(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    return {"kind": obj.get("kind"), "spec": {k: spec.get(k) for k in ("replicas", "template", "strategy")}}


def preflight_inputs(api: k8s.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """The target, the nodes and the running pods, as the agent's preflight reads them."""
    if kind == "Rollout":
        obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, namespace,
                                                                     "rollouts", name)
    else:
        obj = api.sanitize_for_serialization(k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace))
    core = k8s.CoreV1Api(api)
    nodes = api.sanitize_for_serialization(core.list_node()).get("items", [])
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed")).get("items", [])
    return {"kind": kind, "target": _trim_target(obj), "nodes": [_trim_node(n) for n in nodes],
            "pods": [_trim_pod(p) for p in pods]}


def replay_preflight(request: DeployRequest, inputs: Mapping[str, Any],
                     catalog: PriceCatalog) -> tuple[bool, list[str]]:
    """Today's preflight checks on the recorded inputs: (ok, reasons of the failed checks)."""
    kind, obj = str(inputs["kind"]), inputs["target"]
    params, _ = deploy_params(request, kind, obj)
    found, _ = checks(request, kind, obj, params, inputs["nodes"], inputs["pods"], catalog)
    return all(c.ok for c in found), [c.summary for c in found if not c.ok]


def request_of(s: Scenario, fleet: Fleet) -> DeployRequest:
    step = _step(s)
    w = fleet.workload(step.workload or s.workload)
    return DeployRequest(namespace=w.namespace, name=w.name, version=step.version, model=step.model, gpus=step.gpus)


def _step(s: Scenario) -> DeployStep:
    if s.deploy is None:
        raise ValueError(f"{s.id} is not a deployment scenario")
    return s.deploy


# ---- watching the Rollout while the flow runs ---------------------------------------------------------------
class RolloutWatch(threading.Thread):
    """Polls the Rollout once a second: the weights the canary reached, its hash, the stable hash."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str, stable: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace, self.name, self.stable = api, namespace, name, stable
        self.weights: list[int] = []
        self.stables: set[str] = {stable} if stable else set()
        self.canary_hash: str | None = None
        self.first_canary_at: float | None = None
        self.ended_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(k8s.ApiException):  # a missed poll: the next one sees the same or later
                self._look()
            self.stop.wait(1.0)

    def _look(self) -> None:
        ro = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            rollouts.GROUP, rollouts.VERSION, self.namespace, "rollouts", self.name)
        st = ro.get("status") or {}
        if st.get("stableRS"):
            self.stables.add(str(st["stableRS"]))
        current = str(st.get("currentPodHash") or "")
        if not current or current == self.stable:
            return
        self.canary_hash = current
        self.first_canary_at = self.first_canary_at or time.time()
        weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
        if weight is None and st.get("currentStepIndex") is not None:
            weight = weight_at(ro, int(st["currentStepIndex"]))
        if weight is not None and (not self.weights or self.weights[-1] != int(weight)):
            self.weights.append(int(weight))
        if st.get("abort") or rollouts.phase(ro) == "Healthy":
            self.ended_at = self.ended_at or time.time()


def _prom(prom: str, q: str, at: float) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q, "time": at}, timeout=10)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def served(prom: str, namespace: str, name: str, canary_hash: str, start: float, end: float) -> tuple[float, float]:
    """Requests the canary's pods served, and all the workload's pods served, between start and end.

    The canary's counters start at zero with its pods, so their highest value is what they served; the
    others run on, so theirs is the increase over the window."""
    window = f"{max(1, round(end - start))}s"
    sel = f'namespace="{namespace}", pod=~"{name}-.*"'
    new = _prom(prom, f'sum(max_over_time(http_requests_total{{{sel}, rollouts_pod_template_hash="{canary_hash}"}}'
                      f"[{window}]))", end) or 0.0
    rest = _prom(prom, f'sum(increase(http_requests_total{{{sel}, rollouts_pod_template_hash!="{canary_hash}"}}'
                       f"[{window}]))", end) or 0.0
    return new, new + rest


def restore(api: k8s.ApiClient, fleet: Fleet, workload: str, prometheus: str, timeout_s: float = 420) -> bool:
    """Put a Rollout back on the fleet's version (an earlier run promoted another) and wait until it is
    Healthy: a scenario's canary starts from the sandbox's stable build. True when something was restored."""
    w = fleet.workload(workload)
    custom = k8s.CustomObjectsApi(api)
    ro = custom.get_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, w.namespace, "rollouts", w.name)
    labels = ro["spec"]["template"].get("metadata", {}).get("labels") or {}
    if labels.get("model-version") == w.version and rollouts.phase(ro) == "Healthy":
        return False
    want = rollouts.rollout_manifest(fleet, w, prometheus)["spec"]["template"]
    if labels.get("model-version") != w.version:
        custom.patch_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, w.namespace, "rollouts", w.name,
                                              {"spec": {"template": want}})  # a merge patch: lists replaced
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ro = custom.get_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, w.namespace, "rollouts", w.name)
        if rollouts.phase(ro) == "Healthy":
            return True
        time.sleep(2)
    raise TimeoutError(f"{w.namespace}/{w.name} did not become Healthy on {w.version} within {timeout_s:.0f} s")


# ---- the live step -------------------------------------------------------------------------------------------
async def _ask(app: App, token: str, req: DeployRequest, run: DeployRun) -> None:
    """POST the request as a pipeline does; poll GET while the preflight runs."""
    asgi, _ = build_server(app)
    auth = {"authorization": f"Bearer {token}"}
    body: dict[str, Any] = {"target": req.target, "version": req.version}
    if req.model:
        body["model"] = req.model
    if req.gpus:
        body["gpus"] = req.gpus
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://opsagent") as http:
        r = await http.post("/deployments", json=body, headers=auth)
        run.http_status, run.answer = r.status_code, r.json()
        deadline = time.monotonic() + 300
        while run.answer.get("status") in PENDING and time.monotonic() < deadline:
            await asyncio.sleep(1)
            r = await http.get(str(run.answer["url"]), headers=auth)
            run.answer = r.json()
    run.change_id = run.answer.get("change_id") or run.answer.get("id") if run.answer.get("status") not in (
        "refused", "not_found") else None
    run.reasons = [str(x) for x in run.answer.get("reasons") or []]


async def live_deploy(s: Scenario, app: App, token: str, api: k8s.ApiClient, prom: str, rec: RunRecord,
                      fleet: Fleet) -> None:
    """Ask for the scenario's deployment, approve it as its approvers, and record what happened."""
    step = _step(s)
    req = request_of(s, fleet)
    run = DeployRun(target=req.target)
    rec.deploy = run
    kind = "Rollout" if (step.workload or s.workload) in rollouts.merged_fleet(Fleet.load())[1] else "Deployment"
    run.kind = kind
    run.preflight_inputs = await asyncio.to_thread(preflight_inputs, api, kind, req.namespace, req.name)
    stable = ""
    if kind == "Rollout":
        stable = str((run.preflight_inputs.get("status") or {}).get("stableRS") or "") or await asyncio.to_thread(
            _stable_hash, api, req.namespace, req.name)
    run.stable_before = stable or None
    await _ask(app, token, req, run)
    run.preflight_ok = run.http_status != 422
    changes = await asyncio.to_thread(app.ledger.list_changes, limit=1000)
    run.stored_changes = len(changes)
    if run.change_id is None:
        run.outcome = "refused" if run.http_status == 422 else "other"
        run.refusal_audited = any(e["decision"] == "refused" and "preflight (ci)" in e["reason"]
                                  for e in app.audit.events())
        return
    ch = await asyncio.to_thread(app.ledger.get, run.change_id)
    if ch is None:
        rec.errors.append(f"the API answered change {run.change_id}, the ledger has no such change")
        return
    run.diff = ch.diff
    requester = f"ci:{PIPELINE}"
    out = ChangeOutcome(change_id=ch.id, source="triage", action=ch.spec.action.value,
                        target=ch.spec.target.model_dump(mode="json"), params=dict(ch.spec.params),
                        policy_effect={"denied": "deny", "pending_approval": "require_approval",
                                       "approved": "allow"}.get(ch.status.value, ch.status.value),
                        policy_rule=ch.policy_rule, status=ch.status.value,
                        policy_request=_policy_request(ch.spec, ch, requester))
    rec.changes.append(out)
    if ch.status.value == "denied":
        run.outcome = "patch" if ch.policy_rule == OWNED_RULE and ch.diff else "other"
        return
    watch = RolloutWatch(api, req.namespace, req.name, stable) if kind == "Rollout" else None
    if watch is not None:
        watch.start()
    flow = app.flow()
    t_last = time.time()
    st = None
    try:
        for who in step.approvers:
            t_last = time.time()
            st = await asyncio.wait_for(flow.decide(ch.id, who, "approve", via="eval"), step.timeout_s)
            out.approver_decision = "approve"
            if not st.waiting:
                break
    finally:
        if watch is not None:
            watch.stop.set()
            watch.join(5)
    run.approval_to_outcome_s = round(time.time() - t_last, 1)
    out.approvals = sum(1 for a in app.ledger.approvals(ch.id) if a.decision == "approve")
    if st is not None:
        from evals.runner import _flow_outcome  # the incident path's copy of a flow's end into its outcome

        _flow_outcome(out, st)
    verification = out.verification_detail or ""
    if "promoted to 100 %" in verification:
        run.outcome = "promoted"
    elif "aborted by analysis" in verification:
        run.outcome = "aborted"
    elif st is not None and st.waiting:
        run.outcome = "pending"
    if watch is not None:
        run.weights, run.canary_hash = watch.weights, watch.canary_hash
        run.stable_after = await asyncio.to_thread(_stable_hash, api, req.namespace, req.name)
        if watch.canary_hash and watch.first_canary_at:
            end = (watch.ended_at or time.time()) + 10
            await asyncio.sleep(max(0.0, end + SETTLE_AFTER_S - 10 - time.time()))
            run.served_new, run.served_total = await asyncio.to_thread(
                served, prom, req.namespace, req.name, watch.canary_hash, watch.first_canary_at - 5, end)


def _stable_hash(api: k8s.ApiClient, namespace: str, name: str) -> str:
    ro = k8s.CustomObjectsApi(api).get_namespaced_custom_object(rollouts.GROUP, rollouts.VERSION, namespace,
                                                                "rollouts", name)
    return str((ro.get("status") or {}).get("stableRS") or "")


def _policy_request(spec: ChangeSpec, ch: Any, requester: str) -> dict[str, Any] | None:
    """The policy's input for the change; None where the executor, not the policy, decided (a GitOps owner)."""
    if ch.policy_rule == OWNED_RULE:
        return None
    return Request(action=spec.action.value, risk=ch.risk, cluster=spec.cluster, namespace=spec.target.namespace,
                   target_kind=spec.target.kind, target_name=spec.target.name, requester=requester,
                   gpus=ch.blast_radius.gpus, capacity_drop=ch.blast_radius.capacity_drop, at=ch.created_at,
                   replicas_delta=0).model_dump(mode="json")


# ---- replay -----------------------------------------------------------------------------------------------
def replay_deploy(s: Scenario, old: RunRecord, rec: RunRecord, policies_dir: Path, catalog: PriceCatalog) -> None:
    """Re-decide the recorded deployment with today's preflight and policy; copy what the cluster did."""
    if old.deploy is None:
        rec.errors.append(f"the recording of {s.id} has no deployment (the live run failed before asking)")
        return
    run = old.deploy.model_copy(deep=True)
    rec.deploy = run
    rec.changes = [c.model_copy() for c in old.changes]
    rec.mutations = old.mutations
    rec.audit = old.audit
    if run.preflight_inputs:
        try:
            ok, reasons = replay_preflight(request_of(s, deploy_fleet()), run.preflight_inputs, catalog)
        except (KeyError, ValueError) as e:
            rec.errors.append(f"the preflight cannot be re-run on the recorded inputs: {e}")
        else:
            if ok != run.preflight_ok:
                rec.errors.append(f"the preflight now says {'pass' if ok else 'refuse'} (recorded: "
                                  f"{'pass' if run.preflight_ok else 'refuse'}): {reasons}")
            elif not ok:
                run.reasons = reasons
    policy = load_policy(policies_dir / "default.yaml")
    for c in rec.changes:
        if c.policy_request is not None:
            now = evaluate(policy, Request.model_validate(c.policy_request)).effect.value
            if now != c.policy_effect:
                rec.errors.append(f"policy now says {now} for {c.change_id} (recorded: {c.policy_effect})")


def dumps(run: DeployRun) -> str:
    return json.dumps(run.model_dump(mode="json", exclude={"preflight_inputs"}), indent=1)
