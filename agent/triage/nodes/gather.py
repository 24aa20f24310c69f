"""Gather node: run the matched runbooks' evidence queries, bounded and in parallel.

Parameters are filled from the triage context. Values from alert labels are untrusted: inside PromQL
they are escaped as string literals, everywhere else they are passed as typed tool parameters that
the tool's input model validates. A query whose placeholders cannot be filled is skipped and says
so; a failed query becomes evidence marked `error` with what was tried — never an exception.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

from langgraph.runtime import Runtime

from agent.guard.redact import redact, redact_obj
from agent.guard.runner import ToolRunner
from agent.models import Evidence, EvidenceStatus
from agent.triage.conditions import compile_value, evaluate_value
from agent.triage.features import extract, feature_map, summarize
from agent.triage.history import earlier_incidents, exclusion_param
from agent.triage.nodes.resolve import pods_pattern, resolve_context
from agent.triage.runbooks import EvidenceQuery, placeholders
from agent.triage.state import TriageContext, TriageState
from tools.prometheus.promql import escape_string

PROMQL_KEYS = {"query", "promql", "expr"}
_PH = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def fill(value: Any, context: dict[str, str], *, promql: bool = False) -> Any:
    """Replace `{key}` placeholders with context values (escaped for PromQL string literals)."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            v = context[m.group(1)]
            return escape_string(v) if promql else v
        return _PH.sub(sub, value)
    if isinstance(value, dict):
        return {k: fill(v, context, promql=promql or k in PROMQL_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, context, promql=promql) for v in value]
    return value


async def run_query(q: EvidenceQuery, context: dict[str, str], runner: ToolRunner, actor: str,
                    incident_id: str, exclude: list[dict[str, str]] | None = None,
                    logs_since: dt.datetime | None = None, now: dt.datetime | None = None) -> Evidence:
    needed = placeholders(q.params) | set(q.requires)
    absent = sorted(k for k in needed if not context.get(k))
    if absent:
        return Evidence(id=q.id, tool=q.tool, title=q.title, params=q.params, status=EvidenceStatus.SKIPPED,
                        summary=f"skipped: the alert and the cluster did not tell {', '.join(absent)}")
    params = fill(q.params, context)
    if exclude and q.tool == "prometheus_query_range":
        params = {**params, "exclude": exclude}
    if logs_since is not None and q.tool == "cloudwatch_filter_log_events" and "start" not in params:
        # Log lines of an earlier incident (a crash it logged) are not evidence about this one.
        lookback = dt.timedelta(seconds=int(params.get("lookback_s", 3600)))
        at = now or dt.datetime.now(dt.UTC)
        if at - lookback < logs_since < at:
            params = {**params, "start": logs_since.isoformat()}
    outcome = await runner.call(q.tool, params, actor=actor, incident_id=incident_id)
    ended = outcome.started + dt.timedelta(milliseconds=outcome.duration_ms)
    # Redacted here, where evidence is made: reports, Slack, GET /incidents, logs and the model read this copy.
    if not outcome.ok or outcome.result is None:
        error = redact(outcome.error) if outcome.error else None
        return Evidence(id=q.id, tool=q.tool, title=q.title, params=params, status=EvidenceStatus.ERROR,
                        summary="missing: " + (error or "no result"), error=error,
                        started=outcome.started, ended=ended, duration_ms=outcome.duration_ms)
    features = extract(outcome.result, context)
    empty = bool(features.pop("_empty", False))
    return Evidence(id=q.id, tool=q.tool, title=q.title, params=params,
                    status=EvidenceStatus.EMPTY if empty else EvidenceStatus.OK,
                    summary=redact(summarize(outcome.result, features)), features=redact_obj(features),
                    data=redact_obj(outcome.result.model_dump(mode="json")), started=outcome.started, ended=ended,
                    duration_ms=outcome.duration_ms)


async def gather(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    ctx = runtime.context
    incident = state["incident"]
    context = dict(state.get("context", {}))
    context |= await resolve_context(context, ctx.runner, ctx.actor, incident.id)
    context["pods"] = pods_pattern(context)  # never from a label: LABEL_KEYS has no `pods`
    books = [b for b in ctx.runbooks if b.id in state.get("runbook_ids", [])]
    seen: dict[str, EvidenceQuery] = {}
    for b in books:
        for q in b.evidence:
            seen.setdefault(q.id, q)  # runbooks share evidence ids on purpose: one query, many readers
    # Earlier incidents in the window would become the baselines the current one is measured against.
    now = ctx.now or dt.datetime.now(dt.UTC)
    windows, history = await earlier_incidents(ctx.runner, ctx.actor, incident, now, ctx.lookback_s)
    exclude = exclusion_param(windows) or None
    logs_since = windows[-1].end if windows else None
    evidence = list(await asyncio.gather(*(run_query(q, context, ctx.runner, ctx.actor, incident.id, exclude,
                                                     logs_since, now) for q in seen.values())))
    evidence.append(history)
    # Context the alert did not carry but the evidence reveals (e.g. which node reports the XID).
    feats = feature_map({"context": context, "evidence": evidence})
    derived: set[str] = set()
    for b in books:
        for key, expr in b.derive.items():
            if not context.get(key) and (v := evaluate_value(compile_value(expr), feats)) not in (None, ""):
                context[key] = str(v)
                derived.add(key)
    # A second, last round for the queries that waited on what the first one revealed (the previous
    # revision's version, to read how it behaved while it served). Never a third: no chains.
    waiting = [i for i, e in enumerate(evidence) if e.status == EvidenceStatus.SKIPPED and e.id in seen
               and (placeholders(seen[e.id].params) | set(seen[e.id].requires)) & derived]
    if waiting:
        again = await asyncio.gather(*(run_query(seen[evidence[i].id], context, ctx.runner, ctx.actor, incident.id,
                                                 exclude, logs_since, now) for i in waiting))
        for i, e in zip(waiting, again, strict=True):
            evidence[i] = e
    return {"context": context, "evidence": evidence}
