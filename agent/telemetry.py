"""Traces: one tracer for the agent, exported over OTLP when `tracing.enabled`, free when not.

Each triage and each change run is a trace; graph nodes, tool calls, model calls, the policy
decision, approvals, execution and verification are spans in it, with the incident and change ids as
attributes so a Slack message or a report can link to them. Spans are created through the
OpenTelemetry API only; until an entry point calls `setup_tracing` with tracing on, the API hands out
non-recording spans (no exporter, no thread, nothing kept), and callers skip building costly
attributes with `span.is_recording()`.

This module must not import the rest of the agent (it sits under everything that traces).
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from agent.config import TracingConfig

TRACER_NAME = "opsagent"
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_provider: Any = None  # the SDK provider this process installed, if any


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def setup_tracing(cfg: TracingConfig) -> Any:
    """Install an OTLP/HTTP exporting provider when `cfg.enabled` (once per process); None when off.

    The SDK is imported only here, so a process with tracing off never loads it.
    """
    global _provider
    if not cfg.enabled:
        return None
    if _provider is not None:
        return _provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}),
                              sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
    exporter = OTLPSpanExporter(endpoint=cfg.endpoint.rstrip("/") + "/v1/traces", timeout=cfg.timeout_s,
                                headers={k: v.get_secret_value() for k, v in cfg.headers.items()})
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def flush_tracing(timeout_s: float = 10) -> bool:
    """Export what is buffered (a CLI command ends before the batch timer fires); True when nothing is lost."""
    if _provider is None:
        return True
    return bool(_provider.force_flush(int(timeout_s * 1000)))


def trace_id(span: Span | None = None) -> str | None:
    """The current (or given) span's trace id as Jaeger shows it, None when not recording."""
    span = span or trace.get_current_span()
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if span.is_recording() and ctx.is_valid else None


def trace_url(cfg: TracingConfig, *, trace_id: str | None = None, incident_id: str | None = None) -> str | None:
    """A link into the Jaeger UI: one trace, or every trace tagged with the incident; None without `ui_url`."""
    if not cfg.enabled or cfg.ui_url is None:
        return None
    base = cfg.ui_url.rstrip("/")
    if trace_id:
        return f"{base}/trace/{trace_id}"
    if incident_id:
        tags = json.dumps({"incident.id": incident_id}, separators=(",", ":"))
        return f"{base}/search?service={urllib.parse.quote(cfg.service_name)}&tags={urllib.parse.quote(tags)}"
    return None


def record_error(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message[:500]))


def traced_node(name: str, fn: F) -> F:
    """A graph node wrapped in a span `node NAME`; the wrapper keeps the `(state, runtime)` signature
    LangGraph inspects to inject the runtime."""

    @functools.wraps(fn)
    async def node(state: Any, runtime: Any) -> Any:
        with tracer().start_as_current_span(f"node {name}", attributes={"graph.node": name},
                                            record_exception=False, set_status_on_exception=False) as span:
            try:
                out = await fn(state, runtime)
            except GraphBubbleUp:  # interrupt(): the graph waits (for an approval); not an error
                span.set_attribute("graph.interrupted", True)
                raise
            except Exception as e:
                span.record_exception(e)
                record_error(span, f"{type(e).__name__}: {e}")
                raise
            if isinstance(out, dict) and span.is_recording():  # what the node decided: stage, verdict
                span.set_attributes({f"node.{k}": str(out[k])[:500] for k in ("stage", "detail", "verification")
                                     if out.get(k) is not None})
            return out

    return cast(F, node)
