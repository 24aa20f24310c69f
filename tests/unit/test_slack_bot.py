"""The real Bolt app on `opsagent serve`, over loopback HTTP, driven by signed Slack requests.

Outgoing Web API calls and `response_url` posts go to a local stand-in that records them; the tests
assert what people in the channel would see. No cluster here: changes are refused before any
cluster access (wrong role, self-approval), which is what these tests are about; execution is in
tests/integration/test_slack.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app import App, build_app
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.config import load_settings
from agent.entry.server import Metrics
from agent.entry.slack.app import SlackBot
from agent.entry.slack.service import build_server
from agent.models import ActionKind, ObjectRef
from tests.serving import post_chunked, serve
from tests.slack_standin import ONCALL, PLATFORM, SlackClientSim, SlackStandIn, buttons, offline_settings, render, sign

pytest_plugins = ("tests.llm.aimock",)

SECRET = "unit-test-signing-secret"
CHANNEL = "C0INCIDENT"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
NOBODY = "U0NOROLE1"



@dataclass
class Env:
    url: str
    app: App
    bot: SlackBot
    api: SlackStandIn
    slack: SlackClientSim
    metrics: Metrics

    def top_message(self) -> str:
        posts = self.api.wait(lambda: [c for c in self.api.of("chat.postMessage")
                                       if c.args.get("channel") == CHANNEL and not c.args.get("thread_ts")],
                              what="the incident's top message")
        return str(posts[0].args["_ts"])

    def open_incident(self) -> str:
        r = httpx.post(f"{self.url}/alertmanager", content=FIXTURE.read_bytes(), timeout=10)
        assert r.status_code == 200
        return str(r.json()["incident"])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = offline_settings(tmp_path, api_url, SECRET, CHANNEL)
        app = build_app(settings)
        metrics = Metrics()
        asgi, bot = build_server(app, metrics=metrics)
        assert bot is not None
        try:
            with serve(asgi) as url:
                yield Env(url, app, bot, api, SlackClientSim(url, SECRET, api), metrics)
        finally:
            app.close()


def _pending_change(app: App, incident_id: str, requester: str, approvals_required: int = 1) -> ChangeRequest:
    spec = ChangeSpec(action=ActionKind.ROLLBACK, cluster="sandbox-gpu-1",
                      target=ObjectRef(kind="Deployment", name="chat-primary", namespace="llm-prod"),
                      params={"to_revision": 3})
    ch = ChangeRequest(id="chg-unit000001", spec=spec, spec_digest=spec.digest(),
                       fingerprint=TargetFingerprint(kind="Deployment", name="chat-primary", namespace="llm-prod",
                                                     uid="u1", generation=7, spec_hash="h7", revision="4"),
                       risk="mutate", blast_radius=BlastRadius(gpus=8, replicas=2, capacity_drop=0.5,
                                                               models=["llama-3.1-70b-instruct"]),
                       diff="-image: vllm:2025.07.0\n+image: vllm:2025.06.2", reason="error rate up since revision 4",
                       incident_id=incident_id, requester=requester, created_at=dt.datetime.now(dt.UTC),
                       status=ChangeStatus.PENDING_APPROVAL, policy_rule="rollback",
                       policy_reason="needs one on-call approval", approvals_required=approvals_required,
                       approver_roles=["oncall", "ml-platform"], approval_ttl_s=900)
    assert app.ledger.save(ch)
    return ch


def test_alert_opens_an_incident_message_with_triage_in_its_thread(env: Env) -> None:
    incident_id = env.open_incident()
    top = env.top_message()
    assert "ModelServingErrorRateHigh" in env.api.message_text(top) or "llama" in env.api.message_text(top)
    triage = env.api.wait(lambda: [c for c in env.api.of("chat.postMessage") if c.args.get("thread_ts") == top],
                          what="the triage in the thread")
    assert render(triage[0].args).startswith("*Triage*")
    env.api.wait(lambda: "*triaged*" in env.api.message_text(top), what="the top message edited to 'triaged'")
    shown = env.api.message_text(top)
    assert "llm-prod" in shown and "critical" in shown and incident_id in shown
    # a re-delivery of the same alert does not post a second incident message
    httpx.post(f"{env.url}/alertmanager", content=FIXTURE.read_bytes(), timeout=10)
    time.sleep(0.5)
    assert len([c for c in env.api.of("chat.postMessage") if not c.args.get("thread_ts")]) == 1


def test_forged_stale_and_replayed_requests_get_401_and_change_nothing(env: Env) -> None:
    body = b"token=x&team_id=T0001&channel_id=C0INCIDENT&user_id=U024BE7LH&command=%2Fops&text=status" \
           b"&response_url=" + f"{env.api.base_url}/respond/r1".encode()
    form = "application/x-www-form-urlencoded"
    forged = httpx.post(f"{env.url}/slack/commands", content=body,
                        headers={"Content-Type": form, **sign("not-the-secret", body)})
    stale = httpx.post(f"{env.url}/slack/commands", content=body,
                       headers={"Content-Type": form, **sign(SECRET, body, int(time.time()) - 301)})
    assert forged.status_code == 401 and stale.status_code == 401
    headers = {"Content-Type": form, **sign(SECRET, body)}
    first = httpx.post(f"{env.url}/slack/commands", content=body, headers=headers)
    assert first.status_code == 200
    env.api.wait(lambda: env.api.responses, what="the /ops status reply")
    replay = httpx.post(f"{env.url}/slack/commands", content=body, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.text
    time.sleep(0.5)
    assert len(env.api.responses) == 1, "only the genuine request was answered"
    m = httpx.get(f"{env.url}/metrics").text
    assert 'opsagent_slack_requests_total{kind="commands",outcome="bad_signature"} 2.0' in m
    assert 'opsagent_slack_requests_total{kind="commands",outcome="replayed"} 1.0' in m


def test_clicks_by_nobody_in_the_people_table_or_by_the_requester_are_refused_ephemerally_and_audited(
        env: Env) -> None:
    incident_id = env.open_incident()
    top = env.top_message()
    ch = _pending_change(env.app, incident_id, requester=f"slack:{ONCALL}")
    asyncio.run(env.bot.notifier.show_change(ch.id))
    block = env.api.wait(lambda: [c for c in env.api.of("chat.postMessage") if ch.id in str(c.args.get("text"))],
                         what="the change block")[0]
    assert block.args["thread_ts"] == top
    assert buttons(block.args) == [("change_approve", ch.id), ("change_reject", ch.id)]
    seen = render(block.args)
    for fact in ("rollback", "8 GPUs", "needs one on-call approval", "1 more from oncall, ml-platform", "[Approve]",
                 "vllm:2025.06.2", "valid 15 min"):
        assert fact in seen, fact

    t0 = time.monotonic()
    r1 = env.slack.click(NOBODY, "change_approve", ch.id, CHANNEL, block.args["_ts"], top)
    r2 = env.slack.click(ONCALL, "change_approve", ch.id, CHANNEL, block.args["_ts"], top)
    assert r1.status_code == 200 and r2.status_code == 200 and time.monotonic() - t0 < 3
    eph = env.api.wait(lambda: len(env.api.of("chat.postEphemeral")) >= 2 and env.api.of("chat.postEphemeral"),
                       what="two ephemeral refusals")
    by_user = {c.args["user"]: c.args["text"] for c in eph}
    assert f"slack:{NOBODY} is not anyone in the policy's people table" in by_user[NOBODY]
    assert "alice requested" in by_user[ONCALL] and "may not approve" in by_user[ONCALL]
    assert all(c.args["channel"] == CHANNEL and c.args.get("thread_ts") == top for c in eph)
    refused = [e for e in env.app.audit.events(incident_id) if e["kind"] == "approval" and e["decision"] == "refused"]
    assert {e["actor"] for e in refused} == {f"slack:{NOBODY}", "user:alice"}
    assert any("unknown identity" in e["reason"] for e in refused)
    current = env.app.ledger.get(ch.id)
    assert current is not None and current.status == ChangeStatus.PENDING_APPROVAL
    assert not env.app.ledger.approvals(ch.id)
    assert not [c for c in env.api.of("chat.update") if c.args.get("_ts") == block.args["_ts"]], \
        "a refused click does not touch the change block"


def test_one_person_approving_from_the_cli_and_from_slack_counts_once(env: Env, tmp_path: Path) -> None:
    """alice approves from the CLI, then clicks Approve in Slack with her Slack id: one person, one approval;
    the change still needs a second person. carol's click (another person) completes it."""
    from typer.testing import CliRunner

    from agent.entry.cli import app as cli

    incident_id = env.open_incident()
    top = env.top_message()
    ch = _pending_change(env.app, incident_id, requester="agent:rules", approvals_required=2)
    settings = tmp_path / "cli.yaml"  # the CLI runs as another process would: same store, same policy
    settings.write_text(json.dumps({"state_dir": str(env.app.settings.state_dir), "kubernetes": {
        "executor_kubeconfig": str(env.app.settings.kubernetes.executor_kubeconfig)}}))
    cli_run = CliRunner().invoke(cli, ["changes", "approve", ch.id, "--as", "alice", "--config", str(settings)])
    assert cli_run.exit_code == 0, cli_run.output
    assert "awaiting_approval" in cli_run.output

    asyncio.run(env.bot.notifier.show_change(ch.id))
    block = env.api.wait(lambda: [c for c in env.api.of("chat.postMessage") if ch.id in str(c.args.get("text"))],
                         what="the change block")[0]
    assert env.slack.click(ONCALL, "change_approve", ch.id, CHANNEL, block.args["_ts"], top).status_code == 200
    env.api.wait(lambda: [e for e in env.app.audit.events(incident_id) if e["decision"] == "duplicate"],
                 what="alice's Slack approval judged")
    approvals = env.app.ledger.approvals(ch.id)
    assert [(a.approver, a.identity, a.via) for a in approvals] == [("alice", "alice", "cli")]
    current = env.app.ledger.get(ch.id)
    assert current is not None and current.status == ChangeStatus.PENDING_APPROVAL, "one person is one approval"

    assert env.slack.click(PLATFORM, "change_approve", ch.id, CHANNEL, block.args["_ts"], top).status_code == 200
    env.api.wait(lambda: len(env.app.ledger.approvals(ch.id)) == 2, what="carol's approval recorded")
    assert {(a.approver, a.identity) for a in env.app.ledger.approvals(ch.id)} == {
        ("alice", "alice"), ("carol", f"slack:{PLATFORM}")}
    env.api.wait(lambda: (c := env.app.ledger.get(ch.id)) is not None and c.status != ChangeStatus.PENDING_APPROVAL,
                 what="two people: the change left pending_approval")


