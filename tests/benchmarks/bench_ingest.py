"""Benchmark webhook intake with two replicas on one store: alerts ingested per second, nothing lost.

Two `create_app` servers (the ASGI app `opsagent serve` runs, triage switched off so only intake
is measured) run as separate processes under uvicorn on 127.0.0.1 and share one store: a throwaway
Postgres (Debian's binaries, as in the tests) or one SQLite file. An httpx async load generator
posts Alertmanager v4 notifications round-robin to the two, each carrying `--per-webhook` new
alerts of one of `--groups` groups. Afterwards the store must hold exactly one incident per group
with every alert delivered to it.

Run: uv run python tests/benchmarks/bench_ingest.py [--alerts 6000] [--groups 200] [--backend both]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.postgres import LocalPostgres  # noqa: E402
from tests.serving import free_port, stop_process  # noqa: E402


def serve(target: str, port: int) -> None:
    """The replica process: intake only, on the shared store."""
    import uvicorn

    from agent.server import create_app
    from agent.store import SqlStore

    uvicorn.run(create_app(SqlStore(target), None), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def notification(group: int, first_alert: int, n: int) -> bytes:
    start = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    alerts = [{
        "status": "firing",
        "labels": {"alertname": "ModelServingErrorRateHigh", "namespace": "llm-prod", "model_name": f"model-{group}",
                   "pod": f"model-{group}-{i}", "severity": "critical"},
        "annotations": {"summary": f"model-{group} pod {i}: 5xx above 2%"},
        "startsAt": (start + dt.timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{group:06x}{i:010x}",
    } for i in range(first_alert, first_alert + n)]
    return json.dumps({
        "version": "4", "groupKey": f'{{}}:{{alertname="ModelServingErrorRateHigh", model_name="model-{group}"}}',
        "status": "firing", "receiver": "opsagent", "groupLabels": {"model_name": f"model-{group}"},
        "commonLabels": {"alertname": "ModelServingErrorRateHigh"}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0, "alerts": alerts,
    }).encode()


async def load(urls: list[str], alerts: int, groups: int, per_webhook: int, concurrency: int) -> dict[str, Any]:
    bodies = []
    per_group = alerts // groups
    for k in range(0, per_group, per_webhook):  # every group advances together, as alerts spread
        for g in range(groups):
            bodies.append(notification(g, k, min(per_webhook, per_group - k)))
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, b in enumerate(bodies):
        queue.put_nowait((i, b))
    failures: list[str] = []
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i, body = queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.post(f"{urls[i % len(urls)]}/alertmanager", content=body,
                                  headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200 or r.json().get("changed") is not True:
                failures.append(f"{r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()
    return {"webhooks": len(bodies), "alerts": per_group * groups, "seconds": seconds, "failures": failures,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def run(backend: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    from agent.store import SqlStore

    SqlStore(target).close()  # create the tables once, before the replicas race to
    ports = [free_port() for _ in range(args.replicas)]
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", target, str(p)], cwd=ROOT) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 30
        for u in urls:
            while True:
                try:
                    if httpx.get(f"{u}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {u} did not start")
                time.sleep(0.1)
        res = asyncio.run(load(urls, args.alerts, args.groups, args.per_webhook, args.concurrency))
    finally:
        for p in procs:
            stop_process(p)  # type: ignore[arg-type]
    store = SqlStore(target)
    incidents = store.incidents(limit=args.groups * 10)
    store.close()
    res["incidents"] = len(incidents)
    res["stored_alerts"] = sum(len(i.alerts) for i in incidents)
    res["lost"] = res["alerts"] - res["stored_alerts"]
    res["backend"] = backend
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", nargs=2, metavar=("TARGET", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--alerts", type=int, default=6000)
    ap.add_argument("--groups", type=int, default=200)
    ap.add_argument("--per-webhook", type=int, default=1, help="New alerts per notification.")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32, help="Requests in flight.")
    ap.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    results = []
    if args.backend in ("postgres", "both"):
        pg = LocalPostgres().start()
        try:
            results.append(run("postgres", pg.create_database("bench"), args))
        finally:
            pg.stop()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as d:
            results.append(run("sqlite", str(Path(d) / "opsagent.db"), args))
    ok = True
    for r in results:
        print(f"{r['backend']:8} {args.replicas} replicas: {r['webhooks']} webhooks / {r['alerts']} alerts in "
              f"{r['seconds']:.2f}s = {r['webhooks'] / r['seconds']:.0f} webhooks/s, "
              f"{r['alerts'] / r['seconds']:.0f} alerts/s; p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; "
              f"{r['incidents']} incidents (want {args.groups}), lost {r['lost']}, failed requests "
              f"{len(r['failures'])}")
        ok &= not r["failures"] and r["lost"] == 0 and r["incidents"] == args.groups
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
