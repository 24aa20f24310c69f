"""`opsagent demo --scenario deploy`: two model versions through the agent onto Argo Rollouts.

An entry point. On a sandbox started with rollouts, a pipeline asks for a version that regresses: the
preflight passes, two people approve, the guarded executor writes the Rollout's template, the
controller's canary analysis aborts it at the first step, the agent reports the failed metric and puts
the template back. Then a good version: the same path, promoted at 100 %. The audit trail is verified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import yaml

from agent.app import App, build_app
from agent.change.deploy import DeployRequest
from agent.change.flow import FlowEvent
from agent.entry.commands.common import settings_for
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

Echo = Callable[[str], None]
TARGET = ("llm-prod", "assist-mini")
BAD, GOOD = "2025.08.0", "2025.09.0"  # fleet.yaml: the bad build errs 8 % with a 0.9 s median TTFT
APPROVERS = ("bob", "alice")  # policies/default.yaml: deployments need two of ml-platform / oncall


def run_deploy_demo(settings: SandboxSettings, out: Echo, progress: Echo, *, keep: bool = True,
                    confirm: Callable[[str], bool] | None = None) -> bool:
    # Half a day of history is all the canary analysis and the preflight read (the incident drill's 14
    # days of backfill are for its baselines).
    sb = Sandbox(settings.model_copy(update={"rollouts": True, "history_days": min(settings.history_days, 0.5)}),
                 progress=progress)
    status = sb.up()
    state = settings.dir / "deploy-demo-state"
    state.mkdir(parents=True, exist_ok=True)
    # The demo runs at any hour: its policy is the default one with the deployment window lifted.
    doc = yaml.safe_load((settings_for(None).policies_dir / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "deploy":
            rule.get("conditions", {}).pop("windows", None)
    (state / "policies").mkdir(exist_ok=True)
    (state / "policies" / "default.yaml").write_text(yaml.safe_dump(doc))
    app = build_app(settings_for(None, status, state_dir=str(state), policies_dir=str(state / "policies")))
    try:
        return asyncio.run(_drill(app, out, confirm))
    finally:
        app.close()
        if not keep:
            sb.down()


async def _drill(app: App, out: Echo, confirm: Callable[[str], bool] | None) -> bool:
    try:
        out(f"\n== Deployments on Argo Rollouts: {TARGET[0]}/{TARGET[1]} (canary 10 % → 50 % → 100 %, "
            "each step gated by the gpu-serving-slo analysis) ==")
        bad = await _one(app, out, confirm, BAD, "1. A pipeline asks for a build that regresses")
        good = await _one(app, out, confirm, GOOD, "2. The pipeline asks for the next, good build")
        report = app.audit.verify()
        out(f"\n3. Audit: {report.records} records, hash chain "
            f"{'verified' if report.ok else 'BROKEN: ' + str(report.problems[:3])}")
        ok = bad == "rolled_back" and good == "verified" and report.ok
        out(f"\n{'Done' if ok else 'Not as expected'}: the bad build was {bad}, the good one {good}.")
        return ok
    finally:
        await app.aclose_clients()


async def _one(app: App, out: Echo, confirm: Callable[[str], bool] | None, version: str, title: str) -> str:
    out(f"\n{title}: `opsagent deploy {TARGET[0]}/{TARGET[1]} --version {version}`")
    started = time.monotonic()

    async def show(ev: FlowEvent) -> None:
        out(f"   [{time.monotonic() - started:5.0f}s] {ev.stage}: {ev.message.removeprefix(ev.change_id + ': ')}")

    res = await app.deploy(DeployRequest(namespace=TARGET[0], name=TARGET[1], version=version),
                           requester="ci:model-assist", via="demo", on_event=show)
    out("   preflight:\n" + "\n".join(f"     {line}" for line in res.plan.preflight.markdown().splitlines()))
    if res.state is None:
        out("   refused at preflight: " + "; ".join(res.plan.preflight.reasons()))
        return "refused"
    ch = res.state.change
    out(f"   change request {ch.id}: {ch.status.value} ({ch.policy_rule}: {ch.approvals_required} approvals)")
    if confirm is not None and not confirm(f"   Approve {ch.id} as {' and '.join(APPROVERS)}?"):
        out("   not approved: nothing was written")
        return "pending"
    flow = app.flow(on_event=show)
    st = await flow.decide(ch.id, APPROVERS[0], "approve", via="demo")
    started = time.monotonic()
    st = await flow.decide(ch.id, APPROVERS[1], "approve", via="demo")
    out(f"   outcome after {time.monotonic() - started:.0f} s from the second approval: {st.stage} — "
        f"{st.verification or st.detail}")
    return str(st.stage)
