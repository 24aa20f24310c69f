"""`opsagent demo`: the incident drill on the local sandbox.

An entry point. Today's drill: bring the sandbox up, roll out a model version that regresses,
watch the signals degrade and the alert reach the webhook, roll back through the Kubernetes API,
and watch the signals recover. Later capabilities (triage, approval, guarded execution, audit,
cost report) extend this drill rather than replace it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from deploy.sandbox import components, faults
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.receiver import Notification, WebhookReceiver
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

Echo = Callable[[str], None]


def _scalar(prom: str, promql: str) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    return f"{v * 100:.1f}%" if unit == "%" else f"{v:.2f}{unit}"


def run_demo(settings: SandboxSettings, out: Echo, progress: Echo, keep: bool = True) -> bool:
    sb = Sandbox(settings, progress=progress)
    status = sb.up()
    webhook = status.get("webhook_url") or settings.webhook_url
    u = urlparse(webhook)
    with WebhookReceiver(host=u.hostname or "127.0.0.1", port=u.port or 80, path=u.path or "/") as rx:
        ok = _drill(sb, status, rx, out, progress)
    if not keep:
        sb.down()
    return ok


def _drill(sb: Sandbox, status: dict[str, Any], rx: WebhookReceiver, out: Echo, progress: Echo) -> bool:
    fleet = Fleet.load(sb.s.fleet_file)
    prom = status["endpoints"]["prometheus"]
    admin = api_client(Path(status["kubeconfigs"]["admin"]))
    kubectl = str(components.locate(sb.s.cache_dir).kubectl)
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    sel = f'namespace="{w.namespace}", model_name="{w.model}"'
    ttft = f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[30s])))"
    pods = (f"* on (namespace, pod) group_left(model_name) "
            f"(0 * max by (namespace, pod, model_name) (vllm:num_requests_running{{{sel}}}) + 1)")
    errs = (f'sum(rate(http_requests_total{{namespace="{w.namespace}", status="5xx"}}[30s]) {pods}) / '
            f'sum(rate(http_requests_total{{namespace="{w.namespace}"}}[30s]) {pods})')

    def signals() -> tuple[float | None, float | None]:
        return _scalar(prom, ttft), _scalar(prom, errs)

    def show(label: str) -> tuple[float | None, float | None]:
        t, e = signals()
        out(f"  {label:<28} TTFT p95 {_fmt(t, 's'):>8}   5xx {_fmt(e, '%'):>7}")
        return t, e

    out("")
    out(f"== Incident drill on {fleet.cluster}: {w.namespace}/{w.name} serving {w.model} ==")
    out(f"   Prometheus {prom}   Alertmanager {status['endpoints']['alertmanager']}   webhook {rx.url}")
    faults.clear(admin, fleet)
    show("baseline")

    out("")
    out(f"1. A new model version rolls out: {w.model} {fleet.faults['bad-rollout']['version']}")
    t0 = time.time()
    faults.inject(admin, fleet, "bad-rollout")
    subprocess.run([kubectl, f"--kubeconfig={status['kubeconfigs']['admin']}", "-n", w.namespace, "rollout",
                    "status", f"deployment/{w.name}", "--timeout=180s"], check=True)

    out("")
    out("2. Signals degrade; waiting for Prometheus to alert and Alertmanager to deliver the webhook")
    note: Notification | None = None
    deadline = time.monotonic() + 300
    while note is None and time.monotonic() < deadline:
        show(f"t+{time.time() - t0:5.0f}s")
        try:
            note = rx.wait_for(lambda n: any(a["labels"].get("namespace") == w.namespace for a in n.alerts()),
                               timeout=5, since=t0)
        except TimeoutError:
            continue
    if note is None:
        out("   no alert arrived within 5 minutes: check `opsagent sandbox status` and the Prometheus rules")
        return False
    for a in note.alerts():
        out(f"   ALERT {a['labels']['alertname']} [{a['labels'].get('severity')}]: "
            f"{a['annotations'].get('summary', '')}")
    out(f"   webhook delivered {note.received_at - t0:.0f}s after the rollout started")

    out("")
    out("3. Roll back through the Kubernetes API, as the executor identity")
    history = subprocess.run([kubectl, f"--kubeconfig={status['kubeconfigs']['reader']}", "-n", w.namespace,
                              "rollout", "history", f"deployment/{w.name}"], capture_output=True, text=True)
    out("   " + history.stdout.strip().replace("\n", "\n   "))
    cmd = [kubectl, f"--kubeconfig={status['kubeconfigs']['executor']}", "-n", w.namespace, "rollout", "undo",
           f"deployment/{w.name}"]
    out(f"   $ kubectl --kubeconfig=executor.kubeconfig -n {w.namespace} rollout undo deployment/{w.name}")
    t1 = time.time()
    subprocess.run(cmd, check=True)
    subprocess.run([kubectl, f"--kubeconfig={status['kubeconfigs']['admin']}", "-n", w.namespace, "rollout",
                    "status", f"deployment/{w.name}", "--timeout=180s"], check=True)

    out("")
    out("4. Recovery")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        t, e = show(f"t+{time.time() - t1:5.0f}s after rollback")
        if t is not None and e is not None and t < w.slo.ttft_p95_s and e < w.slo.error_rate:
            out(f"   recovered {time.time() - t1:.0f}s after the rollback (SLO: TTFT p95 < {w.slo.ttft_p95_s}s, "
                f"errors < {w.slo.error_rate:.0%})")
            out("")
            out("The sandbox is still running: `opsagent sandbox status`, `opsagent sandbox down`.")
            return True
        time.sleep(5)
    out("   signals did not recover within 3 minutes")
    return False
