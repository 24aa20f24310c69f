"""Benchmark triage: alert → report latency with the rules reasoner, and queries per incident.

Runs against a running sandbox (`opsagent sandbox up`). Each iteration records a fresh incident from
an Alertmanager webhook body (the bad-rollout fixture with a new group key, so every run is a new
incident) and triages it end to end: runbook matching, Kubernetes and Prometheus evidence,
hypotheses, proposals, the report stored.

With `--jaeger`, the same run twice more, interleaved: tracing off and tracing on (OTLP to a Jaeger
started in the sandbox), and the overhead of tracing on the median and p95 latency.

Run: uv run python tests/benchmarks/bench_triage.py --sandbox-dir DIR [--incidents 30] [--jaeger]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent import incidents
from agent.app import build_app
from agent.entry.commands.common import settings_for
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

FIXTURES = Path(__file__).parents[1] / "fixtures"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox-dir", type=Path, required=True)
    ap.add_argument("--port-base", type=int, default=17000)
    ap.add_argument("--incidents", type=int, default=30)
    ap.add_argument("--jaeger", action="store_true", help="Also measure the overhead of tracing to Jaeger.")
    args = ap.parse_args()
    if args.jaeger:
        tracing_overhead(args)
        return
    status = Sandbox(SandboxSettings(dir=args.sandbox_dir, port_base=args.port_base)).status()
    if status["state"] != "up":
        raise SystemExit(f"sandbox in {args.sandbox_dir} is {status['state']}")
    body: dict[str, Any] = json.loads((FIXTURES / "alertmanager_bad_rollout.json").read_text())
    with tempfile.TemporaryDirectory() as state:
        app = build_app(settings_for(None, status, state_dir=state))
        latencies: list[float] = []
        queries: list[int] = []
        prom_queries: list[int] = []

        async def run() -> None:
            for i in range(args.incidents):
                body["groupKey"] = f"bench-{i}-{time.time()}"
                note = incidents.parse(json.dumps(body).encode())
                t0 = time.perf_counter()
                incident, _ = app.store.record_notification(note, dt.datetime.now(dt.UTC))
                report = await app.triage(incident)
                latencies.append(time.perf_counter() - t0)
                queries.append(len(report.evidence))
                prom_queries.append(sum(1 for e in report.evidence if e.tool.startswith("prometheus_")))
            await app.aclose_clients()

        asyncio.run(run())
        app.close()
    lat = sorted(latencies)
    p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
    print(f"incidents: {len(lat)} (rules reasoner, runbooks: bad-rollout, gpu-oom, healthy)")
    print(f"alert → report latency: p50 {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms")
    print(f"evidence queries per incident: {statistics.mean(queries):.1f} "
          f"(Prometheus {statistics.mean(prom_queries):.1f}, plus 1 workload lookup)")


def tracing_overhead(args: argparse.Namespace) -> None:
    """Alternate blocks of incidents with tracing off and on in one process (same sandbox, same load)."""
    from agent.telemetry import flush_tracing, setup_tracing
    from deploy.sandbox import components, jaeger

    sb = Sandbox(SandboxSettings(dir=args.sandbox_dir, port_base=args.port_base))
    status = sb.status()
    ep = jaeger.start(sb.sup, components.locate(components.default_cache_dir()).jaeger, args.port_base)
    body: dict[str, Any] = json.loads((FIXTURES / "alertmanager_bad_rollout.json").read_text())
    lat: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as state:
        settings = settings_for(None, status, state_dir=state,
                                tracing={"enabled": True, "endpoint": ep.otlp_http, "service_name": "opsagent-bench"})
        provider = setup_tracing(settings.tracing)
        from opentelemetry import trace
        from opentelemetry.trace import NoOpTracerProvider

        app = build_app(settings)

        async def run() -> None:
            for i in range(2 * args.incidents):
                on = (i // 5) % 2 == 1  # blocks of five: off, on, off, on …
                # Off is exactly what a process without tracing has: the API's no-op provider.
                # The global provider can be set once; swap what trace.get_tracer() resolves to.
                trace._TRACER_PROVIDER = provider if on else NoOpTracerProvider()  # type: ignore[attr-defined]
                body["groupKey"] = f"bench-trace-{i}-{time.time()}"
                note = incidents.parse(json.dumps(body).encode())
                t0 = time.perf_counter()
                incident, _ = app.store.record_notification(note, dt.datetime.now(dt.UTC))
                await app.triage(incident)
                lat[on].append(time.perf_counter() - t0)
            await app.aclose_clients()

        asyncio.run(run())
        app.close()
        flush_tracing()
    spans = sum(len(t["spans"]) for t in jaeger.traces(ep, "opsagent-bench", limit=1000))
    for on in (False, True):
        xs = sorted(lat[on])
        print(f"tracing {'on ' if on else 'off'}: {len(xs)} triages, p50 {statistics.median(xs) * 1000:.0f} ms, "
              f"p95 {xs[max(0, round(0.95 * len(xs)) - 1)] * 1000:.0f} ms, mean {statistics.mean(xs) * 1000:.0f} ms")
    off, on_ = statistics.median(lat[False]), statistics.median(lat[True])
    mean_off, mean_on = statistics.mean(lat[False]), statistics.mean(lat[True])
    print(f"tracing overhead on the median: {100 * (on_ - off) / off:+.1f} % "
          f"(on the mean {100 * (mean_on - mean_off) / mean_off:+.1f} %); {spans} spans in Jaeger")


if __name__ == "__main__":
    main()
