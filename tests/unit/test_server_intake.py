"""The webhook endpoint over real HTTP: accepted, deduplicated, rejected with reasons, queued for triage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from agent.entry.server import create_app
from agent.models import Incident
from agent.storage.store import SqliteStore
from tests.serving import serve

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"


def test_webhook_dedupes_rejects_and_triggers_triage_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    triaged: list[str] = []

    async def triage(incident: Incident) -> None:
        triaged.append(incident.id)
        await asyncio.sleep(0)

    with serve(create_app(store, triage)) as url:
        body = FIXTURE.read_bytes()
        first = httpx.post(f"{url}/alertmanager", content=body, headers={"Content-Type": "application/json"})
        second = httpx.post(f"{url}/alertmanager", content=body)
        assert first.status_code == 200 and second.status_code == 200
        assert first.json()["incident"] == second.json()["incident"]
        assert first.json()["changed"] is True and second.json()["changed"] is False

        bad = httpx.post(f"{url}/alertmanager", content=b'{"version": "4", "alerts": "nope"}')
        assert bad.status_code == 400 and "not an Alertmanager notification" in bad.json()["error"]
        assert len(store.incidents()) == 1, "a rejected body stores nothing"

        for _ in range(50):
            if triaged:
                break
            time.sleep(0.02)
        assert triaged == [first.json()["incident"]], "a re-send does not trigger a second triage"

        incidents = httpx.get(f"{url}/incidents").json()
        assert [i["id"] for i in incidents] == triaged
        metrics = httpx.get(f"{url}/metrics").text
        assert 'opsagent_webhooks_total{outcome="duplicate"} 1.0' in metrics
        assert 'opsagent_webhooks_total{outcome="rejected"} 1.0' in metrics
        assert httpx.get(f"{url}/readyz").json() == {"ready": True}
        assert httpx.get(f"{url}/incidents/nope").status_code == 404
