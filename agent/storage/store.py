"""Durable records: incidents and their alerts, triage reports, leases. SQLite by default, Postgres shared.

One class over both backends (`agent.storage.db`); every write is a single transaction, so a crash or a bad
body never leaves half an incident. `record_notification` is where concurrent deliveries meet: it
reads and writes the incident of a group inside one transaction, serialized per group (SQLite's
write lock; a Postgres advisory lock on the group key, so two replicas never open two incidents).

Leases are how replicas share work: `try_lease(name, holder, ttl_s)` grants a named lease to one
holder until it expires; the holder renews it by asking again and gives it up with `release_lease`.
Triage takes `triage:<incident id>` (a replica killed mid-triage lets it expire and another finishes
the incident); a scheduled job takes one lease per run so it runs once per schedule.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent import incidents
from agent.models import Incident, IncidentStatus, TriageReport
from agent.storage.db import Db, is_postgres

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- At most one open incident per Alertmanager group.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_group ON incidents(group_key) WHERE status = 'firing';
CREATE INDEX IF NOT EXISTS incidents_group ON incidents(group_key, created_at);
CREATE TABLE IF NOT EXISTS triage_reports (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS triage_reports_incident ON triage_reports(incident_id, created_at);
-- Where an incident or a change request is shown in chat (Slack), so updates and restarts find it.
CREATE TABLE IF NOT EXISTS chat_messages (
    key TEXT PRIMARY KEY,            -- 'incident:<id>' or 'change:<id>'
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    thread_ts TEXT,
    stage TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_thread ON chat_messages(channel, ts);
-- Deliveries already handled (request signatures, event ids): replays and retries are recognised.
CREATE TABLE IF NOT EXISTS chat_seen (
    key TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_seen_at ON chat_seen(at);
-- expires_at: seconds since the epoch on the granting replica's clock (replicas keep NTP time).
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""


class Store(Protocol):
    def record_notification(self, n: incidents.Notification, now: dt.datetime,
                            max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> tuple[Incident, bool]: ...
    def incident(self, incident_id: str) -> Incident | None: ...
    def incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]: ...
    def save_report(self, report: TriageReport) -> None: ...
    def latest_report(self, incident_id: str) -> TriageReport | None: ...
    def chat_message(self, key: str) -> ChatMessage | None: ...
    def save_chat_message(self, msg: ChatMessage) -> None: ...
    def chat_thread_owner(self, channel: str, thread_ts: str) -> str | None: ...
    def seen_since(self, since: dt.datetime) -> list[tuple[str, dt.datetime]]: ...
    def claim_seen(self, keys: list[tuple[str, dt.datetime]], now: dt.datetime,
                   forget_before: dt.datetime) -> set[str]: ...
    def needing_triage(self, limit: int = 100) -> list[Incident]: ...
    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def release_lease(self, name: str, holder: str) -> bool: ...
    def lease_holder(self, name: str) -> str | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ChatMessage:
    """A message the agent posted for an incident or a change (channel + ts identify it in Slack)."""

    key: str
    channel: str
    ts: str
    thread_ts: str | None = None
    stage: str = ""


class SqlStore(Db):
    """The store on SQLite (a file, one writer at a time) or Postgres (shared by replicas)."""

    def __init__(self, target: Path | str) -> None:
        super().__init__(target, SCHEMA)

    def record_notification(self, n: incidents.Notification, now: dt.datetime,
                            max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> tuple[Incident, bool]:
        with self._tx() as c:
            self._serialize(c, f"incident-group:{n.groupKey}")
            row = c.execute(
                "SELECT doc FROM incidents WHERE group_key = ? ORDER BY created_at DESC LIMIT 1", (n.groupKey,)
            ).fetchone()
            existing = Incident.model_validate_json(row[0]) if row else None
            incident, changed = incidents.merge(existing, n, now, max_alerts)
            c.execute(
                "INSERT INTO incidents (id, group_key, status, doc, created_at, updated_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc, "
                "updated_at = excluded.updated_at",
                (incident.id, incident.group_key, incident.status.value, incident.model_dump_json(),
                 incident.created_at.isoformat(), incident.updated_at.isoformat()),
            )
        return incident, changed

    def incident(self, incident_id: str) -> Incident | None:
        row = self._conn.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return Incident.model_validate_json(row[0]) if row else None

    def incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]:
        if status is None:
            rows = self._conn.execute("SELECT doc FROM incidents ORDER BY updated_at DESC LIMIT ?", (limit,))
        else:
            rows = self._conn.execute("SELECT doc FROM incidents WHERE status = ? ORDER BY updated_at DESC LIMIT ?",
                                      (status.value, limit))
        return [Incident.model_validate_json(r[0]) for r in rows.fetchall()]

    def save_report(self, report: TriageReport) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO triage_reports (incident_id, created_at, doc) VALUES (?,?,?)",
                      (report.incident_id, report.finished.isoformat(), report.model_dump_json()))

    def latest_report(self, incident_id: str) -> TriageReport | None:
        row = self._conn.execute(
            "SELECT doc FROM triage_reports WHERE incident_id = ? ORDER BY created_at DESC LIMIT 1", (incident_id,)
        ).fetchone()
        return TriageReport.model_validate_json(row[0]) if row else None

    def chat_message(self, key: str) -> ChatMessage | None:
        row = self._conn.execute("SELECT key, channel, ts, thread_ts, stage FROM chat_messages WHERE key = ?",
                                 (key,)).fetchone()
        return ChatMessage(*row) if row else None

    def save_chat_message(self, msg: ChatMessage) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO chat_messages (key, channel, ts, thread_ts, stage, updated_at) VALUES (?,?,?,?,?,?) "
                      "ON CONFLICT(key) DO UPDATE SET channel = excluded.channel, ts = excluded.ts, "
                      "thread_ts = excluded.thread_ts, stage = excluded.stage, updated_at = excluded.updated_at",
                      (msg.key, msg.channel, msg.ts, msg.thread_ts, msg.stage, dt.datetime.now(dt.UTC).isoformat()))

    def chat_thread_owner(self, channel: str, thread_ts: str) -> str | None:
        """The key ('incident:<id>') whose top message starts the thread `thread_ts` in `channel`."""
        row = self._conn.execute("SELECT key FROM chat_messages WHERE channel = ? AND ts = ? AND key LIKE ?",
                                 (channel, thread_ts, "incident:%")).fetchone()
        return str(row[0]) if row else None

    def seen_since(self, since: dt.datetime) -> list[tuple[str, dt.datetime]]:
        rows = self._conn.execute("SELECT key, at FROM chat_seen WHERE at >= ?", (since.isoformat(),)).fetchall()
        return [(str(k), dt.datetime.fromisoformat(at)) for k, at in rows]

    def claim_seen(self, keys: list[tuple[str, dt.datetime]], now: dt.datetime,
                   forget_before: dt.datetime) -> set[str]:
        """Mark each `(key, seen_before)` as seen now, atomically per key, in one transaction; return the keys
        this call was first to mark. A key marked at or after its `seen_before` is taken already (by this
        or another replica); an older mark has lapsed and is taken over."""
        won: set[str] = set()
        with self._tx() as c:
            c.execute("DELETE FROM chat_seen WHERE at < ?", (forget_before.isoformat(),))
            for key, seen_before in keys:
                row = c.execute("INSERT INTO chat_seen (key, at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                                "SET at = excluded.at WHERE chat_seen.at < ? RETURNING key",
                                (key, now.isoformat(), seen_before.isoformat())).fetchone()
                if row is not None:
                    won.add(key)
        return won

    def needing_triage(self, limit: int = 100) -> list[Incident]:
        """Firing incidents with no triage report finished since their last change, oldest first."""
        rows = self._conn.execute(
            "SELECT doc FROM incidents i WHERE status = 'firing' AND NOT EXISTS (SELECT 1 FROM triage_reports r "
            "WHERE r.incident_id = i.id AND r.created_at >= i.updated_at) ORDER BY updated_at LIMIT ?", (limit,))
        return [Incident.model_validate_json(r[0]) for r in rows.fetchall()]

    # ---- leases ---------------------------------------------------------------------------------
    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `ttl_s` seconds; False while another holder's is unexpired.

        Atomic on both backends (one upsert whose update only applies when the row is ours or
        expired), so of several replicas asking at once exactly one gets True.
        """
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?", (name, holder, now + ttl_s, now))
            return cur.rowcount == 1

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up (only its holder can); False if `holder` did not hold it."""
        with self._tx() as c:
            cur = c.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
            return cur.rowcount == 1

    def lease_holder(self, name: str) -> str | None:
        """Who holds `name` now (None when free or expired)."""
        row = self._conn.execute("SELECT holder FROM leases WHERE name = ? AND expires_at > ?",
                                 (name, time.time())).fetchone()
        return str(row[0]) if row else None


SqliteStore = SqlStore  # the name the single-replica code and tests grew up with


def open_store(url: str) -> Store:
    """Open the store named by `store.url`: `sqlite:///path/to/file.db` (default), `sqlite://:memory:`
    or `postgresql://user@host:port/db` (libpq URL; several replicas share it)."""
    return SqlStore(db_target(url))


def db_target(url: str) -> str:
    """The `agent.storage.db` target for a `store.url`: a SQLite path or the Postgres URL itself."""
    if url.startswith("sqlite://"):
        return url.removeprefix("sqlite://") or ":memory:"
    if is_postgres(url):
        return url
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