def test_a_retried_event_is_answered_once(env: Env) -> None:
    env.open_incident()
    top = env.top_message()
    env.api.wait(lambda: "*triaged*" in env.api.message_text(top), what="triage to finish")
    event = {"type": "app_mention", "user": ONCALL, "text": "<@UBOT0001> why?", "ts": "1800000000.000200",
             "thread_ts": top, "channel": CHANNEL}
    first = env.slack.event(event, event_id="Ev0RETRY1")
    retry = env.slack.event(event, event_id="Ev0RETRY1", headers={"X-Slack-Retry-Num": "1",
                                                                  "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status_code == 200 and retry.status_code == 200
    answers = env.api.wait(lambda: [c for c in env.api.of("chat.postMessage") if c.args.get("thread_ts") == top
                                    and "Triage" not in str(c.args.get("text"))], what="the answer")
    time.sleep(0.5)
    answers = [c for c in env.api.of("chat.postMessage") if c.args.get("thread_ts") == top
               and "Triage" not in str(c.args.get("text"))]
    assert len(answers) == 1
    # no hypothesis without Prometheus: the answer says so instead of guessing
    assert "confident" in answers[0].args["text"] or "not finished" in answers[0].args["text"] \
        or "(no supporting evidence recorded)" in answers[0].args["text"]


def test_ops_commands_reply_ephemerally(env: Env) -> None:
    incident_id = env.open_incident()
    env.top_message()
    ch = _pending_change(env.app, incident_id, requester="agent:rules")
    for text in ("help", "status", "changes", "incidents", "rightsize llama-3.1-70b-instruct", f"approve {ch.id}",
                 "frobnicate"):
        r = env.slack.command(NOBODY, text)
        assert r.status_code == 200, text
    replies = env.api.wait(lambda: len(env.api.responses) >= 7 and env.api.responses, what="seven replies")
    by_cmd = {int(r["key"].removeprefix("cmd")): r for r in replies}
    texts = [by_cmd[k]["text"] for k in sorted(by_cmd)]
    assert all(r["response_type"] == "ephemeral" for r in replies)
    assert "/ops status" in texts[0]
    assert "1 open incident(s), 1 change(s) awaiting approval" in texts[1] and ch.id in texts[1]
    assert ch.id in texts[2] and incident_id in texts[3]
    assert "could not read the history" in texts[4], "no Prometheus here: the reply says so"
    assert "refused" in texts[5] and "not anyone in the policy's people table" in texts[5]
    assert "Unknown command" in texts[6]


def test_rate_limited_and_failing_slack_calls_lose_nothing(env: Env) -> None:
    env.api.rate_limit("chat.postMessage", times=1, retry_after=1)
    env.api.fail("chat.update", "internal_error", times=1)
    incident_id = env.open_incident()
    top = env.top_message()
    limited = env.api.of("chat.postMessage", ok_only=False)[0]
    assert limited.status == 429
    first_ok = env.api.of("chat.postMessage")[0]
    assert first_ok.at - limited.at >= 0.9, "the retry waited for Retry-After"
    env.api.wait(lambda: "*triaged*" in env.api.message_text(top), what="a later update to land", timeout=20)
    m = httpx.get(f"{env.url}/metrics").text
    assert 'opsagent_slack_api_errors_total{method="chat.update"} 1.0' in m
    assert env.app.store.incident(incident_id) is not None and env.app.store.latest_report(incident_id) is not None


def test_free_text_goes_to_the_llm_with_read_tools_only(tmp_path: Path, aimock: Any) -> None:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = load_settings(None, state_dir=str(tmp_path / "state"),
                                 prometheus={"url": "http://127.0.0.1:1", "timeout_s": 2},
                                 llm={"provider": "openai-compatible", "model": "chat-thread-openai",
                                      "base_url": f"{aimock.url}/v1"},
                                 slack={"enabled": True, "bot_token": "xoxb-unit", "signing_secret": SECRET,
                                        "channel": CHANNEL, "api_url": f"{api_url}/api/"})
        app = build_app(settings)
        asgi, _ = build_server(app, metrics=Metrics())
        try:
            with serve(asgi) as url:
                e = Env(url, app, None, api, SlackClientSim(url, SECRET, api), Metrics())  # type: ignore[arg-type]
                incident_id = e.open_incident()
                top = e.top_message()
                r = e.slack.event({"type": "app_mention", "user": ONCALL, "ts": "1800000000.000900", "thread_ts": top,
                                   "text": "<@UBOT0001> is the canary doing better than the old pods?",
                                   "channel": CHANNEL})
                assert r.status_code == 200
                answer = api.wait(lambda: [c for c in api.of("chat.postMessage")
                                           if "canary" in str(c.args.get("text"))], what="the LLM's answer")[0]
                calls = [ev for ev in app.audit.events(incident_id) if ev["actor"] == f"slack:{ONCALL}"]
        finally:
            app.close()
    assert answer.args["thread_ts"] == top
    assert "&lt;!channel&gt;" in answer.args["text"], "model text is escaped: no channel-wide ping"
    asked = [j for j in aimock.journal("chat-thread-openai") if "doing better than the old pods" in json.dumps(j)]
    assert len(asked) == 2, "one turn asking for a read tool, one with its result"
    tools = {t["function"]["name"] for t in asked[0]["body"]["tools"]}
    assert "prometheus_query_instant" in tools and not {t for t in tools if "undo" in t or "scale" in t}
    assert [c["action"] for c in calls] == ["prometheus_query_instant"], "the model's read went through the runner"


def test_delivery_marks_survive_a_restart(tmp_path: Path) -> None:
    from agent.entry.slack.app import REPLAY_WINDOW, SeenMarks
    from agent.storage.store import SqliteStore

    store = SqliteStore(tmp_path / "db.sqlite")

    async def before_restart() -> None:
        marks = SeenMarks(store, lambda: dt.datetime.now(dt.UTC))
        assert await marks.first("sig:v0=abc:", REPLAY_WINDOW)
        assert not await marks.first("sig:v0=abc:", REPLAY_WINDOW)
        await marks.close()

    async def after_restart() -> bool:
        marks = SeenMarks(store, lambda: dt.datetime.now(dt.UTC))
        await marks.load()
        return await marks.first("sig:v0=abc:", REPLAY_WINDOW)

    asyncio.run(before_restart())
    assert asyncio.run(after_restart()) is False, "a replay after a restart is still recognised"
    store.close()


def test_a_huge_unsigned_slack_post_is_refused_before_its_body_is_read(env: Env) -> None:
    status, sent = post_chunked(env.url, "/slack/events", 200 << 20, {"Content-Type": "application/json"})
    assert status == 401 and sent <= 8 << 20, f"{sent >> 20} MiB read before the 401"
    # Headers that look signed (fresh timestamp, a v0 signature) still cannot make it buffer 200 MiB.
    looks_signed = {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64}
    status, sent = post_chunked(env.url, "/slack/events", 200 << 20, looks_signed)
    assert status == 413 and sent <= 8 << 20, f"{sent >> 20} MiB read before the 413"
