"""Find the earlier incidents inside the evidence window, so baselines leave them out.

A fleet that already had incidents today carries them in every series the evidence reads: an old
error spike or a traffic dip from a lost node becomes the "baseline" and the incident at hand looks
normal next to it. Prometheus records every alert it evaluated as the `ALERTS` series, so the times
when some alert was pending or firing are known. Each such stretch that ended before the current
incident began, widened by the time the signals take to rise before an alert and to settle after it,
is left out of the summaries of every range query of this triage. The current incident's own
stretch, and any alert still active, is never left out.

This module only reads; it must not decide anything about the incident itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent.guard.runner import ToolRunner
from agent.models import Evidence, EvidenceStatus, Incident
from tools.prometheus.tools import PrometheusRangeResult

EVIDENCE_ID = "incident_history"
# One series per alert identity (its labels, pending and firing merged): two pods' alerts of the same
# name are two incidents, not one that never ended.
QUERY = "max without (alertstate) (ALERTS)"
STEP_S = 60
# A fault shows in the signals before its alert goes pending (the alert's own rate window), and the
# evidence queries' 5-minute rates keep an excursion visible for up to 5 minutes after it ends.
LEAD_S = 180
TAIL_S = 300
GUARD_S = 60  # never widen an earlier window to within this of the current incident's start


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    alertnames: tuple[str, ...]


def current_start(incident: Incident, now: dt.datetime) -> dt.datetime:
    firing = [a.starts_at for a in incident.alerts if a.status == "firing"]
    return min(firing) if firing else now


def windows_from(result: PrometheusRangeResult, since: dt.datetime, now: dt.datetime) -> list[Window]:
    """Merged, widened stretches of alert activity that ended before `since` (the current incident)."""
    step = dt.timedelta(seconds=max(result.step_s, 1.0))
    runs: list[Window] = []
    for s in result.series:
        name = str(s.labels.get("alertname", "?"))
        times = sorted(p.at for p in (s.points or []) if p.value is not None)
        first = prev = None
        for t in [*times, None]:
            if t is not None and prev is not None and t - prev <= 2 * step:
                prev = t
                continue
            if first is not None and prev is not None and prev < since and prev < now - 2 * step:
                end = min(prev + dt.timedelta(seconds=TAIL_S), since - dt.timedelta(seconds=GUARD_S))
                start = first - dt.timedelta(seconds=LEAD_S)
                if end > start:
                    runs.append(Window(start, end, (name,)))
            first = prev = t
    merged: list[Window] = []
    for w in sorted(runs, key=lambda w: w.start):
        if merged and w.start <= merged[-1].end:
            last = merged[-1]
            names = tuple(sorted(set(last.alertnames) | set(w.alertnames)))
            merged[-1] = Window(last.start, max(last.end, w.end), names)
        else:
            merged.append(w)
    return merged


async def earlier_incidents(runner: ToolRunner, actor: str, incident: Incident, now: dt.datetime,
                            lookback_s: int) -> tuple[list[Window], Evidence]:
    """Query `ALERTS` over the lookback; return the earlier windows and the evidence that shows them."""
    params = {"query": QUERY, "lookback_s": lookback_s, "step_s": STEP_S, "include_points": True,
              "points": 200, "max_series": 200}
    title = "Earlier alerts in the window (left out of the baselines)"
    outcome = await runner.call("prometheus_query_range", params, actor=actor, incident_id=incident.id)
    ended = outcome.started + dt.timedelta(milliseconds=outcome.duration_ms)
    result = outcome.result
    if not outcome.ok or not isinstance(result, PrometheusRangeResult):
        return [], Evidence(
            id=EVIDENCE_ID, tool="prometheus_query_range", title=title, params=params, status=EvidenceStatus.ERROR,
            summary="missing: " + (outcome.error or "no result") + "; baselines may include earlier incidents",
            error=outcome.error, started=outcome.started, ended=ended, duration_ms=outcome.duration_ms)
    windows = windows_from(result, current_start(incident, now), now)
    if windows:
        shown = ", ".join(f"{w.start:%H:%M}–{w.end:%H:%M} ({', '.join(w.alertnames)[:80]})" for w in windows[:6])
        summary = f"{len(windows)} earlier incident window(s) left out of the baselines: {shown}"
    else:
        summary = "no earlier alerts in the window; baselines use every sample"
    return windows, Evidence(
        id=EVIDENCE_ID, tool="prometheus_query_range", title=title, params=params, status=EvidenceStatus.OK,
        summary=summary, features={"windows": len(windows)}, started=outcome.started, ended=ended,
        duration_ms=outcome.duration_ms)


def exclusion_param(windows: list[Window]) -> list[dict[str, str]]:
    return [{"start": w.start.isoformat(), "end": w.end.isoformat()} for w in windows[-50:]]
