"""Two `opsagent serve` replicas on one Postgres, against the real sandbox.

- an alert delivered to one replica is triaged once, and either replica serves the incident;
- a replica SIGKILLed mid-triage leaves the incident to the other, which finishes it once the dead
  replica's lease expires (resuming LangGraph's checkpoint where there is one);
- a change approved from two processes on the shared store at once is executed exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kubernetes import client

from agent.app import build_app
from agent.change.models import ChangeSpec, ChangeStatus
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox.fleet import Fleet
from tests.integration.conftest import webhook_auth
from tests.postgres import LocalPostgres
from tests.serving import Replica, free_port, ready, stop_process, wait_until

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
OPSAGENT = Path(sys.executable).parent / "opsagent"
AUDIT_KEY = "replica-test-audit-key-0123456789"



@pytest.fixture
def store_url(postgres: LocalPostgres) -> str:
    return postgres.create_database("replicas")


def _env(store_url: str) -> dict[str, str]:
    return {**os.environ, "OPSAGENT_STORE__URL": store_url, "OPSAGENT_AUDIT__KEY": AUDIT_KEY,
            "OPSAGENT_SERVER__TRIAGE_LEASE_S": "3", "OPSAGENT_SERVER__TRIAGE_SWEEP_S": "0.5"}


@pytest.fixture
def replicas(sandbox: dict[str, Any], store_url: str, tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path / f"serve-{name}.log"
            with log.open("wb") as err:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen(
                    [str(OPSAGENT), "serve", "--sandbox", "--sandbox-dir", sandbox["dir"], "--port", str(port),
                     "--state-dir", str(tmp_path / name)],
                    env=_env(store_url), stdout=subprocess.DEVNULL, stderr=err)
            started.append(Replica(name, f"http://127.0.0.1:{port}", proc, log))
        for r in started:
            wait_until(lambda r=r: _ready_replica(r), 240,
                       f"replica {r.name} did not become ready: {r.log.read_text()[-2000:]}")
        yield started
    finally:
        for r in started:
            stop_process(r.proc)




def _alert(group: str) -> bytes:
    body = json.loads(FIXTURE.read_text())
    body["groupKey"] = f'{{}}:{{alertname="ModelServingErrorRateHigh", test="{group}"}}'
    for i, a in enumerate(body["alerts"]):
        a["fingerprint"] = f"{group}-{i}"
    return json.dumps(body).encode()


def _reports(store_url: str, incident_id: str) -> int:
    with psycopg.connect(store_url) as pg:
        row = pg.execute("SELECT count(*) FROM triage_reports WHERE incident_id = %s", (incident_id,)).fetchone()
    return int(row[0]) if row else 0


def test_an_alert_to_one_replica_is_triaged_once_and_served_by_both(replicas: list[Replica],
                                                                    store_url: str, sandbox: dict[str, Any]) -> None:
    a, b = replicas
    auth = webhook_auth(sandbox)  # reads need the token too
    r = httpx.post(f"{a.url}/alertmanager", content=_alert(uuid.uuid4().hex[:8]),
                   headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["changed"] is True
    iid = r.json()["incident"]
    wait_until(lambda: httpx.get(f"{b.url}/incidents/{iid}", headers=auth, timeout=5).json()["report"] is not None, 90,
          "no triage report reached the other replica")
    seen = httpx.get(f"{b.url}/incidents/{iid}", headers=auth, timeout=5).json()
    assert seen["incident"]["id"] == iid and seen["report"]["incident_id"] == iid
    time.sleep(2)  # several sweeps of both replicas
    assert _reports(store_url, iid) == 1, "the incident was triaged more than once"
    again = httpx.post(f"{b.url}/alertmanager", content=_alert_from(r),
                   headers=webhook_auth(sandbox), timeout=10)
    assert again.json() == {**r.json(), "changed": False}, "a re-send to the other replica is a duplicate"


def _alert_from(first: httpx.Response) -> bytes:
    return first.request.content


def test_a_replica_killed_mid_triage_leaves_the_incident_to_the_other(replicas: list[Replica],
                                                                      store_url: str, sandbox: dict[str, Any]) -> None:
    by_pid = {r.proc.pid: r for r in replicas}
    r = httpx.post(f"{replicas[0].url}/alertmanager", content=_alert(uuid.uuid4().hex[:8]),
                   headers=webhook_auth(sandbox), timeout=10)
    iid = r.json()["incident"]
    holder = None
    deadline = time.monotonic() + 30
    with psycopg.connect(store_url, autocommit=True) as pg:
        while holder is None and time.monotonic() < deadline:
            row = pg.execute("SELECT holder FROM leases WHERE name = %s", (f"triage:{iid}",)).fetchone()
            holder = row[0] if row else None
            if holder is None:
                time.sleep(0.005)
    assert holder is not None, "no replica took the triage lease"
    victim = by_pid[int(holder.rsplit(":", 1)[1])]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    assert _reports(store_url, iid) == 0, "triage finished before the kill landed: nothing was interrupted"
    survivor = next(x for x in replicas if x is not victim)
    wait_until(lambda: _reports(store_url, iid) == 1, 60,
          f"the surviving replica did not finish {iid}: {survivor.log.read_text()[-2000:]}")
    assert f"triaged {iid}" in survivor.log.read_text()
    assert f"triaged {iid}" not in victim.log.read_text()
    with psycopg.connect(store_url) as pg:
        threads = pg.execute("SELECT count(DISTINCT thread_id) FROM checkpoints WHERE thread_id LIKE %s",
                             (f"triage:{iid}:%",)).fetchone()
    assert threads == (1,), "one durable triage thread, shared by both replicas"


def test_a_change_approved_from_two_replicas_at_once_executes_exactly_once(
        sandbox: dict[str, Any], store_url: str, admin: client.ApiClient, fleet: Fleet, tmp_path: Path) -> None:
    apps = client.AppsV1Api(admin)
    w = fleet.workload("completion")
    apps.patch_namespaced_deployment(w.name, w.namespace, {"spec": {"template": {"metadata": {
        "annotations": {"opsagent.dev/test-rollout": uuid.uuid4().hex[:6]}}}}})
    wait_until(lambda: _rolled_out(apps, w.namespace, w.name), 120, "the test rollout did not finish", every=1)
    start = _revision(apps, w.namespace, w.name)

    settings = settings_for(None, sandbox, state_dir=str(tmp_path / "proposer"),
                            store={"url": store_url}, audit={"key": AUDIT_KEY})
    app = build_app(settings)
    try:
        ch = asyncio.run(app.executor().propose(
            ChangeSpec(action=ActionKind.ROLLBACK, cluster=settings.kubernetes.cluster,
                       target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                       params={"to_revision": start - 1}), reason="bad rollout", requester="agent:rules"))
    finally:
        app.close()
    assert ch.status == ChangeStatus.PENDING_APPROVAL

    procs = [subprocess.Popen([str(OPSAGENT), "changes", "approve", ch.id, "--as", who, "--sandbox",
                               "--sandbox-dir", sandbox["dir"], "--state-dir", str(tmp_path / who)],
                              env=_env(store_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for who in ("alice", "bob")]
    outs = [p.communicate(timeout=120) for p in procs]
    text = [o.decode() + e.decode() for o, e in outs]
    # Each process either resumed the change's flow (one of them executed it; the other found it claimed
    # or applied) or was told the change no longer takes approvals. Exactly-once is checked on the API
    # and in the ledger and audit below.
    decided = [t for t in text if f"approved {ch.id} as " in t]
    refused = [t for t in text if "takes no approvals" in t]
    assert decided and len(decided) + len(refused) == 2, text
    wait_until(lambda: _rolled_out(apps, w.namespace, w.name), 120, "the rollback did not finish", every=1)
    assert _revision(apps, w.namespace, w.name) == start + 1, "exactly one new revision: applied once"
    with psycopg.connect(store_url) as pg:
        applied = pg.execute("SELECT count(*) FROM audit WHERE action = %s AND decision = 'applied'",
                             (f"execute {ch.id}",)).fetchone()
        claims = pg.execute("SELECT state FROM executions WHERE change_id = %s", (ch.id,)).fetchall()
    assert applied == (1,) and claims == [("applied",)]


def _revision(apps: client.AppsV1Api, ns: str, name: str) -> int:
    d = apps.read_namespaced_deployment(name, ns)
    return int(d.metadata.annotations["deployment.kubernetes.io/revision"])


def _rolled_out(apps: client.AppsV1Api, ns: str, name: str) -> bool:
    d = apps.read_namespaced_deployment(name, ns)
    s = d.status
    return bool((s.observed_generation or 0) >= d.metadata.generation and s.updated_replicas == d.spec.replicas
                and s.available_replicas == d.spec.replicas and (s.replicas or 0) == d.spec.replicas)


def _ready_replica(r: Replica) -> bool:
    return ready(r.url)
