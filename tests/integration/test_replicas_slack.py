"""Two `opsagent serve` replicas with the Slack bot on one Postgres, against the real sandbox.

- issue 6: with `rightsize.schedule` every minute, the cost report is posted to the channel exactly
  once per tick although both replicas check (the first post meets a 429 and is retried); with
  `idle-overprovision` injected, a signed click on its **Create change request** button, delivered
  to either replica, opens one change request (also when clicked again) for the first scale-down
  step the policy allows, whose block, with Approve / Reject, is in the report's thread, and which
  its requester cannot approve;
- issue 8: an alert delivered to replica A opens the incident and its change block; the signed
  **Approve** click delivered to replica B (and a second one to A) executes the change exactly once
  (one new Deployment revision, one execution row, one "applied" audit event), and the incident's
  message ends resolved.

Slack's Web API is the local stand-in (tests/slack_standin.py); everything else is real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kubernetes import client

from agent.change.models import ChangeStatus
from agent.rightsize.changes import spec_from_button
from agent.rightsize.report import CREATE_ACTION_ID
from deploy.sandbox import faults
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.receiver import WebhookReceiver
from tests.integration.conftest import webhook_auth
from tests.postgres import LocalPostgres
from tests.serving import Replica, free_port, ready, serve, stop_process, wait_until
from tests.slack_standin import ONCALL, PLATFORM, Call, SlackClientSim, SlackStandIn, buttons, render

pytestmark = [pytest.mark.sandbox]

OPSAGENT = Path(sys.executable).parent / "opsagent"
AUDIT_KEY = "replica-slack-audit-key-0123456789"
SECRET = "replica-signing-secret"
INCIDENTS, REPORTS = "C0INCIDENT", "C0COSTREPORT"



@dataclass
class Pair:
    a: Replica
    b: Replica
    api: SlackStandIn
    store_url: str
    auth: dict[str, str]  # the sandbox's webhook token: `serve --sandbox` wants it on reads too

    def sim(self, r: Replica) -> SlackClientSim:
        return SlackClientSim(r.url, SECRET, self.api)

    def logs(self) -> str:
        return self.a.log.read_text() + self.b.log.read_text()




@pytest.fixture(scope="module")
def pair(sandbox: dict[str, Any], postgres: LocalPostgres,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("replicas-slack")
    store_url = postgres.create_database("rslack")
    api = SlackStandIn()
    api.rate_limit("chat.postMessage", times=1, retry_after=1)  # the first post (a report) waits and retries
    started: list[Replica] = []
    with serve(api.app()) as api_url:
        api.base_url = api_url
        env = {**os.environ, "OPSAGENT_STORE__URL": store_url, "OPSAGENT_AUDIT__KEY": AUDIT_KEY,
               "OPSAGENT_SERVER__TRIAGE_LEASE_S": "3", "OPSAGENT_SERVER__TRIAGE_SWEEP_S": "0.5",
               "OPSAGENT_SLACK__ENABLED": "true", "OPSAGENT_SLACK__BOT_TOKEN": "xoxb-replicas",
               "OPSAGENT_SLACK__SIGNING_SECRET": SECRET, "OPSAGENT_SLACK__CHANNEL": INCIDENTS,
               "OPSAGENT_SLACK__API_URL": f"{api_url}/api/",
               "OPSAGENT_RIGHTSIZE__SCHEDULE": "* * * * *", "OPSAGENT_RIGHTSIZE__SCHEDULE_CHECK_S": "2",
               "OPSAGENT_RIGHTSIZE__SCHEDULE_CHANNEL": REPORTS,
               "OPSAGENT_VERIFICATION__WINDOW_S": "20", "OPSAGENT_VERIFICATION__BASELINE_S": "60",
               "OPSAGENT_VERIFICATION__STEP_S": "2.5", "OPSAGENT_VERIFICATION__RATE_WINDOW_S": "15"}
        try:
            for name in ("a", "b"):
                port = free_port()
                log = tmp / f"serve-{name}.log"
                with log.open("wb") as err:
                    proc = subprocess.Popen(
                        [str(OPSAGENT), "serve", "--sandbox", "--sandbox-dir", sandbox["dir"], "--port", str(port),
                         "--state-dir", str(tmp / name)], env=env, stdout=subprocess.DEVNULL, stderr=err)
                started.append(Replica(name, f"http://127.0.0.1:{port}", proc, log))
            for r in started:
                wait_until(lambda r=r: _ready_replica(r), 240,
                      lambda r=r: f"replica {r.name} not ready: {r.log.read_text()[-2000:]}")
            yield Pair(started[0], started[1], api, store_url, webhook_auth(sandbox))
        finally:
            for r in started:
                stop_process(r.proc)


def _reports(api: SlackStandIn) -> list[Call]:
    return [c for c in api.of("chat.postMessage") if c.args.get("channel") == REPORTS and not c.args.get("thread_ts")]


def _create_buttons(call: Call) -> list[str]:
    return [b["accessory"]["value"] for b in call.args.get("blocks") or []
            if (b.get("accessory") or {}).get("action_id") == CREATE_ACTION_ID]


def _posted_ticks(logs: str) -> list[str]:
    return re.findall(r"posted the cost report for (\S+) to", logs)


def _completion_button(call: Call, name: str) -> str | None:
    return next((v for v in _create_buttons(call) if spec_from_button(v)[1].target.name == name), None)


def test_the_scheduled_report_is_posted_once_per_tick_and_its_button_opens_one_change_request(
        pair: Pair, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, clean_faults: None) -> None:
    api = pair.api
    # Six replicas of a model at 5 % of its traffic: the next report recommends fewer, with a button.
    target = fleet.workload(fleet.faults["idle-overprovision"]["workload"])
    faults.inject(admin, fleet, "idle-overprovision")
    prom = sandbox["endpoints"]["prometheus"]
    query = f'kube_deployment_spec_replicas{{namespace="{target.namespace}",deployment="{target.name}"}}'
    wait_until(lambda: _prom_value(prom, query) == 6.0, 120, "Prometheus never saw the 6 replicas", every=2)
    assert wait_until(lambda: _reports(api), 150, lambda: f"no cost report posted: {pair.logs()[-3000:]}", every=1)
    assert [c.status for c in api.of("chat.postMessage", ok_only=False)][:1] == [429], "the first post met a 429"
    first = wait_until(lambda: [c for c in _reports(api) if _completion_button(c, target.name)], 130,
                  lambda: f"no report with a button for {target.name}: "
                          f"{[render(c.args) for c in _reports(api)]}", every=1)[0]
    # Both replicas check every 2 s: a few checks more, well before the next tick, then count.
    time.sleep(6)
    ticks = _posted_ticks(pair.logs())
    reports = _reports(api)
    print(f"[replicas-slack] report posts {len(reports)}, ticks {ticks}, 429s "
          f"{len(api.of('chat.postMessage', ok_only=False)) - len(api.of('chat.postMessage'))}")
    assert ticks and len(ticks) == len(set(ticks)), f"a tick was posted twice: {ticks}"
    assert len(reports) == len(ticks), "one chat.postMessage per tick"
    with psycopg.connect(pair.store_url) as pg:
        runs = pg.execute("SELECT tick, done_at FROM schedule_runs WHERE job = 'cost-report'").fetchall()
    assert sorted(t for t, done in runs if done) == sorted(ticks)
    for r in (pair.a, pair.b):
        assert "opsagent_cost_reports_total" in httpx.get(f"{r.url}/metrics", headers=pair.auth, timeout=5).text
    posted = sum(_metric(r, 'opsagent_cost_reports_total{outcome="posted"}', pair.auth) for r in (pair.a, pair.b))
    assert posted == len(ticks)

    text = render(first.args)
    assert "GPU cost report" in text and "could save" in text
    value = _completion_button(first, target.name)
    assert value is not None
    rec_id, spec = spec_from_button(value)
    # 6 → 2 would remove two thirds of the capacity, which policy denies: the button carries the first step.
    assert spec.action.value == "scale" and spec.params["replicas"] == 3, spec
    assert "at most 50% of capacity" in text
    report_ts = first.args["_ts"]
    click = pair.sim(pair.b).click(ONCALL, CREATE_ACTION_ID, value, REPORTS, report_ts)
    assert click.status_code == 200
    block = wait_until(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == report_ts],
                  60, lambda: f"no change block in the report's thread: {pair.logs()[-3000:]}")[0]
    change_id = buttons(block.args)[0][1] if buttons(block.args) else re.findall(r"chg-[0-9a-f]{12}",
                                                                                    render(block.args))[0]
    # the same button clicked again, on the other replica: no second change request
    pair.sim(pair.a).click(PLATFORM, CREATE_ACTION_ID, value, REPORTS, report_ts)
    again = wait_until(lambda: [c for c in api.of("chat.postEphemeral") if c.args.get("user") == PLATFORM], 30,
                  "no reply to the second click")[0]
    assert f"already change request `{change_id}`" in again.args["text"]
    time.sleep(1)
    assert len([c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == report_ts]) == 1
    with psycopg.connect(pair.store_url) as pg:
        rows = pg.execute("SELECT id, status, doc FROM changes WHERE doc LIKE %s", (f"%{rec_id}%",)).fetchall()
    assert len(rows) == 1 and rows[0][0] == change_id, rows
    doc = json.loads(rows[0][2])
    print(f"[replicas-slack] button {rec_id}: {spec.action.value} {spec.target} {spec.params} → {change_id} "
          f"{rows[0][1]} ({doc['policy_rule']}: {doc['policy_reason']})")
    assert doc["requester"] == f"slack:{ONCALL}" and doc["spec"] == spec.model_dump(mode="json")
    assert rows[0][1] == ChangeStatus.PENDING_APPROVAL.value, "the change waits in the approval flow"
    assert "[Approve]" in render(block.args) and "[Reject]" in render(block.args)
    # the clicker cannot approve their own request; someone else rejects it (nothing changes in the cluster)
    pair.sim(pair.a).click(ONCALL, "change_approve", change_id, REPORTS, block.args["_ts"], report_ts)
    refusal = wait_until(lambda: [c for c in api.of("chat.postEphemeral") if c.args.get("user") == ONCALL
                             and "may not approve" in str(c.args.get("text"))], 30, "no self-approval refusal")[0]
    assert change_id in refusal.args["text"]
    pair.sim(pair.b).click(PLATFORM, "change_reject", change_id, REPORTS, block.args["_ts"], report_ts)
    wait_until(lambda: "rejected" in api.message_text(block.args["_ts"]).lower(), 30, "the block never said rejected")


def _prom_value(url: str, query: str) -> float | None:
    res = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def _metric(r: Replica, name: str, auth: dict[str, str]) -> float:
    for line in httpx.get(f"{r.url}/metrics", headers=auth, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_an_incident_received_by_one_replica_is_approved_through_the_other_and_executes_once(
        pair: Pair, admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver,
        clean_faults: None, sandbox: dict[str, Any]) -> None:
    api = pair.api
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    apps = client.AppsV1Api(admin)
    t0 = time.time()
    faults.inject(admin, fleet, "bad-rollout")
    generation = apps.read_namespaced_deployment(w.name, w.namespace).metadata.generation
    names = {"ModelServingErrorRateHigh", "ModelServingTTFTHigh"}
    note = webhook.wait_for(lambda n: any(a["labels"].get("alertname") in names
                                          and a["labels"].get("namespace") == w.namespace for a in n.alerts()),
                            timeout=240, since=t0)
    body = note.body
    body["groupKey"] = f"{body['groupKey']}:{uuid.uuid4().hex[:6]}"  # a fresh incident for this test
    r = httpx.post(f"{pair.a.url}/alertmanager", content=json.dumps(body).encode(),
                   headers=webhook_auth(sandbox), timeout=10)
    assert r.status_code == 200
    incident_id = r.json()["incident"]

    top = wait_until(lambda: [c for c in api.of("chat.postMessage") if c.args.get("channel") == INCIDENTS
                         and not c.args.get("thread_ts")], 60, "no incident message")[0].args["_ts"]
    change_post = wait_until(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top
                                 and buttons(c.args)], 120,
                        lambda: f"no change request block: {pair.logs()[-3000:]}")[0]
    change_id = buttons(change_post.args)[0][1]
    assert "rollback" in render(change_post.args) and w.name in render(change_post.args)

    # Approve on replica B (the incident came in through A); a second approver's click reaches A just after.
    assert pair.sim(pair.b).click(ONCALL, "change_approve", change_id, INCIDENTS, change_post.args["_ts"],
                                  top).status_code == 200
    time.sleep(0.5)
    assert pair.sim(pair.a).click(PLATFORM, "change_approve", change_id, INCIDENTS, change_post.args["_ts"],
                                  top).status_code == 200

    wait_until(lambda: "*resolved*" in api.message_text(top), 420,
          lambda: f"the incident message never said resolved: {api.message_text(top)}\n{pair.logs()[-3000:]}",
          every=1)
    d = apps.read_namespaced_deployment(w.name, w.namespace)
    with psycopg.connect(pair.store_url) as pg:
        executions = pg.execute("SELECT state, owner FROM executions WHERE change_id = %s", (change_id,)).fetchall()
        applied = pg.execute("SELECT count(*) FROM audit WHERE action = %s AND decision = 'applied'",
                             (f"execute {change_id}",)).fetchone()
        status = pg.execute("SELECT status FROM changes WHERE id = %s", (change_id,)).fetchone()
    print(f"[replicas-slack] {incident_id}: {change_id} executed by {executions}; generation {generation} → "
          f"{d.metadata.generation}; {time.time() - t0:.0f}s from injection to resolved")
    assert d.metadata.generation == generation + 1, "the rollback was written to the apiserver exactly once"
    assert len(executions) == 1 and executions[0][0] == "applied" and applied == (1,)
    assert status == (ChangeStatus.VERIFIED.value,)
    final = api.message_text(change_post.args["_ts"])
    assert "applied and verified" in final and "[Approve]" not in final


def _ready_replica(r: Replica) -> bool:
    return ready(r.url)
