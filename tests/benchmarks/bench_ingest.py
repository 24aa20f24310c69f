"""Benchmark webhook intake with two replicas on one store: alerts ingested per second, nothing lost.

Two `create_app` servers (the ASGI app `opsagent serve` runs, with Bearer auth and the streaming
body limit, triage switched off so only intake is measured) run as separate processes under uvicorn
on 127.0.0.1 and share one store: a throwaway
Postgres (Debian's binaries, fsync on) or one SQLite file. An asyncio load generator (keep-alive
connections, a few lines of HTTP/1.1) posts Alertmanager v4 notifications round-robin to the two,
each carrying `--per-webhook` new alerts of one of `--groups` groups. Afterwards the store must
hold exactly one incident per group with every alert delivered to it. CPU seconds of the replicas
and the database are printed too: on a shared machine they say more than wall-clock throughput.

On Postgres the replicas group-commit (agent/storage/groupcommit.py): the deliveries in flight on a replica
share one statement and one commit. Each replica's batches are printed (count, mean and largest size).

Run: uv run python tests/benchmarks/bench_ingest.py [--alerts 6000] [--groups 200] [--backend both]
     [--port-base 19800]  (replicas at base+1.., Postgres at base+9; default: free ports)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
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

TOKEN = "bench-webhook-token-0123456789abcdef"


def serve(target: str, port: int) -> None:
    """The replica process: intake only, on the shared store; prints its group-commit counters on exit."""
    import uvicorn

    from agent.entry.http_guard import HttpSecurity
    from agent.entry.server import create_app
    from agent.storage.store import SqlStore

    store = SqlStore(target)

    async def report() -> None:  # at shutdown (uvicorn re-raises SIGTERM once the app has stopped)
        st = getattr(getattr(store, "intake", None), "stats", None)  # None: code from before group commit
        if st is not None and st.batches:
            print(f"{'':8} replica :{port}: {st.writes} deliveries in {st.batches} batches (mean "
                  f"{st.writes / st.batches:.1f}, largest {st.largest}, failed {st.failed_batches})", flush=True)

    # As `opsagent serve` runs in a cluster: Bearer auth and the streaming body limit on every request.
    uvicorn.run(create_app(store, None, security=HttpSecurity.build([TOKEN, "x" + TOKEN]), on_shutdown=[report]),
                host="127.0.0.1", port=port, log_level="warning", access_log=False)


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

    async def worker(k: int) -> None:
        # A minimal HTTP/1.1 keep-alive client: httpx spent more CPU than the servers it measured.
        host, port = urls[k % len(urls)].removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                _, body = queue.get_nowait()
                t0 = time.perf_counter()
                writer.write(b"POST /alertmanager HTTP/1.1\r\nHost: %b\r\nContent-Type: application/json\r\n"
                             b"Authorization: Bearer %b\r\nContent-Length: %d\r\n\r\n%b"
                             % (host.encode(), TOKEN.encode(), len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 200") or b'"changed":true' not in answer:
                    failures.append(f"{head[:40]!r} {answer[:200]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {"webhooks": len(bodies), "alerts": per_group * groups, "seconds": seconds, "failures": failures,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def cpu_seconds(pids: list[int], children_of: int | None = None) -> float:
    """User+system CPU of these processes (and of `children_of`'s children: Postgres's backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d.name), int(f[1])
        if pid in pids or (children_of is not None and ppid == children_of):
            total += (int(f[11]) + int(f[12])) / tick
    return total


def run(backend: str, target: str, args: argparse.Namespace, pg_pid: int | None = None) -> dict[str, Any]:
    from agent.storage.store import SqlStore

    SqlStore(target).close()  # create the tables once, before the replicas race to
    ports = [args.port_base + 1 + k if args.port_base else free_port() for k in range(args.replicas)]
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
        pids = [p.pid for p in procs] + ([pg_pid] if pg_pid else [])
        load_before = os.getloadavg()[0]
        cpu0, self0 = cpu_seconds(pids, pg_pid), resource.getrusage(resource.RUSAGE_SELF)
        res = asyncio.run(load(urls, args.alerts, args.groups, args.per_webhook, args.concurrency))
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        res["server_cpu_s"] = cpu_seconds(pids, pg_pid) - cpu0
        res["load_before"] = load_before
        res["client_cpu_s"] = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
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
    ap.add_argument("--port-base", type=int, default=0,
                    help="Replicas listen at base+1..base+N, Postgres at base+9 (default: free ports).")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    results = []
    if args.backend in ("postgres", "both"):
        pg = LocalPostgres(durable=True, port=args.port_base + 9 if args.port_base else None).start()  # fsync on
        try:
            results.append(run("postgres", pg.create_database("bench"), args, pg.pid))
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
        per = 1000 * r["server_cpu_s"] / r["webhooks"]
        print(f"{'':8} CPU: replicas+database {r['server_cpu_s']:.1f} s ({per:.2f} ms per webhook, so "
              f"{2000 / per:.0f} webhooks/s would fill 2 idle cores), load generator {r['client_cpu_s']:.1f} s; "
              f"load average {r['load_before']:.1f} before, {os.getloadavg()[0]:.1f} after")
        ok &= not r["failures"] and r["lost"] == 0 and r["incidents"] == args.groups
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
