"""The Slack bot on the sandbox, end to end: a bad rollout, the incident thread, the change request,
two people clicking Approve at once, one execution, verification, and the top message saying resolved.

`opsagent serve`'s app (webhook + Bolt endpoints) runs on loopback; Slack's Web API is the local
stand-in; the cluster, Prometheus and Alertmanager are the sandbox's real ones.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent.app import build_app
from agent.change.models import ChangeStatus
from agent.entry.commands.common import settings_for
from agent.entry.server import Metrics
from agent.entry.slack.app import SlackBot
from agent.entry.slack.service import build_server
from deploy.sandbox import faults
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.receiver import Notification, WebhookReceiver
from tests.integration.conftest import webhook_auth
from tests.serving import serve
from tests.slack_standin import ONCALL, PLATFORM, SlackClientSim, SlackStandIn, buttons, render

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("clean_faults")]

SECRET = "integration-signing-secret"
CHANNEL = "C0SANDBOX"


@pytest.fixture
def bot_env(sandbox: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, Any, SlackStandIn, SlackClientSim]]:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        settings = settings_for(None, sandbox, state_dir=str(tmp_path / "state"),
                                slack={"enabled": True, "bot_token": "xoxb-sandbox", "signing_secret": SECRET,
                                       "channel": CHANNEL, "api_url": f"{api_url}/api/"},
                                verification={"window_s": 20, "baseline_s": 60, "step_s": 2.5, "rate_window_s": 15})
        app = build_app(settings)
        metrics = Metrics()
        bot = SlackBot(app, metrics)
        asgi, _ = build_server(app, metrics=metrics, bot=bot)
        try:
            with serve(asgi) as url:
                yield url, app, api, SlackClientSim(url, SECRET, api)
        finally:
            app.close()


def _wait_alert(webhook: WebhookReceiver, namespace: str, since: float) -> Notification:
    names = {"ModelServingErrorRateHigh", "ModelServingTTFTHigh"}
    return webhook.wait_for(lambda n: any(a["labels"].get("alertname") in names
                                          and a["labels"].get("namespace") == namespace for a in n.alerts()),
                            timeout=240, since=since)


def test_bad_rollout_incident_thread_to_approved_verified_and_resolved(
        bot_env: tuple[str, Any, SlackStandIn, SlackClientSim], admin: client.ApiClient, fleet: Fleet,
        webhook: WebhookReceiver, sandbox: dict[str, Any]) -> None:
    from tests.integration.promql import query, wait_until

    url, app, api, slack = bot_env
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    # An earlier test's alert still firing for the namespace keeps its group silent: nothing new would be sent.
    wait_until(lambda: not query(sandbox["endpoints"]["prometheus"],
                                 f'ALERTS{{alertname=~"ModelServingErrorRateHigh|ModelServingTTFTHigh", '
                                 f'namespace="{w.namespace}"}}'),
               480, "the previous test's serving alerts to stop firing", interval=5)
    t0 = time.time()
    faults.inject(admin, fleet, "bad-rollout")
    note = _wait_alert(webhook, w.namespace, t0)
    r = httpx.post(f"{url}/alertmanager", content=json.dumps(note.body).encode(),
                   headers=webhook_auth(sandbox), timeout=10)
    assert r.status_code == 200
    incident_id = r.json()["incident"]

    # the incident message, the triage in its thread, the change request with buttons
    top = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("channel") == CHANNEL
                            and not c.args.get("thread_ts")], what="incident message")[0].args["_ts"]
    change_post = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top
                                    and buttons(c.args)], timeout=120, what="change request block")[0]
    change_id = buttons(change_post.args)[0][1]
    triage = [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top
              and str(c.args.get("text", "")).startswith("Triage")]
    assert triage, "the triage is in the thread"
    assert "rollout" in render(triage[0].args).lower()
    api.wait(lambda: "*change proposed*" in api.message_text(top), what="top message: change proposed")
    block = render(change_post.args)
    assert "rollback" in block and w.name in block and "[Approve]" in block and "[Reject]" in block

    # questions in the thread are answered with evidence
    slack.event({"type": "app_mention", "user": ONCALL, "text": f"<@UBOT0001> show me TTFT for {w.model}",
                 "ts": f"{time.time():.6f}", "thread_ts": top, "channel": CHANNEL})
    slack.event({"type": "app_mention", "user": ONCALL, "text": "<@UBOT0001> what changed in the last hour?",
                 "ts": f"{time.time() + 1:.6f}", "thread_ts": top, "channel": CHANNEL})
    ttft = api.wait(lambda: [c for c in api.of("chat.postMessage") if "*TTFT p95 for" in str(c.args.get("text"))],
                    what="TTFT answer", timeout=60)[0]
    assert ttft.args["thread_ts"] == top and "now " in ttft.args["text"]
    changed = api.wait(lambda: [c for c in api.of("chat.postMessage")
                                if "What changed in the last hour" in str(c.args.get("text"))],
                       what="what-changed answer", timeout=60)[0]
    assert f"deployment/{w.namespace}/{w.name}" in changed.args["text"] and "→" in changed.args["text"]

    # two people click Approve at the same moment; one approval is required: exactly one execution
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(slack.click, u, "change_approve", change_id, CHANNEL, change_post.args["_ts"], top)
                for u in (ONCALL, PLATFORM)]
        acks = [f.result() for f in futs]
    assert [a.status_code for a in acks] == [200, 200]

    api.wait(lambda: "*resolved*" in api.message_text(top), timeout=420, what="top message: resolved")
    thread = [render(c.args) for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top]
    assert any("*verified*" in t and "pass" in t for t in thread), "\n".join(thread)
    assert any("*executing*" in t for t in thread) and any("approved by" in t for t in thread)
    final = api.message_text(change_post.args["_ts"])
    assert "approved by <@" in final and "applied and verified" in final and "[Approve]" not in final
    ch = app.ledger.get(change_id)
    assert ch is not None and ch.status == ChangeStatus.VERIFIED
    applied = [e for e in app.audit.events(incident_id) if e["kind"] == "execution" and e["decision"] == "applied"
               and change_id in e["action"]]
    assert len(applied) == 1, applied
    # the later click was told privately that an earlier decision is already carrying the change
    eph = api.of("chat.postEphemeral")
    assert len(eph) == 1 and change_id in eph[0].args["text"], [e.args for e in eph]
    assert eph[0].args["user"] in (ONCALL, PLATFORM) and "already" in eph[0].args["text"]
    metrics = httpx.get(f"{url}/metrics", headers=webhook_auth(sandbox)).text
    assert 'opsagent_executions_total{stage="executing"} 1.0' in metrics
    assert 'opsagent_executions_total{stage="verified"} 1.0' in metrics

    # asking for a change in chat opens a change request; nothing changes until someone else approves it
    apps = client.AppsV1Api(admin)
    replicas = apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas
    slack.event({"type": "app_mention", "user": ONCALL, "text": f"<@UBOT0001> scale {w.name} to {replicas + 1}",
                 "ts": f"{time.time() + 2:.6f}", "thread_ts": top, "channel": CHANNEL})
    reply = api.wait(lambda: [c for c in api.of("chat.postMessage") if "I don't change anything from chat"
                              in str(c.args.get("text"))], what="chat change request reply", timeout=60)[0]
    scale_block = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top
                                    and buttons(c.args) and buttons(c.args)[0][1] != change_id],
                           what="the chat change request block")[0]
    scale_id = buttons(scale_block.args)[0][1]
    assert scale_id in reply.args["text"] and "not from you" in reply.args["text"]
    slack.click(ONCALL, "change_approve", scale_id, CHANNEL, scale_block.args["_ts"], top)
    api.wait(lambda: len(api.of("chat.postEphemeral")) == 2, what="self-approval refusal")
    assert "may not approve" in api.of("chat.postEphemeral")[1].args["text"]
    time.sleep(1)
    assert apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas == replicas
    scale = app.ledger.get(scale_id)
    assert scale is not None and scale.status == ChangeStatus.PENDING_APPROVAL and scale.requester == f"slack:{ONCALL}"


def test_ops_rightsize_answers_from_the_sandbox_history(
        bot_env: tuple[str, Any, SlackStandIn, SlackClientSim], fleet: Fleet) -> None:
    _, _, api, slack = bot_env
    w = fleet.workload("completion")
    for text in (f"rightsize {w.namespace}/{w.name}", f"rightsize {w.model}", "rightsize no-such-model"):
        assert slack.command(ONCALL, text).status_code == 200
    replies = api.wait(lambda: len(api.responses) >= 3 and api.responses, what="three replies", timeout=120)
    by_cmd = {int(r["key"].removeprefix("cmd")): r["text"] for r in replies}
    by_name, by_model, unknown = (by_cmd[k] for k in sorted(by_cmd))
    assert f"{w.namespace}/{w.name}:" in by_name and "/mo" in by_name, by_name
    assert f"{w.namespace}/{w.name}:" in by_model, by_model
    assert "No workload serves" in unknown and w.model in unknown, unknown
    assert all(r["response_type"] == "ephemeral" for r in replies)
