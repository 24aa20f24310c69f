"""The executor in its own process on the real sandbox, asked by a process without write credentials.

The "parser" side here is what `opsagent serve` is in production: an app built with `executor.socket` and no
writer kubeconfig, sharing the store with the executor process. It plays a compromised parser too: it writes
forged approvals and edits change rows in the store it can reach, and sends the socket requests it should
not. Each time the executor refuses, audits the refusal, and the Deployment on the real API server is read
back unchanged. A SIGKILLed executor process is recovered by the existing reconcile; and end to end, a real
`opsagent serve` (no write credentials) and a real `opsagent executor serve` take an alert to a verified
rollback, with both processes' records in one audit chain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from agent.app import App, build_app
from agent.change.executor.client import ExecutorClient, ExecutorUnavailable
from agent.change.executor.outcome import ExecutionRefused
from agent.change.flow import ChangeFlow
from agent.change.models import Approval, ChangeSpec, ChangeStatus
from agent.config import Settings
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox import faults
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.receiver import WebhookReceiver
from tests.integration.conftest import webhook_auth
from tests.serving import free_port, serve, stop_process
from tests.slack_standin import ONCALL, SlackClientSim, SlackStandIn, buttons

pytestmark = pytest.mark.sandbox
ROOT = Path(__file__).parents[2]
OPSAGENT = Path(sys.executable).parent / "opsagent"


def _config(tmp: Path, **extra: Any) -> Path:
    f = tmp / "settings.yaml"
    f.write_text(yaml.safe_dump({"executor": {"socket": str(tmp / "run" / "executor" / "executor.sock")},
                                 # a killed executor's claim is abandoned at once (production waits 30 s)
                                 "execution": {"claim_ttl_s": 0}, **extra}))
    return f


def _start(argv: list[str], log: Path, sock: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240  # importing the app takes a minute on the shared, loaded machine
    while not _listening(sock):  # a killed executor's socket file may still be there: connect, not stat
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"the executor did not listen on {sock}: {log.read_text()[-1500:]}")
        time.sleep(0.2)
    return proc


def _listening(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


class Parts:
    """The executor process, and the parser side's app (no write credentials) on the same store."""

    def __init__(self, sandbox: dict[str, Any], tmp: Path) -> None:
        self.sandbox, self.tmp = sandbox, tmp
        self.config = _config(tmp)
        self.state = tmp / "state"
        self.settings: Settings = settings_for(self.config, sandbox, state_dir=str(self.state))
        self.sock = self.settings.executor.socket
        assert self.sock is not None
        self.status_file = tmp / "status.json"
        self.status_file.write_text(json.dumps({k: v for k, v in sandbox.items() if not k.startswith("_")}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.parser: App = build_app(self.settings.without_write_credentials())

    def start(self, crash: str | None = None) -> subprocess.Popen[bytes]:
        if crash:
            argv = [sys.executable, "-m", "tests.integration.executor_socket_child", str(self.status_file),
                    str(self.config), str(self.state), crash]
        else:
            argv = [str(OPSAGENT), "executor", "serve", "--sandbox", "--sandbox-dir",
                    str(self.sandbox["_sandbox"].s.dir), "--state-dir", str(self.state), "--config", str(self.config)]
        self.proc = _start(argv, self.tmp / "executor.log", self.sock)  # type: ignore[arg-type]
        return self.proc

    def client(self) -> ExecutorClient:
        c = self.parser.change_executor()
        assert isinstance(c, ExecutorClient)
        return c

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.parser.close()


@pytest.fixture
def parts(sandbox: dict[str, Any], tmp_path: Path) -> Iterator[Parts]:
    p = Parts(sandbox, tmp_path)
    yield p
    p.close()


def _scale(parts: Parts, fleet: Fleet, admin: client.ApiClient) -> tuple[ChangeSpec, Any, Callable[[], Any]]:
    w = fleet.workload("summarizer")
    apps = client.AppsV1Api(admin)

    def read() -> Any:
        return apps.read_namespaced_deployment(w.name, w.namespace)

    d = read()
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=parts.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": d.spec.replicas + 1})
    return spec, d, read


def _refused(parts: Parts) -> list[str]:
    return [e["reason"] for e in parts.parser.audit.events() if e["decision"] == "refused"]


def test_the_executor_refuses_what_a_compromised_parser_asks_and_nothing_is_mutated(
        parts: Parts, fleet: Fleet, admin: client.ApiClient) -> None:
    parts.start()
    ex = parts.client()
    spec, before, read = _scale(parts, fleet, admin)
    ch = asyncio.run(ex.propose(spec, reason="test", requester="user:alice"))
    assert ch.status == ChangeStatus.PENDING_APPROVAL and "replicas" in ch.diff

    def unchanged() -> None:
        now = read()
        assert (now.spec.replicas, now.metadata.generation) == (before.spec.replicas, before.metadata.generation)
        assert parts.parser.ledger.execution(ch.id) is None, "never claimed"

    # 1. not approved
    with pytest.raises(ExecutionRefused, match="needs 1 more approval"):
        asyncio.run(ex.execute(ch.id))
    unchanged()
    # 2. an approval written straight into the store, bound to another state of the target
    now = dt.datetime.now(dt.UTC)
    other = ch.fingerprint.model_copy(update={"spec_hash": "0" * 64})
    parts.parser.ledger.add_approval(Approval(change_id=ch.id, approver="carol", role="ml-platform", decision="approve",
                                              at=now, spec_digest=ch.spec_digest, fingerprint=other,
                                              expires_at=now + dt.timedelta(minutes=15)))
    with pytest.raises(ExecutionRefused, match="target was in another state"):
        asyncio.run(ex.execute(ch.id))
    unchanged()
    # 3. a forged approval that expired
    parts.parser.ledger.add_approval(Approval(change_id=ch.id, approver="bob", role="ml-platform",
                                              decision="approve", at=now - dt.timedelta(hours=1),
                                              spec_digest=ch.spec_digest, fingerprint=ch.fingerprint,
                                              expires_at=now - dt.timedelta(minutes=45)))
    with pytest.raises(ExecutionRefused, match="expired"):
        asyncio.run(ex.execute(ch.id))
    unchanged()
    # 4. the change row edited to say it is approved and needs nobody
    pending = parts.parser.ledger.get(ch.id)
    assert pending is not None
    parts.parser.ledger.update(pending.model_copy(update={"status": ChangeStatus.APPROVED, "approvals_required": 0,
                                                          "approver_roles": []}))
    with pytest.raises(ExecutionRefused, match="policy now asks for 1 approval"):
        asyncio.run(ex.execute(ch.id))
    unchanged()
    # 4b. the row edited to allow self-approval: the executor itself then records the requester's own
    # approval (it decides on the rule recorded on the change), but will not execute on it
    parts.parser.ledger.update(pending.model_copy(update={"allow_self_approval": True}))
    assert ex.approve(ch.id, "alice").status == ChangeStatus.APPROVED
    with pytest.raises(ExecutionRefused, match="allows self-approval; policy does not"):
        asyncio.run(ex.execute(ch.id))
    unchanged()
    parts.parser.ledger.update(pending)
    # 5. a request that claims the approval itself
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(parts.sock))
        s.sendall(json.dumps({"op": "execute", "change_id": ch.id, "approved": True,
                              "approvals": [{"approver": "bob"}]}).encode() + b"\n")
        answer = json.loads(s.makefile().readline())
    assert answer["error"] == "malformed" and "approved" in answer["message"]
    unchanged()

    # A real approval through the executor: it runs, once.
    assert ex.approve(ch.id, "bob").status == ChangeStatus.APPROVED
    done = asyncio.run(ex.execute(ch.id, actor="user:bob"))
    assert (done.status, done.applied_now) == (ChangeStatus.APPLIED, True)
    applied = read()
    assert applied.spec.replicas == before.spec.replicas + 1
    # 6. already executed: refused and audited; the client tells a resumed flow it is applied
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(parts.sock))
        s.sendall(json.dumps({"op": "execute", "change_id": ch.id}).encode() + b"\n")
        again = json.loads(s.makefile().readline())
    assert again["error"] == "refused" and "already executed" in again["message"]
    assert read().metadata.generation == applied.metadata.generation, "not written twice"

    reasons = _refused(parts)
    for words in ("more approval", "another state", "expired", "policy now asks", "allows self-approval",
                  "Extra inputs", "already executed"):
        assert any(words in r for r in reasons), f"no audited refusal mentions {words!r}: {reasons}"
    assert parts.parser.audit.verify().ok
    client.AppsV1Api(admin).patch_namespaced_deployment_scale(
        spec.target.name, spec.target.namespace, {"spec": {"replicas": before.spec.replicas}})


