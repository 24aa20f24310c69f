"""One right-sizing run: read the fleet's history through the guarded runner, then recommend and cost.

Prometheus first; then CloudWatch for the workloads measured there (`agent.rightsize.cloudwatch`).
The history tools are called like every other tool (validation, READ ceiling, timeout, audit), with
a Prometheus client whose timeout suits weeks of history. Everything after the read is pure.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent.audit.events import AuditSink
from agent.config import RightsizeConfig, Settings
from agent.guard.runner import ToolRunner
from agent.rightsize.cloudwatch import with_cloudwatch
from agent.rightsize.cost import CostReport, cost_report
from agent.rightsize.engine import Recommendation, recommend_all
from tools.base import Risk, ToolSpec
from tools.prometheus.client import PrometheusClient
from tools.rightsize.catalog import PriceCatalog
from tools.rightsize.history import FleetHistory

_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


class RightsizeError(Exception):
    """The history could not be read; the message says which query failed and why."""


def parse_window(text: str) -> float:
    """`14d`, `36h`, `2w` → seconds. ValueError names the accepted forms."""
    m = re.fullmatch(r"([0-9]+)([hdw])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"window {text!r} is not a duration like 36h, 14d or 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


class RightsizeRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str
    generated_at: dt.datetime
    window: str
    start: dt.datetime
    end: dt.datetime
    step_s: float
    queries: int
    query_seconds: float
    total_seconds: float
    recommendations: list[Recommendation]
    cost: CostReport
    notes: list[str]

    @property
    def total_savings(self) -> float:
        return sum(r.monthly_savings for r in self.recommendations if r.monthly_savings > 0)


def analyse(history: FleetHistory, catalog: PriceCatalog, settings: Settings, *, window: str,
            started: float | None = None) -> RightsizeRun:
    """Recommendations and costs from a history (pure)."""
    cfg = settings.rightsize
    recs = recommend_all(history.workloads, times=history.times, step_s=history.step_s, catalog=catalog, cfg=cfg)
    cost = cost_report(history, catalog)
    return RightsizeRun(cluster=settings.kubernetes.cluster, generated_at=dt.datetime.now(dt.UTC), window=window,
                        start=history.start, end=history.end, step_s=history.step_s, queries=history.queries,
                        query_seconds=history.query_seconds,
                        total_seconds=round(time.monotonic() - started, 3) if started else history.query_seconds,
                        recommendations=recs, cost=cost, notes=history.notes)


def ttft_thresholds(cfg: RightsizeConfig) -> list[float]:
    """Every TTFT p95 threshold the SLOs use (the history reads the histogram only around these)."""
    return sorted({cfg.slo_default.ttft_p95_s, *(s.ttft_p95_s for s in cfg.slo.values())})


async def run(settings: Settings, tools: list[ToolSpec[Any, Any]], audit: AuditSink, *, window: str | None = None,
              end: dt.datetime | None = None, namespaces: list[str] | None = None,
              actor: str = "agent:rightsize") -> RightsizeRun:
    """Read the history (one guarded tool call) and analyse it."""
    t0 = time.monotonic()
    cfg = settings.rightsize
    window = window or cfg.window
    catalog = PriceCatalog.load(cfg.price_catalog)
    prom = PrometheusClient(settings.prometheus.model_copy(update={"timeout_s": cfg.query_timeout_s}))
    runner = ToolRunner(tools, {"prometheus": prom}, audit, max_risk=Risk.READ, timeout_s=cfg.query_timeout_s * 3)
    params: dict[str, Any] = {"window_s": parse_window(window), "namespaces": namespaces or [],
                              "workload_label": cfg.workload_label, "model_label": cfg.model_label,
                              "team_label": cfg.team_label, "ttft_slo_s": ttft_thresholds(cfg)}
    if end is not None:
        params["end"] = end.isoformat()
    try:
        out = await runner.call("rightsize_fleet_history", params, actor=actor)
    finally:
        await prom.aclose()
    if not out.ok or not isinstance(out.result, FleetHistory):
        raise RightsizeError(out.error or "the history tool returned nothing")
    history = await with_cloudwatch(out.result, settings, tools, audit, actor=actor, timeout_s=cfg.query_timeout_s)
    return analyse(history, catalog, settings, window=window, started=t0)
