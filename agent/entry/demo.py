"""`opsagent demo`: the incident drill on the local sandbox, end to end.

An entry point. A model version that regresses rolls out; Prometheus alerts and Alertmanager
delivers the webhook; the agent triages it from evidence and proposes a rollback with its diff; a
human (or `--unattended`, the demo's on-call user) approves that exact change; the guarded executor
runs it with its own identity; the controllers roll the pods; the simulator sees the old version and
the signals recover; verification compares them with the baseline; the audit trail is printed and
its hash chain verified.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx

from agent import incidents
from agent.app import App, build_app
from agent.change.flow import FlowEvent
from agent.change.models import ChangeStatus
from agent.change.verify import signal_queries
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, TriageReport
from deploy.sandbox import components, faults
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.receiver import Notification, WebhookReceiver
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

Echo = Callable[[str], None]
T = TypeVar("T")
ALERTS = {"ModelServingErrorRateHigh", "ModelServingTTFTHigh"}


def _scalar(prom: str, promql: str) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    return f"{v * 100:.1f}%" if unit == "%" else f"{v:.2f}{unit}"


def run_demo(
    settings: SandboxSettings,
    out: Echo,
    progress: Echo,
    *,
    keep: bool = True,
    unattended: bool = False,
    approver: str | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> bool:
    sb = Sandbox(settings, progress=progress)
    status = sb.up()
    u = urlparse(status.get("webhook_url") or settings.webhook_url)
    app = build_app(settings_for(None, status, state_dir=str(settings.dir / "agent-state")))
    try:
        with WebhookReceiver(host=u.hostname or "127.0.0.1", port=u.port or 80, path=u.path or "/") as rx:
            return _drill(sb, status, rx, app, out, progress, unattended, approver, confirm)
    finally:
        app.close()
        if not keep:
            sb.down()


def _drill(
    sb: Sandbox,
    status: dict[str, Any],
    rx: WebhookReceiver,
    app: App,
    out: Echo,
    progress: Echo,
    unattended: bool,
    approver: str | None,
    confirm: Callable[[str], bool] | None,
) -> bool:
    fleet = Fleet.load(sb.s.fleet_file)
    prom = status["endpoints"]["prometheus"]
    admin = api_client(Path(status["kubeconfigs"]["admin"]))
    kubectl = str(components.locate(sb.s.cache_dir).kubectl)
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    q = signal_queries(w.namespace, w.model, workload=w.name)

    def show(label: str) -> tuple[float | None, float | None]:
        t, e = _scalar(prom, q["ttft_p95"]), _scalar(prom, q["error_share"])
        out(f"  {label:<30} TTFT p95 {_fmt(t, 's'):>8}   5xx {_fmt(e, '%'):>7}")
        return t, e

    def healthy() -> bool:
        t, e = show("waiting for a healthy baseline")
        return t is not None and e is not None and t < w.slo.ttft_p95_s and e < w.slo.error_rate

    out(f"\n== Incident drill on {fleet.cluster}: {w.namespace}/{w.name} serves {w.model} ==")
    out(f"   Prometheus {prom} · Alertmanager {status['endpoints']['alertmanager']} · webhook {rx.url}")
    faults.clear(admin, fleet)
    if not _until(healthy, 240, 5):
        out("   the sandbox did not settle to a healthy baseline within 4 minutes")
        return False

    out(f"\n1. A new model version rolls out: {w.model} {fleet.faults['bad-rollout']['version']}")
    t_inject = time.time()
    faults.inject(admin, fleet, "bad-rollout")
    subprocess.run(
        [
            kubectl,
            f"--kubeconfig={status['kubeconfigs']['admin']}",
            "-n",
            w.namespace,
            "rollout",
            "status",
            f"deployment/{w.name}",
            "--timeout=180s",
        ],
        check=True,
        capture_output=True,
    )

    out("\n2. The signals degrade; Prometheus alerts; Alertmanager delivers the webhook")
    note: Notification | None = None
    deadline = time.monotonic() + 300
    while note is None and time.monotonic() < deadline:
        show(f"t+{time.time() - t_inject:4.0f}s")
        try:
            note = rx.wait_for(
                lambda n: any(
                    a["labels"].get("alertname") in ALERTS and a["labels"].get("namespace") == w.namespace
                    for a in n.alerts()
                ),
                timeout=5,
                since=t_inject,
            )
        except TimeoutError:
            continue
    if note is None:
        out("   no alert within 5 minutes: see `opsagent sandbox status` and the Prometheus rules")
        return False
    for a in note.alerts():
        out(f"   ALERT {a['labels']['alertname']} [{a['labels'].get('severity')}]: {a['annotations'].get('summary')}")
    t_webhook = note.received_at
    out(f"   webhook delivered {t_webhook - t_inject:.0f}s after the rollout started")

    out("\n3. Triage (rules reasoner, no API key)")
    notification = incidents.parse(json.dumps(note.body).encode())
    incident, _ = app.store.record_notification(notification, dt.datetime.now(dt.UTC))
    report = asyncio.run(_triage(app, incident))
    _print_report(report, out)
    rollback = next((p for p in report.proposals if p.kind == ActionKind.ROLLBACK and p.target), None)
    if rollback is None or rollback.target is None:
        out("   the triage proposed no rollback; a human takes it from here")
        return False

    out("\n4. The proposal becomes a change request: policy, diff, blast radius")
    flow = app.flow(on_event=_printer(out))
    opened = asyncio.run(_with_clients(app, app.propose_changes(report, flow)))
    st = next((f for f in opened if f.change.spec.action == ActionKind.ROLLBACK), None)
    if st is None:
        out("   no rollback could be proposed; a human takes it from here")
        return False
    ch = st.change
    b = ch.blast_radius
    out(f"   {ch.id}: {ch.spec.action.value} {ch.spec.target} {ch.spec.params} — {ch.status.value}")
    out(f"   policy {ch.policy_rule}: {ch.policy_reason}")
    out(f"   blast radius: {b.gpus} GPUs, {b.replicas} replicas, at most {b.capacity_drop:.0%} of capacity at once")
    if ch.cost_delta_per_month is not None:
        out(f"   predicted cost change: {ch.cost_delta_per_month:+,.0f} USD/month")
    out("   " + (ch.diff or "(no diff)").replace("\n", "\n   ").rstrip())
    if not st.waiting:
        out(f"   the change's flow did not wait for an approval: {st.stage} — {st.verification or st.detail}")
        return st.stage == "verified"
    out(f"   the change's flow is held at its approval interrupt: {st.stage}")

    who = approver or next(iter(app.policy.role_members("oncall")), "alice")
    if unattended:
        out(f"\n5. Approval (--unattended: approving as the demo's on-call user {who!r})")
    else:
        out("\n5. Approval")
        if confirm is None or not confirm(f"Approve {ch.id} as {who}?"):
            out(f"   not approved; it waits: `opsagent changes approve {ch.id} --as {who} --sandbox`")
            return False
    t_approve = time.time()
    out("\n6. The approval resumes the flow: the guarded executor applies it with its own identity, then")
    out("   verification watches the rollout and compares TTFT p95, errors and queue with the baseline")
    done = asyncio.run(_with_clients(app, flow.decide(ch.id, who, "approve", via="demo")))
    t_verified = time.time()
    out(f"   verdict: {done.stage} — {done.verification or done.detail}")
    out(f"   approval → verified in {t_verified - t_approve:.0f}s")
    show("now")

    out(f"\n7. Audit trail of {incident.id}")
    for e in app.audit.events(incident.id):
        out(
            f"   {e['seq']:>5} {e['at'][11:19]} {e['kind']:<15} {e['actor']:<24} {e['decision']:<16} {e['action'][:52]}"
        )
    rep = app.audit.verify()
    if rep.ok:  # sign only a chain that verified
        app.audit.checkpoint()
    out(
        f"   audit verify: {'OK' if rep.ok else 'TAMPERED'} — {rep.records} records, chain intact, "
        f"checkpoint at {rep.checkpoint_seq}"
    )
    final = app.ledger.get(ch.id)
    ok = done.stage == "verified" and rep.ok and final is not None and final.status == ChangeStatus.VERIFIED
    out(
        f"\nSummary: injection → webhook {t_webhook - t_inject:.0f}s · "
        f"approval → verified {t_verified - t_approve:.0f}s · "
        f"outcome {'recovered and verified' if ok else 'NOT verified'}"
    )
    out("The sandbox keeps running: `opsagent sandbox status`, `opsagent sandbox down`.")
    return ok


async def _triage(app: App, incident: Any) -> TriageReport:
    return await _with_clients(app, app.triage(incident))


async def _with_clients(app: App, work: Awaitable[T]) -> T:
    try:
        return await work
    finally:
        await app.aclose_clients()


def _printer(out: Echo) -> Callable[[FlowEvent], Awaitable[None]]:
    async def show(ev: FlowEvent) -> None:
        out(f"   [{ev.at:%H:%M:%S}] {ev.stage}: {ev.message}")

    return show


def _print_report(report: TriageReport, out: Echo) -> None:
    out(f"   {report.summary}")
    for h in report.hypotheses[:3]:
        out(f"   - {h.title} ({h.category.value}, {h.confidence:.0%})")
    for p in report.proposals:
        out(f"   proposal: {p.kind.value} {p.target or ''} {p.params or ''} — {p.reason}")


def _until(fn: Callable[[], bool], timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(interval)
    return False
