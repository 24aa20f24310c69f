"""Tracing off costs nothing a user would pay for: no provider, no exporter thread, no trace ids; links are
built only when tracing is on and a UI is configured. (The export itself is tested against Jaeger in
tests/integration/test_tracing.py, in a process of its own: a provider can be installed once per process.)"""

from __future__ import annotations

import json
import threading
import urllib.parse

from agent.config import TracingConfig
from agent.telemetry import setup_tracing, trace_id, trace_url, tracer


def test_tracing_off_installs_nothing_and_records_nothing() -> None:
    before = {t.name for t in threading.enumerate()}
    assert setup_tracing(TracingConfig()) is None
    with tracer().start_as_current_span("triage", attributes={"incident.id": "inc-1"}) as span:
        assert not span.is_recording()
        assert trace_id() is None
    assert {t.name for t in threading.enumerate()} == before, "no exporter thread when tracing is off"


def test_links_need_tracing_on_and_a_ui() -> None:
    assert trace_url(TracingConfig(ui_url="https://jaeger.example"), trace_id="ab" * 16) is None  # tracing off
    on = TracingConfig(enabled=True, ui_url="https://jaeger.example/", service_name="ops agent")
    assert trace_url(on, trace_id="ab" * 16) == "https://jaeger.example/trace/" + "ab" * 16
    search = urllib.parse.urlsplit(trace_url(on, incident_id='inc-"1"') or "")
    q = urllib.parse.parse_qs(search.query)
    assert search.path == "/search" and q["service"] == ["ops agent"]
    assert json.loads(q["tags"][0]) == {"incident.id": 'inc-"1"'}  # quoted, so an odd id cannot break the link
    assert trace_url(TracingConfig(enabled=True), incident_id="inc-1") is None  # no UI configured


def test_the_triage_message_in_slack_links_to_its_trace() -> None:
    import datetime as dt

    from agent.entry.slack.blocks import triage_details
    from agent.models import TriageReport

    now = dt.datetime.now(dt.UTC)
    report = TriageReport(incident_id="inc-1", title="t", summary="s", status="anomaly", hypotheses=[], evidence=[],
                          proposals=[], runbooks=[], reasoner="rules", started=now, finished=now, trace_id="ab" * 16)
    on = TracingConfig(enabled=True, ui_url="https://jaeger.example")
    shown = json.dumps(triage_details(report, trace_url(on, trace_id=report.trace_id)))
    assert "<https://jaeger.example/trace/" + "ab" * 16 + "|Trace of this triage>" in shown
    off = json.dumps(triage_details(report, trace_url(TracingConfig(), trace_id=report.trace_id)))
    assert "Trace of this triage" not in off
