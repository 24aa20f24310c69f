"""Benchmark approval → verified recovery over many bad rollouts (goal: p95 ≤ 60 s).

Runs against a running sandbox (`opsagent sandbox up`). Each iteration: clear faults and wait for a
healthy baseline; roll out the regressing model version (the `bad-rollout` fault, through the API);
wait until the signals show it; triage the incident (rules reasoner, live evidence); the proposed
rollback becomes a change request held at its approval interrupt; the on-call user approves it and the
flow executes, watches the rollout and verifies TTFT p95, errors and queue against the baseline. The
time from the approval to the verified outcome is what is measured.

Each iteration uses a fresh state directory: the default policy allows 3 changes per target per hour,
and this benchmark makes more than that on purpose.

Run: uv run python tests/benchmarks/bench_recovery.py --sandbox-dir DIR --port-base N [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent import incidents
from agent.app import App, build_app
from agent.change.verify import signal_queries
from agent.entry.commands.common import settings_for
from agent.models import ActionKind
from deploy.sandbox import components, faults
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _scalar(prom: str, q: str) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
    res = r.json()["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def _until(fn: Any, timeout: float, every: float = 3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(every)
    return False


async def _one(app: App, body: dict[str, Any]) -> tuple[str, float, str]:
    try:
        note = incidents.parse(json.dumps(body).encode())
        incident, _ = app.store.record_notification(note, dt.datetime.now(dt.UTC))
        report = await app.triage(incident)
        flow = app.flow()
        opened = await app.propose_changes(report, flow)
        rb = next((f for f in opened if f.change.spec.action == ActionKind.ROLLBACK), None)
        if rb is None:
            return "no rollback proposed", 0.0, report.summary
        who = next(iter(app.policy.role_members("oncall")), "alice")
        t0 = time.perf_counter()
        st = await flow.decide(rb.change.id, who, "approve", via="bench")
        return st.stage, time.perf_counter() - t0, st.verification or st.detail
    finally:
        await app.aclose_clients()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox-dir", type=Path, required=True)
    ap.add_argument("--port-base", type=int, default=17000)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    sb = Sandbox(SandboxSettings(dir=args.sandbox_dir, port_base=args.port_base))
    status = sb.status()
    if status["state"] != "up":
        raise SystemExit(f"sandbox in {args.sandbox_dir} is {status['state']}")
    fleet = Fleet.load(sb.s.fleet_file)
    admin = api_client(Path(status["kubeconfigs"]["admin"]))
    kubectl = str(components.locate(sb.s.cache_dir).kubectl)
    prom = status["endpoints"]["prometheus"]
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    q = signal_queries(w.namespace, w.model)
    body: dict[str, Any] = json.loads((FIXTURES / "alertmanager_bad_rollout.json").read_text())
    results: list[tuple[str, float, str]] = []
    for i in range(args.runs):
        faults.clear(admin, fleet)

        def healthy() -> bool:
            t, e = _scalar(prom, q["ttft_p95"]), _scalar(prom, q["error_share"])
            return t is not None and e is not None and t < w.slo.ttft_p95_s and e < w.slo.error_rate

        if not _until(healthy, 240):
            raise SystemExit(f"run {i + 1}: no healthy baseline within 4 minutes")
        faults.inject(admin, fleet, "bad-rollout")
        subprocess.run([kubectl, f"--kubeconfig={status['kubeconfigs']['admin']}", "-n", w.namespace, "rollout",
                        "status", f"deployment/{w.name}", "--timeout=180s"], check=True, capture_output=True)
        _until(lambda: (_scalar(prom, q["error_share"]) or 0) > 0.05, 120)
        body["groupKey"] = f"bench-recovery-{i}-{time.time()}"
        with tempfile.TemporaryDirectory() as state:
            app = build_app(settings_for(None, status, state_dir=state))
            try:
                stage, secs, why = asyncio.run(_one(app, body))
            finally:
                app.close()
        results.append((stage, secs, why))
        print(f"run {i + 1:>2}/{args.runs}: {stage:<10} approval → outcome {secs:5.1f} s   {why[:110]}", flush=True)
    faults.clear(admin, fleet)
    admin.close()
    ok = sorted(s for st, s, _ in results if st == "verified")
    if not ok:
        raise SystemExit("no run verified")
    p95 = ok[max(0, round(0.95 * len(ok)) - 1)]
    print(f"\nverified {len(ok)}/{len(results)} runs; approval → verified recovery: p50 {statistics.median(ok):.1f} s, "
          f"p95 {p95:.1f} s, max {ok[-1]:.1f} s (goal p95 ≤ 60 s)")


if __name__ == "__main__":
    main()