@pytest.mark.parametrize("crash", ["after-claim", "after-write"])
def test_an_executor_process_killed_mid_change_is_reconciled_once(
        crash: str, parts: Parts, fleet: Fleet, admin: client.ApiClient) -> None:
    """SIGKILL inside the executor process; the parser's flow sees it go away, a new executor process starts,
    and `resume_pending` continues the thread: the executor's reconcile applies the change exactly once."""
    doomed = parts.start(crash)
    ex = parts.client()
    spec, before, read = _scale(parts, fleet, admin)
    ch = asyncio.run(ex.propose(spec, reason="test", requester="agent:rules"))
    flow = ChangeFlow(ex, parts.parser.checkpointer)  # no verifier: this test is about the write
    asyncio.run(flow.open(ch))
    with pytest.raises(ExecutorUnavailable, match="without an answer"):
        asyncio.run(flow.decide(ch.id, "bob"))
    assert doomed.wait(30) == -9
    assert parts.parser.ledger.execution(ch.id) is not None, "the claim was recorded before the kill"
    gen_after_crash = read().metadata.generation

    parts.start()
    resumed = asyncio.run(flow.resume_pending())
    mine = [r for r in resumed if r.change.id == ch.id]
    # (an applied, unverified change is listed once more under `applied`: its finished thread does nothing)
    assert mine and {r.stage for r in mine} == {"unverified"}, [(r.change.id, r.stage, r.detail) for r in resumed]
    d = read()
    assert d.spec.replicas == before.spec.replicas + 1
    assert d.metadata.generation == gen_after_crash + (1 if crash == "after-claim" else 0), "written exactly once"
    assert parts.parser.ledger.execution(ch.id).state == "applied"  # type: ignore[union-attr]
    assert parts.parser.audit.verify().ok
    client.AppsV1Api(admin).patch_namespaced_deployment_scale(
        spec.target.name, spec.target.namespace, {"spec": {"replicas": before.spec.replicas}})


