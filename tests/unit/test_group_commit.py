"""Group commit of webhook deliveries on Postgres, as bad luck meets it.

Deliveries in flight on one replica share one statement and one commit (agent/storage/groupcommit.py). What
must hold: nobody is answered "stored" before the commit; a commit that fails fails every delivery of its
batch; one delivery the store cannot keep fails alone; two replicas batching the same groups in opposite
orders neither deadlock nor lose an alert; and a batch folds exactly as the deliveries one at a time would.
Every test runs on a real Postgres (fsync off: the session's test server) through the real store, and the
HTTP ones through the real server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from typing import Any

import httpx
import psycopg
import pytest

from agent import incidents
from agent.entry.server import create_app
from agent.storage.store import Recorded, SqlStore
from tests.postgres import LocalPostgres
from tests.serving import serve

NOW = dt.datetime(2026, 11, 23, 8, 1, tzinfo=dt.UTC)


def body(group: int, *fps: str, status: str = "firing", group_key: str | None = None) -> bytes:
    ends = "2026-11-23T08:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return json.dumps({
        "version": "4", "groupKey": group_key or f'{{}}:{{model="m-{group}"}}', "status": status,
        "receiver": "opsagent", "alerts": [
            {"status": status, "labels": {"alertname": "ErrorRateHigh", "model": f"m-{group}", "pod": fp},
             "annotations": {"summary": f"{fp} 5xx"}, "startsAt": "2026-11-23T08:00:00Z", "endsAt": ends,
             "fingerprint": fp} for fp in fps]}).encode()


def note(group: int, *fps: str, status: str = "firing") -> incidents.Notification:
    return incidents.parse(body(group, *fps, status=status))


@pytest.fixture
def pg_target(postgres: LocalPostgres) -> str:
    return postgres.create_database()


def stored(store: SqlStore) -> dict[str, list[str]]:
    """Each incident's group key → its alerts' fingerprints."""
    return {i.group_key: sorted(a.fingerprint for a in i.alerts) for i in store.incidents(limit=1000)}


def test_deliveries_in_flight_together_share_one_commit_and_each_gets_its_own_answer(pg_target: str) -> None:
    store = SqlStore(pg_target)

    async def deliver() -> list[Recorded]:
        return await asyncio.gather(*(store.arecord_alerts(note(g, f"p{g}-{k}"), NOW)
                                      for k in range(3) for g in range(10)))

    answers = asyncio.run(deliver())
    assert store.intake.stats.largest == 30 and store.intake.stats.batches == 1, "one statement, one commit"
    assert [a.opened for a in answers] == [True] * 10 + [False] * 20, "each group opened by its first delivery"
    assert all(a.changed for a in answers)
    assert len({a.incident_id for a in answers}) == 10
    assert stored(store) == {f'{{}}:{{model="m-{g}"}}': [f"p{g}-{k}" for k in range(3)] for g in range(10)}
    store.close()


def _fail_every_commit(target: str, only_label: str | None = None) -> None:
    """A deferred constraint trigger: the batch's statement succeeds, its COMMIT fails (all rows, or the rows of
    alerts whose `pod` label is `only_label`)."""
    cond = "true" if only_label is None else f"NEW.labels::jsonb->>'pod' = '{only_label}'"
    with psycopg.connect(target, autocommit=True) as c:
        c.execute(f"""
            CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF {cond} THEN RAISE EXCEPTION 'commit refused for %', NEW.fingerprint; END IF; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT OR UPDATE ON incident_alerts
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit();""")


async def _post_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.post(f"{url}/alertmanager", content=b) for b in bodies))


def test_a_commit_that_fails_fails_every_delivery_of_its_batch_and_none_is_acknowledged(pg_target: str) -> None:
    store = SqlStore(pg_target)
    _fail_every_commit(pg_target)
    with serve(create_app(store, None)) as url:
        answers = asyncio.run(_post_all(url, [body(g, f"p{g}") for g in range(24)]))
    assert [r.status_code for r in answers] == [503] * 24, "Alertmanager retries a 5xx; a 200 would lose it"
    assert all("could not be stored" in r.json()["error"] for r in answers)
    assert store.intake.stats.largest > 1 and store.intake.stats.failed_batches >= 1, "the deliveries were batched"
    assert store.incidents() == [], "nothing of the failed commit is visible"
    store.close()


def test_one_delivery_the_store_cannot_commit_fails_alone_and_its_batch_mates_are_stored(pg_target: str) -> None:
    store = SqlStore(pg_target)
    _fail_every_commit(pg_target, only_label="p7")
    with serve(create_app(store, None)) as url:
        answers = asyncio.run(_post_all(url, [body(g, f"p{g}") for g in range(24)]))
    codes = {g: r.status_code for g, r in enumerate(answers)}
    assert codes.pop(7) == 503
    assert set(codes.values()) == {200}
    assert store.intake.stats.failed_batches >= 1, "p7 failed a batch; its mates were then written alone"
    assert stored(store) == {f'{{}}:{{model="m-{g}"}}': [f"p{g}"] for g in range(24) if g != 7}
    store.close()


def test_a_value_no_store_keeps_gets_400_and_its_batch_mates_are_stored(pg_target: str) -> None:
    store = SqlStore(pg_target)
    bad = body(99, "nul", group_key='{}:{model="m-\u0000"}')
    with serve(create_app(store, None)) as url:
        answers = asyncio.run(_post_all(url, [*(body(g, f"p{g}") for g in range(12)), bad]))
    assert [r.status_code for r in answers] == [200] * 12 + [400]
    assert "NUL" in answers[-1].json()["error"]
    assert len(stored(store)) == 12
    store.close()


def test_a_batch_folds_as_the_same_deliveries_one_at_a_time(pg_target: str, tmp_path: Any) -> None:
    """Several deliveries of one group in one batch keep their order: fire, resolve, re-fire within the flap
    window (a reopen), a re-send, an update; the result equals SQLite's, one delivery at a time."""
    sequence = []
    for g in range(6):
        sequence += [note(g, "a", "b"), note(g, "a", "b", status="resolved"), note(g, "a", "c"), note(g, "a", "c"),
                     note(g, "d")]
    batched, one_by_one = SqlStore(pg_target), SqlStore(tmp_path / "one.db")

    async def deliver() -> list[Recorded]:
        return await asyncio.gather(*(batched.arecord_alerts(n, NOW) for n in sequence))

    answers = asyncio.run(deliver())
    assert batched.intake.stats.largest == len(sequence)
    assert answers == [one_by_one.record_alerts(n, NOW) for n in sequence]
    by_id = {i.id: i for i in batched.incidents(limit=100)}
    assert by_id == {i.id: i for i in one_by_one.incidents(limit=100)}
    assert {i.reopened for i in by_id.values()} == {1}
    batched.close()
    one_by_one.close()


