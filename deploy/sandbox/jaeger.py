"""Jaeger for the sandbox: OTLP in, the query API out, traces in memory, everything on 127.0.0.1.

Started on demand (the trace tests, `opsagent sandbox jaeger`), not by `sandbox up`: the demo does not
need it. The process is recorded by the sandbox's Supervisor, so `opsagent sandbox down` stops it too.
The binary is Jaeger v1's all-in-one built from its Go module by build-components.sh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.sandbox.processes import Proc, StartError, Supervisor

NAME = "jaeger"
# Offsets from the sandbox's port base; none collides with the sandbox's own (50 … 443).
OTLP_HTTP, OTLP_GRPC, QUERY_HTTP, QUERY_GRPC, ADMIN, COLLECTOR_HTTP, COLLECTOR_GRPC = (
    318, 317, 686, 685, 269, 268, 250)


@dataclass(frozen=True)
class JaegerEndpoints:
    otlp_http: str  # what tracing.endpoint points at (the exporter appends /v1/traces)
    query: str  # Jaeger's query API and UI: /api/traces, /api/services, /trace/ID
    admin: str

    @classmethod
    def for_base(cls, base: int) -> JaegerEndpoints:
        h = "127.0.0.1"
        return cls(otlp_http=f"http://{h}:{base + OTLP_HTTP}", query=f"http://{h}:{base + QUERY_HTTP}",
                   admin=f"http://{h}:{base + ADMIN}")


def argv(binary: Path, base: int) -> list[str]:
    h = "127.0.0.1"
    return [str(binary),
            f"--collector.otlp.http.host-port={h}:{base + OTLP_HTTP}",
            f"--collector.otlp.grpc.host-port={h}:{base + OTLP_GRPC}",
            f"--collector.http-server.host-port={h}:{base + COLLECTOR_HTTP}",
            f"--collector.grpc-server.host-port={h}:{base + COLLECTOR_GRPC}",
            f"--query.http-server.host-port={h}:{base + QUERY_HTTP}",
            f"--query.grpc-server.host-port={h}:{base + QUERY_GRPC}",
            f"--admin.http.host-port={h}:{base + ADMIN}",
            "--memory.max-traces=20000"]


def start(sup: Supervisor, binary: Path, base: int, timeout: float = 60) -> JaegerEndpoints:
    """Start Jaeger (or find it running) and wait until its query API answers."""
    ep = JaegerEndpoints.for_base(base)
    running = sup.running().get(NAME)
    proc: Proc = running or sup.start(NAME, argv(binary, base), env={"SPAN_STORAGE_TYPE": "memory"})

    def ready() -> bool:
        return httpx.get(f"{ep.query}/api/services", timeout=2).status_code == 200

    try:
        sup.wait_ready(proc, ready, timeout, "answering its query API")
    except StartError:
        sup.stop(NAME)  # not left recorded: a dead Jaeger would mark the whole sandbox degraded
        raise
    return ep


def stop(sup: Supervisor) -> bool:
    return sup.stop(NAME)


def traces(ep: JaegerEndpoints, service: str, tags: dict[str, str] | None = None,
           limit: int = 20) -> list[dict[str, Any]]:
    """Traces of `service` (optionally with these span tags) from Jaeger's query API."""
    q = {"service": service, "limit": str(limit), "lookback": "1h"}
    if tags:
        q["tags"] = json.dumps(tags)
    resp = httpx.get(f"{ep.query}/api/traces", params=q, timeout=10)
    resp.raise_for_status()
    return list(resp.json()["data"] or [])
