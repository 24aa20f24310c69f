"""The one guarded door every tool call goes through.

Tools don't check policy, write audit or time themselves out; this runner does, for every call,
whoever asks (the rules engine, an LLM, a human in chat): it validates the parameters against the
tool's input model, refuses tools above the caller's risk ceiling (triage and chat run with READ),
bounds the call in time, audits the outcome — allowed, refused or failed — and turns failures into
an outcome that says what was tried, so missing evidence is reported rather than raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.audit.events import AuditEvent, AuditKind, AuditSink, inputs_hash
from agent.telemetry import record_error, tracer
from tools.base import Risk, ToolError, ToolResult, ToolSpec

log = logging.getLogger(__name__)


class ToolOutcome(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool: str
    params: dict[str, Any]
    ok: bool
    result: ToolResult | None = None
    error: str | None = None
    refused: bool = False
    error_type: str | None = Field(default=None, description="The tool error's class, e.g. Conflict (HTTP 409).")
    retryable: bool = False
    duration_ms: float = 0.0
    started: dt.datetime


class ToolRunner:
    """Runs registered tools with validation, a risk ceiling, a timeout and audit."""

    def __init__(
        self,
        tools: Sequence[ToolSpec[Any, Any]],
        clients: Mapping[str, Any],
        audit: AuditSink,
        *,
        max_risk: Risk = Risk.READ,
        timeout_s: float = 15.0,
        concurrency: int = 8,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.clients = clients
        self.audit = audit
        self.max_risk = max_risk
        self.timeout_s = timeout_s
        self._sem = asyncio.Semaphore(concurrency)
        self.calls = 0

    def specs(self) -> list[ToolSpec[Any, Any]]:
        return [t for t in self.tools.values() if t.risk <= self.max_risk]

    async def call(self, name: str, params: Mapping[str, Any], *, actor: str,
                   incident_id: str | None = None) -> ToolOutcome:
        """Run one tool call in its trace span (`tool NAME`: query or path, outcome, duration, items)."""
        with tracer().start_as_current_span(f"tool {name}") as span:
            out = await self._call(name, params, actor=actor, incident_id=incident_id)
            if span.is_recording():
                span.set_attributes(_span_attributes(out, actor, incident_id))
                if not out.ok:
                    record_error(span, out.error or "failed")
            return out

    async def _call(self, name: str, params: Mapping[str, Any], *, actor: str,
                    incident_id: str | None) -> ToolOutcome:
        started = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        params = dict(params)
        self.calls += 1

        def finish(ok: bool, *, result: ToolResult | None = None, error: str | None = None,
                   refused: bool = False, error_type: str | None = None, retryable: bool = False) -> ToolOutcome:
            ms = (time.monotonic() - t0) * 1000
            decision = "allowed" if ok else ("refused" if refused else "error")
            self.audit.append(AuditEvent(
                at=started, kind=AuditKind.TOOL_CALL, actor=actor, action=name, incident_id=incident_id,
                inputs_hash=inputs_hash(params), decision=decision, reason=error or "", duration_ms=round(ms, 1),
                result={"ok": ok},
            ))
            return ToolOutcome(tool=name, params=params, ok=ok, result=result, error=error, refused=refused,
                               error_type=error_type, retryable=retryable, duration_ms=ms, started=started)

        spec = self.tools.get(name)
        if spec is None:
            return finish(False, error=f"unknown tool {name!r}; available: {', '.join(sorted(self.tools))}",
                          refused=True)
        if spec.risk > self.max_risk:
            return finish(False, refused=True,
                          error=f"tool {name} has risk {spec.risk.name.lower()}, above this caller's ceiling "
                                f"({self.max_risk.name.lower()}); changes go through a change request")
        try:
            parsed = spec.input.model_validate(params)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
            return finish(False, error=f"invalid parameters for {name}: {problems}")
        client = self.clients.get(spec.client)
        if client is None:
            return finish(False, error=f"{name} needs the {spec.client} integration, which is not configured")
        try:
            async with self._sem:
                result = await asyncio.wait_for(spec.fn(client, parsed), timeout=self.timeout_s)
        except TimeoutError:
            return finish(False, error=f"{name} timed out after {self.timeout_s:.0f}s with params {params}")
        except ToolError as e:
            return finish(False, error=str(e), error_type=type(e).__name__, retryable=e.retryable)
        except Exception as e:  # a tool bug must not take the triage down; it is audited and reported
            log.exception("tool %s failed", name)
            return finish(False, error=f"{name} failed unexpectedly: {type(e).__name__}: {e}")
        return finish(True, result=result)


# Parameters that say what a call asked upstream for: the PromQL, the CloudWatch metric, the object path.
_QUERY_KEYS = ("query", "promql", "metric_name", "path")


def _span_attributes(out: ToolOutcome, actor: str, incident_id: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "tool.name": out.tool, "tool.actor": actor, "tool.duration_ms": round(out.duration_ms, 1),
        "tool.outcome": "ok" if out.ok else ("refused" if out.refused else "error"),
        "tool.params": json.dumps(out.params, default=str, sort_keys=True)[:2000],
    }
    if incident_id:
        attrs["incident.id"] = incident_id
    query = next((str(out.params[k]) for k in _QUERY_KEYS if out.params.get(k)), None)
    if query is None and out.params.get("name"):  # a Kubernetes object: the path the read goes to
        query = "/".join(str(out.params[k]) for k in ("kind", "namespace", "name") if out.params.get(k))
    if query:
        attrs["tool.query"] = query[:2000]
    if out.result is not None:  # series, events, revisions … returned: every list in the result
        attrs["tool.items"] = sum(len(v) for v in vars(out.result).values() if isinstance(v, list | tuple | dict))
    if out.error:
        attrs["tool.error"] = out.error[:1000]
    return attrs