def test_two_replicas_batching_the_same_groups_in_opposite_orders_lose_nothing_and_never_deadlock(
        pg_target: str) -> None:
    """Each replica's batches hold the locks of many groups at once; taken in arrival order, two replicas
    receiving the same groups in opposite orders would deadlock (Postgres aborts one batch after a second).
    The batch function takes them in one order."""
    stores = [SqlStore(pg_target), SqlStore(pg_target)]
    groups, rounds = 40, 4
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def replica(k: int) -> None:
        order = list(range(groups)) if k == 0 else list(reversed(range(groups)))

        async def deliver() -> None:
            for r in range(rounds):
                await asyncio.gather(*(stores[k].arecord_alerts(note(g, f"r{k}-{r}-{g}"), NOW) for g in order))

        try:
            start.wait()
            asyncio.run(deliver())
        except BaseException as e:  # reported below, with the other replica's
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert [s.intake.stats.failed_batches for s in stores] == [0, 0], "a batch was aborted (deadlock) and re-run"
    assert stored(stores[0]) == {f'{{}}:{{model="m-{g}"}}': sorted(f"r{k}-{r}-{g}" for k in range(2)
                                                                  for r in range(rounds)) for g in range(groups)}
    assert {i.notifications for i in stores[0].incidents(limit=100)} == {2 * rounds}
    for s in stores:
        s.close()
