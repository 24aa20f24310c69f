"""Durable records: incidents and their alerts, triage reports. SQLite by default.

One class per backend behind one small interface; every write is a single transaction, so a crash
or a bad body never leaves half an incident. `record_notification` is where concurrent deliveries
meet: it reads and writes the incident of a group inside one transaction (SQLite: BEGIN IMMEDIATE).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol

from agent import intake
from agent.models import Incident, IncidentStatus, TriageReport
from agent.sqlite import SqliteDb

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
"""


class Store(Protocol):
    def record_notification(self, n: intake.Notification, now: dt.datetime) -> tuple[Incident, bool]: ...
    def incident(self, incident_id: str) -> Incident | None: ...
    def incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]: ...
    def save_report(self, report: TriageReport) -> None: ...
    def latest_report(self, incident_id: str) -> TriageReport | None: ...
    def close(self) -> None: ...


class SqliteStore(SqliteDb):
    """The embedded store: one file, one writer at a time, safe across threads."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, SCHEMA)

    def record_notification(self, n: intake.Notification, now: dt.datetime) -> tuple[Incident, bool]:
        with self._tx() as c:
            row = c.execute(
                "SELECT doc FROM incidents WHERE group_key = ? ORDER BY created_at DESC LIMIT 1", (n.groupKey,)
            ).fetchone()
            existing = Incident.model_validate_json(row[0]) if row else None
            incident, changed = intake.merge(existing, n, now)
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


def open_store(url: str) -> Store:
    """Open the store named by `store.url`: `sqlite:///path/to/file.db` (default) or `sqlite://:memory:`."""
    if url.startswith("sqlite://"):
        return SqliteStore(url.removeprefix("sqlite://") or ":memory:")
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH (Postgres support is tracked separately)")