SECRET = "integration-signing-secret"
CHANNEL = "C0SANDBOX"


@pytest.mark.usefixtures("clean_faults")
def test_alert_to_verified_rollback_through_serve_without_write_credentials_and_the_executor_process(
        sandbox: dict[str, Any], tmp_path: Path, admin: client.ApiClient, fleet: Fleet,
        webhook: WebhookReceiver) -> None:
    api = SlackStandIn()
    with serve(api.app()) as api_url:
        api.base_url = api_url
        config = _config(tmp_path, slack={"enabled": True, "bot_token": "xoxb-sandbox", "signing_secret": SECRET,
                                          "channel": CHANNEL, "api_url": f"{api_url}/api/"})
        state = tmp_path / "state"
        sb = ["--sandbox", "--sandbox-dir", str(sandbox["_sandbox"].s.dir), "--state-dir", str(state),
              "--config", str(config)]
        sock = tmp_path / "run" / "executor" / "executor.sock"
        executor = _start([str(OPSAGENT), "executor", "serve", *sb], tmp_path / "executor.log", sock)
        port = free_port()
        with (tmp_path / "serve.log").open("ab") as out:
            server = subprocess.Popen([str(OPSAGENT), "serve", "--port", str(port), *sb], cwd=ROOT,
                                      stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(lambda: _healthy(url), 90, lambda: (tmp_path / "serve.log").read_text()[-1500:])
            assert f"executor at {sock}" in (tmp_path / "serve.log").read_text()
            w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
            t0 = time.time()
            faults.inject(admin, fleet, "bad-rollout")
            names = {"ModelServingErrorRateHigh", "ModelServingTTFTHigh"}
            note = webhook.wait_for(lambda n: any(a["labels"].get("alertname") in names
                                                  and a["labels"].get("namespace") == w.namespace
                                                  for a in n.alerts()), timeout=240, since=t0)
            r = httpx.post(f"{url}/alertmanager", content=json.dumps(note.body).encode(),
                           headers=webhook_auth(sandbox), timeout=10)
            assert r.status_code == 200, r.text
            incident_id = r.json()["incident"]
            top = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("channel") == CHANNEL
                                    and not c.args.get("thread_ts")], what="incident message")[0].args["_ts"]
            post = api.wait(lambda: [c for c in api.of("chat.postMessage") if c.args.get("thread_ts") == top
                                     and buttons(c.args)], timeout=180, what="change request block")[0]
            change_id = buttons(post.args)[0][1]
            ack = SlackClientSim(url, SECRET, api).click(ONCALL, "change_approve", change_id, CHANNEL,
                                                         post.args["_ts"], top)
            assert ack.status_code == 200
            api.wait(lambda: "*resolved*" in api.message_text(top), timeout=420, what="top message: resolved")
        finally:
            stop_process(server)
            stop_process(executor)

    reader = build_app(settings_for(config, sandbox, state_dir=str(state)).without_write_credentials())
    try:
        ch = reader.ledger.get(change_id)
        assert ch is not None and ch.status == ChangeStatus.VERIFIED, ch
        run = reader.ledger.execution(change_id)
        assert run is not None and run.owner.endswith(f":{executor.pid}"), "the executor process wrote it"
        events = list(reader.audit.events(incident_id))
        triage = [e for e in events if e["kind"] == "tool_call" and e["actor"].startswith("agent:")]
        applied = [e for e in events if e["kind"] == "execution" and e["decision"] == "applied"]
        verified = [e for e in events if e["kind"] == "verification" and e["decision"] == "pass"]
        assert triage, "serve's triage reads are in the chain"
        assert len(applied) == 1 and change_id in applied[0]["action"], applied
        assert verified, "the verdict serve measured was recorded through the executor"
        assert reader.audit.verify().ok, "one chain, both processes' records, intact"
    finally:
        reader.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(ok: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.5)
    raise AssertionError(f"condition not met in {timeout:.0f} s: {why()}")
