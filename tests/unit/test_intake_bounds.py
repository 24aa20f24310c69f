"""One alert group flooded with new alerts: the incident stops growing at the cap (counting what it did not
store) and re-triage runs a few times for the whole burst, with the newest version, not once per post."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from agent.entry.server import Replica, create_app
from agent.models import Incident
from agent.storage.store import SqliteStore
from tests.serving import serve


def notification(batch: int, n: int) -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "GPUXidErrors", "Hostname": f"node-{batch}-{i}"},
               "annotations": {}, "startsAt": "2026-11-23T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "", "fingerprint": f"{batch:04d}{i:06d}"} for i in range(n)]
    return json.dumps({"version": "4", "groupKey": "{}:{alertname=\"GPUXidErrors\"}", "status": "firing",
                       "receiver": "opsagent", "groupLabels": {"alertname": "GPUXidErrors"}, "commonLabels": {},
                       "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
                       "alerts": alerts}).encode()


def test_forty_posts_of_900_new_alerts_are_capped_and_retriaged_a_few_times(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    seen: list[int] = []

    async def triage(incident: Incident) -> None:
        seen.append(len(incident.alerts))
        await asyncio.sleep(0)

    app = create_app(store, triage, replica=Replica(sweep_s=None, retriage_debounce_s=3.0), max_alerts=1000)
    with serve(app) as url:
        t0 = time.monotonic()
        for b in range(40):
            r = httpx.post(f"{url}/alertmanager", content=notification(b, 900), timeout=30)
            assert r.status_code == 200
        posting = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not seen or seen[-1] != 1000):
            time.sleep(0.1)
    (inc,) = store.incidents()
    assert len(inc.alerts) == 1000
    assert inc.alerts_over_cap == 40 * 900 - 1000
    assert seen and seen[-1] == 1000, "the last triage saw the newest version"
    assert len(seen) <= 2 + int(posting / 3.0), f"{len(seen)} triages for one burst of {posting:.1f}s"
