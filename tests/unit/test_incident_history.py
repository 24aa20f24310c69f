"""Earlier incidents stay out of the baselines, and a critical alert far outside its SLO is never "healthy"."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from langgraph.runtime import Runtime

from agent.audit.events import MemoryAudit
from agent.guard.runner import ToolRunner
from agent.models import Alert, Category, Evidence, EvidenceStatus, Incident, IncidentStatus, Severity
from agent.triage.features import feature_map
from agent.triage.history import LEAD_S, TAIL_S, windows_from
from agent.triage.nodes.diagnose import diagnose
from agent.triage.nodes.propose import proposals_for
from agent.triage.reasoners.rules import RulesReasoner
from agent.triage.runbooks import load_dir
from agent.triage.state import TriageContext, TriageState
from tools.prometheus.summary import SeriesResult
from tools.prometheus.tools import PrometheusRangeResult
from tools.timeseries import Point, SeriesSummary

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
BOOKS = {b.id: b for b in load_dir()}
RUNNER = ToolRunner([], {}, MemoryAudit())


def minutes(m: float) -> dt.datetime:
    return NOW + dt.timedelta(minutes=m)


def alerts_result(active: dict[str, list[tuple[float, float]]]) -> PrometheusRangeResult:
    """`count by (alertname) (ALERTS)` sampled every minute: a series has samples only while active."""
    series = []
    for name, spans in active.items():
        points = [Point(at=minutes(m), value=1.0) for a, b in spans for m in range(int(a), int(b) + 1)]
        series.append(SeriesResult(labels={"alertname": name}, summary=SeriesSummary(points=len(points)),
                                   points=points))
    return PrometheusRangeResult(query="q", executed_query="q", start=minutes(-180), end=NOW, step_s=60,
                                 series_total=len(series), series_dropped=0, series=series)


def test_an_earlier_incident_is_left_out_widened_by_its_lead_and_tail() -> None:
    r = alerts_result({"GPUXidError": [(-90, -80)], "ModelServingErrorRateHigh": [(-4, 0)]})
    [w] = windows_from(r, since=minutes(-4), now=NOW)
    assert w.alertnames == ("GPUXidError",)
    assert w.start == minutes(-90) - dt.timedelta(seconds=LEAD_S)
    assert w.end == minutes(-80) + dt.timedelta(seconds=TAIL_S)


def test_the_current_episode_and_alerts_still_active_are_never_left_out() -> None:
    r = alerts_result({"Watchdog": [(-180, 0)], "ModelServingErrorRateHigh": [(-4, 0)],
                       "ModelServingTTFTHigh": [(-3, 0)]})
    assert windows_from(r, since=minutes(-4), now=NOW) == []


def test_an_earlier_window_never_reaches_into_the_current_incident() -> None:
    # Cleared two minutes before the new fault: its tail is cut before the current incident starts.
    r = alerts_result({"ModelServingErrorRateHigh": [(-30, -10), (-6, 0)]})
    [w] = windows_from(r, since=minutes(-6), now=NOW)
    assert w.end == minutes(-7)


def test_overlapping_earlier_incidents_merge_into_one_window() -> None:
    r = alerts_result({"GPUXidError": [(-100, -90)], "ModelServerCrashLooping": [(-92, -85)],
                       "KVCacheSaturated": [(-40, -35)]})
    ws = windows_from(r, since=minutes(-2), now=NOW)
    assert [w.alertnames for w in ws] == [("GPUXidError", "ModelServerCrashLooping"), ("KVCacheSaturated",)]


# --- the alert's own signal -------------------------------------------------------------------------------

def incident(severity: str = "critical") -> Incident:
    labels = {"alertname": "ModelServingErrorRateHigh", "namespace": "llm-prod", "severity": severity,
              "model_name": "llama-3.1-70b-instruct"}
    alert = Alert(fingerprint="0f1e2d3c4b5a6978", status="firing", labels=labels, starts_at=minutes(-4))
    return Incident(id="inc-1", group_key="g", status=IncidentStatus.FIRING, title="ModelServingErrorRateHigh",
                    severity=Severity.CRITICAL if severity == "critical" else Severity.WARNING, labels=labels,
                    alerts=[alert], created_at=NOW, updated_at=NOW)


def ev(eid: str, **features: Any) -> Evidence:
    return Evidence(id=eid, tool="t", title=eid, params={}, status=EvidenceStatus.OK, summary="", features=features)


# What a sandbox with earlier incidents in the window gave: an old error spike raised the baseline, an old
# traffic dip made today's normal traffic look like a rise, and the onset was dated to the old incident.
POLLUTED = [
    ev("rollout", revisions=10, current_revision=10, previous_revision=9, current_version="2025.07.0",
       previous_version="2025.06.1", changed_ago_s=240, changed_ago_slack_s=420, changed_ago_min=4),
    ev("errors", baseline=0.02, recent=0.07, change_ratio=3.5, onset_ago_s=3600),
    ev("ttft", baseline=0.5, recent=0.6, change_ratio=1.2, onset_ago_s=3600),
    ev("traffic", baseline=5.0, recent=11.0, change_ratio=2.2),
    ev("fleet_errors", value=0.07), ev("fleet_ttft_ratio", value=1.1), ev("fleet_kv", value=0.5),
    ev("fleet_xid", value=0), ev("fleet_crashloops", value=0),
]


def run_diagnose(inc: Incident, evidence: list[Evidence]) -> tuple[TriageState, dict[str, Any]]:
    state: TriageState = {"incident": inc, "runbook_ids": ["bad-rollout", "healthy"], "evidence": evidence,
                          "context": {"namespace": "llm-prod", "model_name": "llama-3.1-70b-instruct",
                                      "deployment": "chat-primary"}}
    ctx = TriageContext(runner=RUNNER, runbooks=list(BOOKS.values()), reasoner=RulesReasoner())
    return state, asyncio.run(diagnose(state, Runtime(context=ctx)))


def test_a_critical_alert_far_outside_its_slo_is_not_answered_healthy() -> None:
    state, out = run_diagnose(incident(), POLLUTED)
    top = out["hypotheses"][0]
    assert top.category == Category.BAD_ROLLOUT, out["narrative"]
    assert "No anomaly" not in out["narrative"] and "0.07" in out["narrative"]
    healthy = next(h for h in out["hypotheses"] if h.category == Category.HEALTHY)
    assert healthy.confidence == 0.0 and any("far outside" in a for a in healthy.against)
    props = proposals_for(top, [BOOKS["bad-rollout"]], feature_map(state))
    assert [p.params for p in props] == [{"to_revision": 9}]


def test_nothing_known_fits_so_it_is_inconclusive_not_healthy() -> None:
    # No rollout history: no specific hypothesis holds, but 7 % of requests failing is not healthy.
    evidence = [e for e in POLLUTED if e.id != "rollout"]
    _, out = run_diagnose(incident(), evidence)
    assert out["hypotheses"][0].category != Category.HEALTHY
    assert out["narrative"].startswith("Inconclusive") and "page a human" in out["narrative"].lower()


def test_a_signal_back_within_its_slo_may_still_be_healthy() -> None:
    # A flapping alert whose signal already recovered: "healthy" stays available.
    evidence = [e for e in POLLUTED if e.id not in ("errors", "fleet_errors", "rollout")]
    evidence += [ev("errors", baseline=0.004, recent=0.005, change_ratio=1.2), ev("fleet_errors", value=0.005)]
    _, out = run_diagnose(incident(), evidence)
    assert out["hypotheses"][0].category == Category.HEALTHY


# --- a shift too recent for the change-point test ---------------------------------------------------------

def test_a_shift_in_the_last_samples_is_dated_and_measured_against_the_usual_level() -> None:
    from agent.triage.features import series_features
    from tools.timeseries import summarize

    t0 = NOW.timestamp() - 120 * 60
    # Two hours of a 0.1 % error share with an old excursion to 7 % (an earlier incident nobody excluded),
    # then the last two samples at 7 %: too short a segment for the change-point test.
    values = [0.001 + 0.0002 * (i % 3) for i in range(120)]
    values[30:45] = [0.07] * 15
    values[118:] = [0.07, 0.07]
    summary = summarize([(t0 + 60 * i, v) for i, v in enumerate(values)])
    f = series_features(summary, NOW)
    assert f["baseline"] == pytest.approx(0.0012) and f["change_ratio"] > 50
    assert f["onset_ago_s"] <= 120, "dated to the last two samples, not the old excursion"


def test_a_level_series_with_noise_has_no_recent_shift() -> None:
    from tools.timeseries import summarize

    t0 = NOW.timestamp() - 120 * 60
    values = [10.0 * (1 + 0.05 * ((i * 7) % 5 - 2)) for i in range(120)]
    assert summarize([(t0 + 60 * i, v) for i, v in enumerate(values)]).recent_shift is None


def test_an_alert_of_another_pod_that_ended_just_before_is_an_earlier_incident() -> None:
    # Same alert name, two pods: the crash loop of the rolled-back pod ended a minute before this one began.
    r = alerts_result({"ModelServerCrashLooping": [(-12, -3)]})
    r.series.append(SeriesResult(labels={"alertname": "ModelServerCrashLooping", "pod": "b"},
                                 summary=SeriesSummary(points=3), points=[Point(at=minutes(m), value=1.0)
                                                                          for m in (-2, -1, 0)]))
    [w] = windows_from(r, since=minutes(-2), now=NOW)
    assert w.end == minutes(-3)
