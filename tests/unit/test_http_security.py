"""The HTTP server as an attacker meets it: no credentials → 401 and nothing stored (webhook and reads);
Alertmanager's Bearer and Basic auth accepted, two tokens during a rotation; oversized bodies refused
while they stream; malformed bodies get 400, never 500."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.entry.http_guard import HttpSecurity
from agent.entry.server import create_app
from agent.storage.store import SqliteStore
from tests.serving import post_chunked, serve

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
OLD, NEW = "old-token-" + "a1" * 16, "new-token-" + "b2" * 16
BASIC = "alertmanager:s3cret-password-0123"


@pytest.fixture
def server(db_target: str) -> Iterator[tuple[str, SqliteStore]]:
    """The server on each backend: on Postgres the webhook's deliveries are group-committed (the fast path)."""
    store = SqliteStore(db_target)
    with serve(create_app(store, None, security=HttpSecurity.build([OLD, NEW], [BASIC]))) as url:
        yield url, store
    store.close()


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def basic(pair: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


@pytest.mark.parametrize("headers", [
    {}, bearer("wrong"), bearer(OLD[:-1]), bearer(OLD + "x"), basic("alertmanager:wrong"), {"Authorization": OLD},
    {"Authorization": "Basic !!!notbase64"}, {"Authorization": "Digest " + OLD},
])
def test_a_forged_alert_without_valid_credentials_is_refused_and_stores_nothing(
        server: tuple[str, SqliteStore], headers: dict[str, str]) -> None:
    url, store = server
    r = httpx.post(f"{url}/alertmanager", content=FIXTURE.read_bytes(), headers=headers)
    assert r.status_code == 401 and "credentials" in r.json()["error"]
    assert "Bearer" in r.headers["www-authenticate"]
    assert store.incidents() == []


def test_reads_need_credentials_too_and_both_rotation_tokens_and_basic_auth_work(
        server: tuple[str, SqliteStore]) -> None:
    url, _ = server
    created = httpx.post(f"{url}/alertmanager", content=FIXTURE.read_bytes(), headers=bearer(OLD))
    assert created.status_code == 200
    iid = created.json()["incident"]
    for path in ("/incidents", f"/incidents/{iid}", "/metrics"):
        denied = httpx.get(f"{url}{path}")
        assert denied.status_code == 401 and iid not in denied.text
    assert httpx.get(f"{url}/incidents/{iid}", headers=bearer(NEW)).json()["incident"]["id"] == iid
    assert httpx.get(f"{url}/incidents", headers=basic(BASIC)).status_code == 200
    assert httpx.get(f"{url}/healthz").status_code == 200, "the kubelet's probe stays open"


def test_a_forged_resolved_notification_does_not_close_a_live_incident(server: tuple[str, SqliteStore]) -> None:
    url, store = server
    iid = httpx.post(f"{url}/alertmanager", content=FIXTURE.read_bytes(), headers=bearer(OLD)).json()["incident"]
    doc = json.loads(FIXTURE.read_bytes())
    doc["status"] = "resolved"
    for a in doc["alerts"]:
        a["status"] = "resolved"
        a["endsAt"] = "2026-11-23T09:00:00Z"
    assert httpx.post(f"{url}/alertmanager", content=json.dumps(doc).encode()).status_code == 401
    inc = store.incident(iid)
    assert inc is not None and inc.status.value == "firing"


def test_an_oversized_chunked_body_gets_413_while_it_streams(server: tuple[str, SqliteStore]) -> None:
    url, store = server
    status, sent = post_chunked(url, "/alertmanager", 64 << 20, bearer(OLD))
    assert status == 413
    assert sent <= 8 << 20, f"the server read {sent >> 20} MiB before refusing"
    assert store.incidents() == []


def test_a_declared_oversized_body_gets_413_before_any_of_it_is_sent(server: tuple[str, SqliteStore]) -> None:
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: {200 << 20}\r\n"
                  f"Authorization: Bearer {NEW}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"version": "4", "alerts": [' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}",
    b"{not json",
    b"\xff\xfe\x00garbage",
    b'{"version": "4", "status": "firing", "groupKey": "g", "alerts": [1, 2]}',
    b'{"version": "4", "status": "firing", "groupKey": "g", "alerts": [{"labels": {"a": {"b": 1}}}]}',
    b'{"version": 4}',
    b'"just a string"',
    b"",
    b'{"version": "4", "status": "firing", "groupKey": "g\\u0000", "receiver": "r", "alerts": [{"status": "firing", '
    b'"labels": {}, "startsAt": "2026-11-23T08:00:00Z"}]}',
    b'{"version": "4", "status": "firing", "groupKey": "g", "receiver": "r", "alerts": [{"status": "firing", '
    b'"labels": {}, "startsAt": "2026-11-23T08:00:00Z", "fingerprint": "\\ud800"}]}',
])
def test_a_malformed_body_gets_400_not_500(server: tuple[str, SqliteStore], body: bytes) -> None:
    url, store = server
    r = httpx.post(f"{url}/alertmanager", content=body, headers=bearer(OLD))
    assert r.status_code == 400, r.text
    assert store.incidents() == []
