"""Alertmanager notifications become incidents: grouped, deduplicated, never half-stored."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import incidents
from agent.models import IncidentStatus
from agent.storage.store import SqlStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
NOW = dt.datetime(2026, 11, 23, 8, 1, tzinfo=dt.UTC)


def body() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def store(db_target: str) -> Iterator[SqlStore]:
    s = SqlStore(db_target)
    yield s
    s.close()


def test_a_notification_opens_one_incident_with_its_alerts(store: SqlStore) -> None:
    inc, changed = store.record_notification(incidents.parse(json.dumps(body()).encode()), NOW)
    assert changed and inc.status == IncidentStatus.FIRING
    assert len(inc.alerts) == 2 and inc.severity == "critical"
    assert inc.title == "ModelServingErrorRateHigh llm-prod/llama-3.1-70b-instruct"
    assert inc.labels["namespace"] == "llm-prod" and "replica" not in inc.labels
    assert all(a.ends_at is None for a in inc.alerts), "Alertmanager's zero endsAt means still firing"


def test_a_resend_is_the_same_incident_and_changes_nothing(store: SqlStore) -> None:
    raw = json.dumps(body()).encode()
    first, _ = store.record_notification(incidents.parse(raw), NOW)
    again, changed = store.record_notification(incidents.parse(raw), NOW + dt.timedelta(minutes=5))
    assert again.id == first.id and not changed
    assert again.notifications == 2
    assert len(store.incidents()) == 1


def test_resolution_updates_the_same_incident_and_a_new_episode_opens_another(store: SqlStore) -> None:
    first, _ = store.record_notification(incidents.parse(json.dumps(body()).encode()), NOW)
    resolved = body()
    resolved["status"] = "resolved"
    for a in resolved["alerts"]:
        a["status"] = "resolved"
        a["endsAt"] = "2026-11-23T08:20:00Z"
    inc, changed = store.record_notification(incidents.parse(json.dumps(resolved).encode()), NOW)
    assert changed and inc.id == first.id and inc.status == IncidentStatus.RESOLVED
    refire = body()
    for a in refire["alerts"]:
        a["startsAt"] = "2026-11-23T09:00:00Z"
    later, _ = store.record_notification(incidents.parse(json.dumps(refire).encode()), NOW + dt.timedelta(hours=1))
    assert later.id != first.id and later.status == IncidentStatus.FIRING
    assert len(store.incidents()) == 2


def test_a_new_alert_joining_the_group_is_a_change(store: SqlStore) -> None:
    store.record_notification(incidents.parse(json.dumps(body()).encode()), NOW)
    more = body()
    extra = copy.deepcopy(more["alerts"][0])
    extra["fingerprint"] = "0000aaaa0000bbbb"
    extra["labels"]["replica"] = "c"
    more["alerts"].append(extra)
    inc, changed = store.record_notification(incidents.parse(json.dumps(more).encode()), NOW)
    assert changed and len(inc.alerts) == 3


@pytest.mark.parametrize(("raw", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    (b"[]", 400, "JSON object"),
    (json.dumps({**body(), "version": "3"}).encode(), 400, "version"),
    (json.dumps({**body(), "alerts": []}).encode(), 400, "alerts"),
    (json.dumps({**body(), "alerts": [{"status": "firing"}]}).encode(), 400, "labels"),
    (b" " * (incidents.MAX_BODY_BYTES + 1), 413, "limit"),
])
def test_bad_bodies_are_rejected_with_the_reason(raw: bytes, status: int, words: str) -> None:
    with pytest.raises(incidents.IntakeError, match=words) as info:
        incidents.parse(raw)
    assert info.value.status == status


def test_incident_ids_agree_across_replicas() -> None:
    start = dt.datetime(2026, 11, 23, 8, 0, 5, tzinfo=dt.UTC)
    assert incidents.incident_id("g", start) == incidents.incident_id("g", start)
    assert incidents.incident_id("g", start) != incidents.incident_id("h", start)


def _flip(status: str, at: str) -> dict[str, Any]:
    b = body()
    b["status"] = status
    for a in b["alerts"]:
        a["status"] = status
        a["startsAt"] = at
        a["endsAt"] = at if status == "resolved" else "0001-01-01T00:00:00Z"
    return b


def test_an_alert_that_flaps_on_a_period_stays_one_incident_counting_its_reopenings(store: SqlStore) -> None:
    first, _ = store.record_notification(incidents.parse(json.dumps(body()).encode()), NOW)
    t = NOW
    for cycle in range(4):  # resolves and fires again every 4 minutes, like a signal hovering at its threshold
        t += dt.timedelta(minutes=2)
        inc, _ = store.record_notification(incidents.parse(json.dumps(_flip("resolved", t.isoformat())).encode()), t)
        assert inc.status == IncidentStatus.RESOLVED
        t += dt.timedelta(minutes=2)
        inc, changed = store.record_notification(incidents.parse(json.dumps(_flip("firing", t.isoformat())).encode()),
                                                 t)
        assert changed and inc.id == first.id and inc.status == IncidentStatus.FIRING
        assert inc.reopened == cycle + 1
    assert len(store.incidents()) == 1, "a flapping alert is one incident, not one per re-fire"
