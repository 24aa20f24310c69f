"""An incident's alerts as rows: the cap and re-sends on rows, both backends folding alike, concurrent
deliveries from two replicas losing nothing, and a store written in the older layout (the whole incident
as one JSON document) opening and reading as before.

Each test runs on SQLite and on a real Postgres (the `db_target` fixture), where a delivery is one
statement (`opsagent_record_alerts`) rather than the Python fold SQLite uses.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent import incidents
from agent.models import Incident, IncidentStatus
from agent.storage.db import LOOP_APPLICATION_NAME, is_postgres
from agent.storage.store import SqlStore
from tests.postgres import LocalPostgres

NOW = dt.datetime(2026, 11, 23, 8, 1, tzinfo=dt.UTC)
GROUP = '{}:{alertname="GPUXidErrors"}'


def alert(fp: str, status: str = "firing", summary: str = "xid 79", ends: str = "0001-01-01T00:00:00Z",
          starts: str = "2026-11-23T08:00:00Z", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "GPUXidErrors", "severity": "critical", "node": fp, **labels},
            "annotations": {"summary": summary}, "startsAt": starts, "endsAt": ends,
            "generatorURL": "", "fingerprint": fp}


def note(*alerts: dict[str, Any], status: str = "firing", group: str = GROUP) -> incidents.Notification:
    return incidents.parse(json.dumps({
        "version": "4", "groupKey": group, "status": status, "receiver": "opsagent", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": list(alerts)}).encode())


def test_the_cap_resends_changes_and_resolution_apply_to_rows(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(note(alert("a"), alert("b"), alert("c")), NOW, max_alerts=5)
    assert first.opened and first.changed and first.status == IncidentStatus.FIRING
    again = store.record_alerts(note(alert("a"), alert("b"), alert("c")), NOW + dt.timedelta(minutes=1), max_alerts=5)
    assert (again.incident_id, again.changed, again.opened) == (first.incident_id, False, False), "a re-send"

    more = store.record_alerts(note(alert("d"), alert("e"), alert("f"), alert("g")), NOW, max_alerts=5)
    assert more.changed
    inc = store.incident(first.incident_id)
    assert inc is not None and [a.fingerprint for a in inc.alerts] == ["a", "b", "c", "d", "e"]
    assert inc.alerts_over_cap == 2, "f and g came after the cap and are counted, not stored"

    # At the cap an update to an alert it holds still applies; a new one does not.
    upd = store.record_alerts(note(alert("a", summary="xid 79 again"), alert("h")), NOW, max_alerts=5)
    inc = store.incident(first.incident_id)
    assert upd.changed and inc is not None and len(inc.alerts) == 5 and inc.alerts_over_cap == 3
    assert inc.alerts[0].annotations == {"summary": "xid 79 again"}

    ended = "2026-11-23T08:30:00Z"
    part = store.record_alerts(note(*(alert(fp, "resolved", ends=ended) for fp in "abcd"), status="resolved"),
                               NOW, max_alerts=5)
    assert part.status == IncidentStatus.FIRING, "e still fires"
    done = store.record_alerts(note(alert("e", "resolved", ends=ended), status="resolved"), NOW, max_alerts=5)
    inc = store.incident(first.incident_id)
    assert done.status == IncidentStatus.RESOLVED and inc is not None and inc.status == IncidentStatus.RESOLVED
    assert all(a.ends_at == dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.UTC) for a in inc.alerts)
    assert inc.notifications == 6
    store.close()


def test_a_fingerprint_twice_in_one_body_is_stored_once_with_its_last_version(db_target: str) -> None:
    store = SqlStore(db_target)
    rec = store.record_alerts(note(alert("a", summary="old"), alert("a", summary="new")), NOW)
    inc = store.incident(rec.incident_id)
    assert inc is not None and len(inc.alerts) == 1 and inc.alerts[0].annotations["summary"] == "new"
    store.close()


# (delivery, cap, seconds after NOW it arrives)
FLAP = incidents.FLAP_WINDOW.total_seconds()

SCRIPT: list[tuple[incidents.Notification, int, float]] = [
    (note(alert("a"), alert("b", model_name="m")), 3, 0),
    (note(alert("a"), alert("b", model_name="m")), 3, 1),  # re-send
    (note(alert("b", summary="worse", model_name="m"), alert("c"), alert("d"), alert("e")), 3, 2),  # change + cap
    (note(alert("a", "resolved", ends="2026-11-23T08:10:00+01:00"), status="resolved"), 3, 3),  # a non-UTC offset
    (note(alert("a", "resolved", ends="2026-11-23T07:10:00Z"), status="resolved"), 3, 4),  # the same instant
    (note(*(alert(fp, "resolved", ends="2026-11-23T08:20:00Z") for fp in "bc"), status="resolved"), 3, 5),
    # fires again after it resolved, beyond the flap window: a new episode
    (note(*(alert(fp, starts="2026-11-23T09:00:00Z") for fp in "az")), 3, 5 + FLAP + 60),
    (note(alert("q", severity="warning"), group="other"), 3, 5 + FLAP + 61),
    # resolves and fires again two minutes later: flapping, the same incident reopened
    (note(*(alert(fp, "resolved", ends="2026-11-23T09:40:00Z") for fp in "az"), status="resolved"), 3,
     5 + FLAP + 120),
    (note(*(alert(fp, starts="2026-11-23T09:42:00Z") for fp in "az")), 3, 5 + FLAP + 240),
]


def test_sqlite_and_postgres_fold_the_same_deliveries_into_the_same_incidents(tmp_path: Path,
                                                                               postgres: LocalPostgres) -> None:
    """The Postgres function and the Python fold are two spellings of one rule: they must agree."""
    results = {}
    for name, target in (("sqlite", str(tmp_path / "s.db")), ("postgres", postgres.create_database())):
        store = SqlStore(target)
        seen = [store.record_alerts(n, NOW + dt.timedelta(seconds=after), max_alerts=cap)
                for n, cap, after in SCRIPT]
        results[name] = (seen, [i.model_dump(mode="json") for i in store.incidents()])
        store.close()
    assert results["sqlite"] == results["postgres"]
    seen, stored = results["postgres"]
    assert [(r.changed, r.opened) for r in seen] == [(True, True), (False, False), (True, False), (True, False),
                                                     (False, False), (True, False), (True, True), (True, True),
                                                     (True, False), (True, False)]
    assert seen[-1].incident_id == seen[6].incident_id, "a flap reopens its incident"
    assert [i["reopened"] for i in stored if i["id"] == seen[6].incident_id] == [1]
    assert len(stored) == 3 and {i["status"] for i in stored} == {"firing", "resolved"}


def test_two_replicas_delivering_one_group_at_once_lose_no_alert(db_target: str) -> None:
    a, b = SqlStore(db_target, pool_size=4), SqlStore(db_target, pool_size=4)

    def deliver(i: int) -> incidents.Notification:
        # Alertmanager re-sends what it sent before with each new alert: every body repeats a few older ones.
        n = note(*(alert(f"fp-{k:03d}") for k in range(max(0, i - 2), i + 1)))
        (a if i % 2 else b).record_alerts(n, NOW + dt.timedelta(milliseconds=i))
        return n

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(deliver, range(120)))
    (inc,) = a.incidents()
    assert sorted(al.fingerprint for al in inc.alerts) == [f"fp-{k:03d}" for k in range(120)]
    assert inc.notifications == 120 and inc.status == IncidentStatus.FIRING and inc.alerts_over_cap == 0
    a.close()
    b.close()


# The incidents table as main wrote it before alerts became rows (b5aafc7, agent/storage/store.py).
OLD_SCHEMA = """
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX incidents_open_group ON incidents(group_key) WHERE status = 'firing';
CREATE INDEX incidents_group ON incidents(group_key, created_at);
"""
FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"


def _old_incident() -> Incident:
    """An incident as the older code stored it: the whole model, alerts included, in `doc`."""
    n = incidents.parse(FIXTURE.read_bytes())
    alerts = incidents.alerts_of(n)
    return incidents.assemble(id=incidents.incident_id(n.groupKey, min(a.starts_at for a in alerts)),
                              group_key=n.groupKey, firing=len(alerts), alerts=alerts, created_at=NOW,
                              updated_at=NOW + dt.timedelta(minutes=2), notifications=4, alerts_over_cap=7)


def _write_old(target: str, inc: Incident, *, create: bool) -> None:
    row = (inc.id, inc.group_key, inc.status.value, inc.model_dump_json(), inc.created_at.isoformat(),
           inc.updated_at.isoformat())
    insert = "INSERT INTO incidents (id, group_key, status, doc, created_at, updated_at) VALUES (?,?,?,?,?,?)"
    if is_postgres(target):
        import psycopg

        with psycopg.connect(target, autocommit=True) as pg:
            if create:
                pg.execute(OLD_SCHEMA)
            pg.execute(insert.replace("?", "%s"), row)
    else:
        with sqlite3.connect(target) as lite:
            if create:
                lite.executescript(OLD_SCHEMA)
            lite.execute(insert, row)


def test_a_store_written_in_the_older_layout_opens_reads_and_takes_deliveries(db_target: str) -> None:
    old = _old_incident()
    _write_old(db_target, old, create=True)
    store = SqlStore(db_target)
    assert store.incident(old.id) == old, "moved to rows at open, read back the same"
    assert [i.id for i in store.needing_triage()] == [old.id]
    n = incidents.parse(FIXTURE.read_bytes())
    again = store.record_alerts(n, NOW + dt.timedelta(minutes=5))
    assert (again.incident_id, again.changed) == (old.id, False), "a re-send of what it holds changes nothing"
    body = json.loads(FIXTURE.read_text())
    body["alerts"].append({**body["alerts"][1], "fingerprint": "aaaa000011112222",
                           "labels": {**body["alerts"][1]["labels"], "replica": "c"}})
    inc, changed = store.record_notification(incidents.parse(json.dumps(body).encode()), NOW + dt.timedelta(minutes=6))
    assert changed and inc.id == old.id and len(inc.alerts) == 3
    assert (inc.notifications, inc.alerts_over_cap) == (6, 7), "counters carried over from the older document"
    store.close()


def test_an_incident_an_older_replica_writes_after_the_upgrade_is_read_and_updated(db_target: str) -> None:
    store = SqlStore(db_target)  # the new layout, then an older replica (a rolling upgrade) writes its form
    old = _old_incident()
    _write_old(db_target, old, create=False)
    assert store.incident(old.id) == old
    body = json.loads(FIXTURE.read_text())
    body["alerts"][0]["annotations"]["summary"] = "now 9% of requests fail"
    rec = store.record_alerts(incidents.parse(json.dumps(body).encode()), NOW + dt.timedelta(minutes=5))
    inc = store.incident(old.id)
    assert rec.changed and rec.incident_id == old.id and inc is not None and len(inc.alerts) == 2
    assert inc.alerts[0].annotations["summary"] == "now 9% of requests fail"
    assert inc.notifications == 5
    store.close()


def test_two_replicas_over_http_take_one_group_at_once_into_one_incident(db_target: str) -> None:
    """The webhook path (`arecord_alerts`: on Postgres one statement from the event loop) on two servers."""
    import asyncio

    import httpx

    from agent.entry.server import create_app
    from tests.serving import serve

    stores = [SqlStore(db_target), SqlStore(db_target)]
    bodies = [json.dumps({"version": "4", "groupKey": GROUP, "status": "firing", "receiver": "opsagent",
                          "alerts": [alert(f"fp-{k:03d}") for k in range(max(0, i - 2), i + 1)]}).encode()
              for i in range(90)]

    async def post_all(urls: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(*(client.post(f"{urls[i % 2]}/alertmanager", content=b)
                                             for i, b in enumerate(bodies)))
        return [r.status_code for r in answers]

    with serve(create_app(stores[0], None)) as a, serve(create_app(stores[1], None)) as b:
        assert set(asyncio.run(post_all([a, b]))) == {200}
        assert set(asyncio.run(post_all([b, a]))) == {200}, "the same bodies again: re-sends, counted"
    (inc,) = stores[0].incidents()
    assert sorted(al.fingerprint for al in inc.alerts) == [f"fp-{k:03d}" for k in range(90)]
    assert inc.notifications == 180
    for s in stores:
        s.close()


def test_intake_from_one_event_loop_then_another_and_after_a_dropped_connection(db_target: str) -> None:
    import asyncio

    store = SqlStore(db_target)
    first = asyncio.run(store.arecord_alerts(note(alert("a")), NOW))
    second = asyncio.run(store.arecord_alerts(note(alert("b")), NOW))  # a new loop: its own connections

    async def after_the_server_dropped_them() -> bool:
        await store.arecord_alerts(note(alert("c")), NOW)
        if store.postgres:  # the server ends every idle connection of this loop (a restart, an idle timeout)
            import psycopg

            with psycopg.connect(db_target, autocommit=True) as admin:
                ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = current_database() AND application_name = %s",
                                      (LOOP_APPLICATION_NAME,)).fetchone()
                assert ended is not None and ended[0] >= 1
        return (await store.arecord_alerts(note(alert("d")), NOW)).changed

    assert asyncio.run(after_the_server_dropped_them())
    assert first.incident_id == second.incident_id and second.changed
    inc = store.incident(first.incident_id)
    assert inc is not None and [a.fingerprint for a in inc.alerts] == ["a", "b", "c", "d"]
    store.close()


def test_an_alert_firing_again_with_a_new_start_is_written_as_a_new_episode(db_target: str) -> None:
    # Its resolution was never delivered (a receiver down, a sandbox torn down): Alertmanager fires the same
    # alert again hours later with a new startsAt. Triage scopes "what this episode already changed" by it.
    store = SqlStore(db_target)
    first = store.record_alerts(note(alert("a")), NOW)
    later = store.record_alerts(note(alert("a", starts="2026-11-23T15:00:00Z")), NOW + dt.timedelta(hours=7))
    assert (later.incident_id, later.changed) == (first.incident_id, True), "not a re-send"
    inc = store.incident(first.incident_id)
    assert inc is not None and inc.alerts[0].starts_at == dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)
    store.close()
