"""Post-incident reports: posted once in the incident's Slack thread when Alertmanager reports it resolved (the
real Bolt app over loopback, the Slack Web API stand-in), and printed by `opsagent incident report ID` as
Markdown, JSON and HTML; the HTML opens in headless Chromium and shows its coloured timeline."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from agent.app import App, build_app
from agent.entry.cli import app as cli
from agent.entry.server import Metrics
from agent.entry.slack.service import build_server
from tests.serving import serve
from tests.slack_standin import SlackStandIn, offline_settings, render

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _resolved(body: dict[str, Any]) -> bytes:
    end = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    out = json.loads(json.dumps(body))
    out["status"] = "resolved"
    for a in out["alerts"]:
        a["status"], a["endsAt"] = "resolved", end
    return json.dumps(out).encode()


@pytest.fixture
def resolved_incident(tmp_path: Path) -> Iterator[tuple[App, SlackStandIn, str, Path]]:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        settings = offline_settings(tmp_path, api_url, "s3cret-signing", "C0INCIDENT",
                                    tracing={"enabled": False, "ui_url": "https://jaeger.example"})
        app = build_app(settings)
        asgi, _bot = build_server(app, metrics=Metrics())
        try:
            with serve(asgi) as url:
                body = json.loads(FIXTURE.read_text())
                r = httpx.post(f"{url}/alertmanager", content=json.dumps(body).encode(), timeout=10)
                incident_id = str(r.json()["incident"])
                api.wait(lambda: app.store.latest_report(incident_id), what="the triage report")
                api.wait(lambda: [c for c in api.of("chat.postMessage") if render(c.args).startswith("*Triage*")],
                         what="the triage in the thread")
                for _ in range(2):  # a redelivered "resolved" must not post the report twice
                    assert httpx.post(f"{url}/alertmanager", content=_resolved(body), timeout=10).status_code == 200
                api.wait(lambda: [c for c in api.of("chat.postMessage")
                                  if "Post-incident report" in render(c.args)], what="the post-incident report")
                time.sleep(1.0)
                yield app, api, incident_id, tmp_path / "state"
        finally:
            app.close()


def test_resolution_posts_the_report_once_in_the_incidents_thread(resolved_incident: Any) -> None:
    _app, api, _incident_id, _ = resolved_incident
    top = next(c for c in api.of("chat.postMessage") if not c.args.get("thread_ts"))
    posts = [c for c in api.of("chat.postMessage") if "Post-incident report" in render(c.args)]
    assert len(posts) == 1, "one report per resolution, however often Alertmanager says so"
    assert posts[0].args["thread_ts"] == top.args["_ts"]
    text = render(posts[0].args)
    for kind in ("*alert*", "*incident*", "*triage*", "*resolution*"):
        assert kind in text, f"{kind} missing from the timeline: {text}"
    assert "detect" in text and "triage" in text and "mitigate" in text and "audit records" in text


def test_cli_report_in_md_json_and_html(resolved_incident: Any, tmp_path: Path) -> None:
    _app, _, incident_id, state = resolved_incident
    env = {"OPSAGENT_STATE_DIR": str(state)}
    r = CliRunner().invoke(cli, ["incident", "report", incident_id, "--format", "json"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    kinds = [e["kind"] for e in doc["timeline"]]
    assert kinds[0] == "alert" and kinds[-1] == "resolution" and "triage" in kinds
    times = [e["at"] for e in doc["timeline"]]
    assert times == sorted(times), "the timeline is in time order"
    assert doc["time_to_triage_s"] is not None and doc["time_to_detect_s"] is not None
    assert doc["time_to_mitigate_s"] is not None  # resolved: mitigated by the resolution at the latest
    # The offline Prometheus and apiserver could not be read: the report says so rather than staying silent.
    assert doc["not_checked"], "evidence that failed is listed as not checked"
    assert doc["audit_records"] and all(a["hash"] for a in doc["audit_records"])
    assert doc["trace_url"] is None  # tracing off: no link to a trace that does not exist
    md = CliRunner().invoke(cli, ["incident", "report", incident_id], env=env)
    assert md.exit_code == 0 and "## Timeline" in md.output and "## What the agent could not check" in md.output
    missing = CliRunner().invoke(cli, ["incident", "report", "inc-nope"], env=env)
    assert missing.exit_code == 4 and "no incident inc-nope" in missing.output

    assert CHROMIUM, "chromium is not installed: `make setup` (deploy/setup.sh) installs Debian's chromium"
    page = tmp_path / "report.html"
    h = CliRunner().invoke(cli, ["incident", "report", incident_id, "--format", "html", "-o", str(page)], env=env)
    assert h.exit_code == 0, h.output
    shot = tmp_path / "shot.png"
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600", f"--screenshot={shot}",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    pixels = list(Image.open(shot).convert("RGB").get_flattened_data())
    # The timeline's kind labels: red (alert) and green (resolution) must both be on the page.
    red = sum(1 for p in pixels if p[0] > 190 and p[1] < 70 and p[2] < 70)
    green = sum(1 for p in pixels if p[0] < 80 and p[1] > 140 and p[2] < 80)
    assert red > 300 and green > 300, (red, green)
