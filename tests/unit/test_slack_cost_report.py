"""The scheduled cost report and its "Create change request" button in the real Bolt app, without a cluster.

What is checked here needs no Prometheus or apiserver: a report that cannot be built is counted,
given back for a retry and never stops serve; clicks whose value is garbled, forged, unknown or
stale are refused privately and audited with nothing proposed; a double click makes one change
request; `opsagent report cost --post` says which setting is missing. Posting a real report and
approving its change run on the sandbox (tests/integration/test_replicas_slack.py).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from agent.app import App, build_app
from agent.change.models import ChangeSpec
from agent.entry.cli import app as cli
from agent.entry.server import Metrics
from agent.entry.slack.service import build_server
from agent.models import ActionKind, ObjectRef
from agent.rightsize.posts import ButtonForPost, ReportPosts
from agent.rightsize.report import CREATE_ACTION_ID
from agent.rightsize.schedule import ScheduleLeases
from agent.storage.store import db_target
from tests.serving import serve
from tests.slack_standin import ONCALL, PLATFORM, SlackClientSim, SlackStandIn, offline_settings, render

SECRET = "unit-test-signing-secret"
CHANNEL = "C0REPORTS"
REPORT_TS = "1700000999.000100"


SPEC = ChangeSpec(action=ActionKind.SCALE, cluster="default",
                  target=ObjectRef(kind="Deployment", name="completion", namespace="code"),
                  params={"replicas": 4, "recommendation": "rs-0123456789"})


@dataclass
class Env:
    url: str
    app: App
    api: SlackStandIn
    slack: SlackClientSim
    metrics: Metrics


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, schedule=None)


@pytest.fixture
def scheduled_env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, schedule="* * * * *")


def _env(tmp_path: Path, schedule: str | None) -> Iterator[Env]:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = offline_settings(tmp_path, api_url, SECRET, "C0INCIDENT",
                                    rightsize={"schedule": schedule, "schedule_check_s": 0.2,
                                               "schedule_channel": CHANNEL})
        app = build_app(settings)
        metrics = Metrics()
        asgi, bot = build_server(app, metrics=metrics)
        assert bot is not None
        try:
            with serve(asgi) as url:
                yield Env(url, app, api, SlackClientSim(url, SECRET, api), metrics)
        finally:
            app.close()


def _metric(env: Env, outcome: str) -> float:
    text = httpx.get(f"{env.url}/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith(f'opsagent_cost_reports_total{{outcome="{outcome}"}}'))
    return float(line.split()[-1])


def _seed_report(app: App, posted_at: dt.datetime | None = None) -> None:
    """What the poster records when it posts a report (the message's buttons and their specs)."""
    posts = ReportPosts(db_target(app.settings.store_url))
    try:
        posts.record(CHANNEL, REPORT_TS, "cost-report", "2026-11-23T09:00:00+00:00",
                     [ButtonForPost("rs-0123456789", SPEC, "right-sizing rs-0123456789: fewer replicas")],
                     posted_at or dt.datetime.now(dt.UTC))
    finally:
        posts.close()


def _value(spec: ChangeSpec = SPEC, rec: str = "rs-0123456789") -> str:
    return json.dumps({"recommendation": rec, "spec": spec.model_dump(mode="json"), "savings_per_month": 1000.0})


def test_a_report_that_cannot_be_built_is_counted_retried_and_serve_keeps_serving(scheduled_env: Env) -> None:
    env = scheduled_env
    # Prometheus is unreachable: every check claims the tick, fails to build, and gives the tick back.
    env.api.wait(lambda: _metric(env, "failed") >= 2, timeout=20, what="two failed report builds")
    assert _metric(env, "posted") == 0
    assert httpx.get(f"{env.url}/healthz", timeout=5).status_code == 200
    assert not [c for c in env.api.of("chat.postMessage") if c.args.get("channel") == CHANNEL]
    leases = ScheduleLeases(db_target(env.app.settings.store_url), owner="reader")
    try:
        runs = leases.runs("cost-report")
    finally:
        leases.close()
    assert runs and all(done is None for _, _, done in runs), "a failed tick is never marked posted"


def _ephemeral_for(env: Env, user: str, n: int) -> list[str]:
    got = env.api.wait(lambda: [c for c in env.api.of("chat.postEphemeral") if c.args.get("user") == user]
                       if len([c for c in env.api.of("chat.postEphemeral") if c.args.get("user") == user]) >= n
                       else None, what=f"{n} private replies to {user}")
    return [str(c.args["text"]) for c in got]


def test_garbled_forged_unknown_and_stale_buttons_are_refused_and_audited(env: Env, tmp_path: Path) -> None:
    _seed_report(env.app)
    forged = SPEC.model_copy(update={"params": {"replicas": 0, "recommendation": "rs-0123456789"}})
    clicks = [("not json at all", "could not be read"),
              (_value(forged), "does not carry the change I posted"),
              (_value(rec="rs-ffffffffff"), "is not a recommendation of a cost report I posted")]
    for value, _ in clicks:
        assert env.slack.click(ONCALL, CREATE_ACTION_ID, value, CHANNEL, REPORT_TS).status_code == 200
    notes = _ephemeral_for(env, ONCALL, 3)
    for _, expected in clicks:
        assert any(expected in n for n in notes), (expected, notes)
    assert all("nothing was proposed" in n for n in notes)
    # a report older than rightsize.button_max_age_h (a week by default) is stale
    stale_ts = "1700000111.000100"
    posts = ReportPosts(db_target(env.app.settings.store_url))
    try:
        posts.record(CHANNEL, stale_ts, "cost-report", "2026-11-01T09:00:00+00:00",
                     [ButtonForPost("rs-0123456789", SPEC, "old")], dt.datetime.now(dt.UTC) - dt.timedelta(days=8))
    finally:
        posts.close()
    env.slack.click(ONCALL, CREATE_ACTION_ID, _value(), CHANNEL, stale_ts)
    assert "hours old" in _ephemeral_for(env, ONCALL, 4)[-1]
    assert env.app.ledger.list_changes() == []
    refused = [e for e in env.app.audit.events(None) if e["decision"] == "refused"
               and CREATE_ACTION_ID in e["action"]]
    assert len(refused) == 4 and all(e["actor"] == f"user:{ONCALL}" for e in refused)


def test_a_double_click_makes_one_change_request_in_the_report_thread(env: Env) -> None:
    _seed_report(env.app)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        acks = list(pool.map(lambda u: env.slack.click(u, CREATE_ACTION_ID, _value(), CHANNEL, REPORT_TS),
                             (ONCALL, PLATFORM)))
    assert [a.status_code for a in acks] == [200, 200]
    env.api.wait(lambda: len(env.api.of("chat.postEphemeral")) == 2, what="a private reply to each clicker")
    changes = env.app.ledger.list_changes()
    assert len(changes) == 1, changes
    ch = changes[0]
    assert ch.spec == SPEC and ch.requester in (f"slack:{ONCALL}", f"slack:{PLATFORM}")
    blocks = [c for c in env.api.of("chat.postMessage") if c.args.get("thread_ts") == REPORT_TS]
    assert len(blocks) == 1
    assert ch.id in render(blocks[0].args) and blocks[0].args["channel"] == CHANNEL
    texts = [str(c.args["text"]) for c in env.api.of("chat.postEphemeral")]
    assert sum(f"already change request `{ch.id}`" in t or "right now" in t for t in texts) == 1, texts
    # the cluster is unreachable here, so the proposal failed its dry run: the clicker is told so
    assert any(ch.id in t and ch.status.value in t for t in texts), texts
    # and a later click on the same report's button still points at the same change request
    env.slack.click(ONCALL, CREATE_ACTION_ID, _value(), CHANNEL, REPORT_TS)
    env.api.wait(lambda: len(env.api.of("chat.postEphemeral")) == 3, what="the third reply")
    assert f"already change request `{ch.id}`" in str(env.api.of("chat.postEphemeral")[-1].args["text"])
    assert len(env.app.ledger.list_changes()) == 1


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> Result:
    for k in [k for k in os.environ if k.startswith("OPSAGENT_")]:
        monkeypatch.delenv(k)
    return CliRunner().invoke(cli, ["report", "cost", *args, "--state-dir", str(tmp_path / "state")], env=env)


def test_report_cost_post_says_which_setting_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _cli(tmp_path, monkeypatch, "--post")
    assert out.exit_code == 2 and "slack.bot_token" in out.output and "OPSAGENT_SLACK__BOT_TOKEN" in out.output
    out = _cli(tmp_path, monkeypatch, "--post", OPSAGENT_SLACK__BOT_TOKEN="xoxb-x", OPSAGENT_SLACK__CHANNEL="")
    assert out.exit_code == 2 and "rightsize.schedule_channel or slack.channel" in out.output
    out = _cli(tmp_path, monkeypatch, "--post", "--output", str(tmp_path / "x.json"))
    assert out.exit_code == 2 and "--output" in out.output
    # a schedule whose latest tick is long past: nothing is posted, and it says why
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24
    out = _cli(tmp_path, monkeypatch, "--post", OPSAGENT_SLACK__BOT_TOKEN="xoxb-x",
               OPSAGENT_RIGHTSIZE__SCHEDULE=f"0 {hour} * * *")
    assert out.exit_code == 1 and "more than an hour ago" in out.output


def test_a_move_whose_planning_fails_stores_nothing_and_its_button_can_be_clicked_again(env: Env) -> None:
    """A GPU-class move is planned at the click (target and pools read now); here the cluster is unreachable."""
    move = ChangeSpec(action=ActionKind.DEPLOY, cluster="default",
                      target=ObjectRef(kind="Deployment", name="notes-assist", namespace="llm-prod"),
                      params={"gpu_class_move": True, "node_selector": {"node.kubernetes.io/instance-type":
                                                                        "p4d.24xlarge"},
                              "instance_type": "p4d.24xlarge", "recommendation": "rs-0123456789"})
    posts = ReportPosts(db_target(env.app.settings.store_url))
    try:
        posts.record(CHANNEL, REPORT_TS, "cost-report", "2026-11-23T09:00:00+00:00",
                     [ButtonForPost("rs-0123456789", move, "right-sizing rs-0123456789: H100 → A100")],
                     dt.datetime.now(dt.UTC))
        for n in (1, 2):
            env.slack.click(ONCALL, CREATE_ACTION_ID, _value(move), CHANNEL, REPORT_TS)
            texts = _ephemeral_for(env, ONCALL, n)
            assert "could not be" in texts[-1] and "already" not in texts[-1], texts
        assert env.app.ledger.list_changes() == [], "nothing is stored for a move that was not planned"
        row = posts.get(CHANNEL, REPORT_TS, "rs-0123456789")
        assert row is not None and row.change_id is None and row.clicked_by is None, "the claim is given back"
    finally:
        posts.close()
