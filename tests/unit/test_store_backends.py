"""The ledger and the store's leases on both backends: exactly-once claims and single holders under races.

Each test runs on SQLite and on a real Postgres; "replicas" are separate handles on one database,
racing from threads the way two `opsagent serve` processes would.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import incidents
from agent.change.ledger import Ledger
from agent.change.models import Approval, BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, ObjectRef, TriageReport
from agent.storage.store import SqlStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
NOW = dt.datetime(2026, 11, 23, 8, 1, tzinfo=dt.UTC)


@pytest.fixture
def ledgers(db_target: str) -> Iterator[tuple[Ledger, Ledger]]:
    a, b = Ledger(db_target), Ledger(db_target)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def stores(db_target: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    a, b = SqlStore(db_target), SqlStore(db_target)
    yield a, b
    a.close()
    b.close()


def change(cid: str = "ch-1") -> ChangeRequest:
    spec = ChangeSpec(action=ActionKind.SCALE, cluster="sandbox",
                      target=ObjectRef(kind="Deployment", name="chat", namespace="serving"), params={"replicas": 3})
    return ChangeRequest(id=cid, spec=spec, spec_digest=spec.digest(),
                         fingerprint=TargetFingerprint(kind="Deployment", name="chat", spec_hash="h"), risk="mutate",
                         blast_radius=BlastRadius(gpus=0, replicas=1, capacity_drop=0), reason="t",
                         requester="agent:rules", created_at=NOW,
                         status=ChangeStatus.PENDING_APPROVAL)


def test_a_change_saved_by_one_replica_is_seen_and_updated_by_the_other(ledgers: tuple[Ledger, Ledger]) -> None:
    a, b = ledgers
    assert a.save(change()) is True
    assert b.save(change()) is False, "proposing the same change again is a no-op"
    ch = b.get("ch-1")
    assert ch is not None and ch.status == ChangeStatus.PENDING_APPROVAL
    b.update(ch.model_copy(update={"status": ChangeStatus.APPROVED}))
    assert [c.id for c in a.list_changes(ChangeStatus.APPROVED)] == ["ch-1"]
    assert a.list_changes(ChangeStatus.PENDING_APPROVAL) == []


def test_one_approval_per_approver_across_replicas(ledgers: tuple[Ledger, Ledger]) -> None:
    a, b = ledgers
    a.save(change())
    ap = Approval(change_id="ch-1", approver="alice", role="oncall", decision="approve", at=NOW, spec_digest="d",
                  fingerprint=change().fingerprint, expires_at=NOW + dt.timedelta(minutes=15))
    assert a.add_approval(ap) is True
    assert b.add_approval(ap.model_copy(update={"at": NOW + dt.timedelta(seconds=1)})) is False
    assert [x.approver for x in b.approvals("ch-1")] == ["alice"]


def test_exactly_one_replica_wins_the_execution_claim(ledgers: tuple[Ledger, Ledger]) -> None:
    a, b = ledgers
    a.save(change())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (a if i % 2 else b).claim("ch-1", f"replica-{i}", "orig"), range(16)))
    winners = [ex.owner for won, ex in results if won]
    assert len(winners) == 1
    assert {ex.owner for _, ex in results} == set(winners), "every loser sees the winner's claim"
    a.set_intended("ch-1", "intended")
    b.finish("ch-1", "applied", "ok")
    ex = a.execution("ch-1")
    assert ex is not None and (ex.state, ex.intended_spec_hash, ex.detail) == ("applied", "intended", "ok")
    assert a.changes_since(NOW - dt.timedelta(days=1)) == 1
    assert a.changes_since(NOW - dt.timedelta(days=1), target="deployment/serving/chat") == 1


def test_one_group_gives_one_incident_whichever_replica_receives_it(stores: tuple[SqlStore, SqlStore]) -> None:
    a, b = stores
    body = json.loads(FIXTURE.read_text())

    def deliver(i: int) -> str:
        body_i = {**body, "alerts": [{**al, "fingerprint": f"{al.get('fingerprint', 'f')}-{i % 3}"}
                                     for al in body["alerts"]]}
        n = incidents.parse(json.dumps(body_i).encode())
        return (a if i % 2 else b).record_notification(n, NOW + dt.timedelta(seconds=i))[0].id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(deliver, range(24)))
    assert len(ids) == 1, f"concurrent deliveries of one group opened {len(ids)} incidents"
    assert len(a.incidents()) == 1


def test_an_incident_needs_triage_until_a_report_covers_its_last_change(stores: tuple[SqlStore, SqlStore]) -> None:
    a, b = stores
    incident, _ = a.record_notification(incidents.parse(FIXTURE.read_bytes()), NOW)
    assert [i.id for i in b.needing_triage()] == [incident.id]
    report = TriageReport(incident_id=incident.id, title="t", summary="s", status="inconclusive", hypotheses=[],
                          evidence=[], proposals=[], runbooks=[], reasoner="rules", started=NOW,
                          finished=NOW + dt.timedelta(seconds=5))
    b.save_report(report)
    assert a.needing_triage() == []


def test_a_lease_has_one_holder_until_it_expires_or_is_released(stores: tuple[SqlStore, SqlStore]) -> None:
    a, b = stores
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (a if i % 2 else b).try_lease("report:cost", f"r{i}", 30), range(16)))
    assert got.count(True) == 1
    holder = f"r{got.index(True)}"
    assert a.lease_holder("report:cost") == holder
    assert b.try_lease("report:cost", holder, 30) is True, "the holder renews"
    assert b.try_lease("report:cost", "intruder", 30) is False
    assert a.release_lease("report:cost", "intruder") is False, "only the holder releases"
    assert a.release_lease("report:cost", holder) is True
    assert b.try_lease("report:cost", "next", 0.2) is True
    assert a.try_lease("report:cost", "other", 30) is False
    time.sleep(0.3)
    assert a.lease_holder("report:cost") is None
    assert a.try_lease("report:cost", "other", 30) is True, "an expired lease goes to the next asker"
