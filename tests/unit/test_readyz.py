"""`/readyz` reports every integration's `check()` probe, cached, and is not-ready only without the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.testclient import TestClient

from agent.app import build_app
from agent.config import load_settings
from agent.entry.slack.service import build_server


def test_readyz_lists_an_unreachable_prometheus_as_degraded_and_stays_ready(tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=str(tmp_path / "state"),
                             prometheus={"url": "http://127.0.0.1:1", "timeout_s": 2})
    app = build_app(settings)
    try:
        server, _ = build_server(app)
        with TestClient(server) as http:
            r = http.get("/readyz")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ready"] is True and body["degraded"] == ["prometheus"]
            assert body["checks"]["store"]["ok"] is True
            assert "127.0.0.1:1" in body["checks"]["prometheus"]["detail"]  # upstream's words, with the URL
    finally:
        app.close()


def test_probe_results_are_cached_and_a_broken_store_is_not_ready(tmp_path: Path) -> None:
    app = build_app(load_settings(None, state_dir=str(tmp_path / "state"),
                                  prometheus={"url": "http://127.0.0.1:1", "timeout_s": 2}))

    async def run() -> tuple[bool, bool, bool]:
        first = await app.health()
        cached = await app.health()
        app.store.close()  # the store goes away
        still_cached = await app.health()
        fresh = await app.health(max_age_s=0)
        await app.aclose_clients()
        return first is cached, still_cached is first, next(r for r in fresh if r.name == "store").ok

    same, still, store_ok = asyncio.run(run())
    assert same and still and store_ok is False
    app.ledger.close()
    app.audit.close()
