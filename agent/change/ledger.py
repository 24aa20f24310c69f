"""The change ledger: change requests, approvals and executions, durable and idempotent.

`claim` is the heart of exactly-once execution: the first process to insert a change's execution row
owns it; anyone else (a second click, a second replica, the same process after a restart) sees the
row and reconciles against the cluster instead of applying again. The intended result's spec hash is
recorded before the write, so a process killed between the write and the bookkeeping can tell, on
restart, whether its write landed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from agent.change.models import Approval, ChangeRequest, ChangeStatus
from agent.storage.db import Conn, Db

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id TEXT PRIMARY KEY,
    incident_id TEXT,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_status ON changes(status, created_at);
CREATE TABLE IF NOT EXISTS approvals (
    change_id TEXT NOT NULL REFERENCES changes(id),
    approver TEXT NOT NULL,
    at TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (change_id, approver)
);
CREATE TABLE IF NOT EXISTS executions (
    change_id TEXT PRIMARY KEY REFERENCES changes(id),
    state TEXT NOT NULL,            -- claimed | applied | failed
    owner TEXT NOT NULL,
    original_spec_hash TEXT NOT NULL,
    intended_spec_hash TEXT NOT NULL DEFAULT '',
    claimed_at TEXT NOT NULL,
    finished_at TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class Execution:
    change_id: str
    state: str
    owner: str
    original_spec_hash: str
    intended_spec_hash: str
    claimed_at: str
    finished_at: str | None
    detail: str


class Ledger(Db):
    """On SQLite (a path) or Postgres (a `postgresql://` URL, shared by replicas)."""

    def __init__(self, target: Path | str) -> None:
        super().__init__(target, SCHEMA)

    # ---- changes --------------------------------------------------------------------------------
    def save(self, ch: ChangeRequest) -> bool:
        """Insert a change; False if a change with this id already exists (proposals are idempotent)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._tx() as c:
            cur = c.execute("INSERT INTO changes (id, incident_id, status, doc, created_at, updated_at) "
                            "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                            (ch.id, ch.incident_id, ch.status.value, ch.model_dump_json(), ch.created_at.isoformat(),
                             now))
            return cur.rowcount == 1

    def update(self, ch: ChangeRequest) -> None:
        def run(c: Conn) -> None:
            c.execute("UPDATE changes SET status = ?, doc = ?, updated_at = ? WHERE id = ?",
                      (ch.status.value, ch.model_dump_json(), dt.datetime.now(dt.UTC).isoformat(), ch.id))

        self._atomic(run, key=_key(ch.id))

    def get(self, change_id: str) -> ChangeRequest | None:
        row = self._conn.execute("SELECT doc FROM changes WHERE id = ?", (change_id,)).fetchone()
        return ChangeRequest.model_validate_json(row[0]) if row else None

    def list_changes(self, status: ChangeStatus | None = None, incident_id: str | None = None,
             limit: int = 100) -> list[ChangeRequest]:
        q, args = "SELECT doc FROM changes WHERE 1=1", list[object]()
        if status:
            q += " AND status = ?"
            args.append(status.value)
        if incident_id:
            q += " AND incident_id = ?"
            args.append(incident_id)
        q += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [ChangeRequest.model_validate_json(r[0]) for r in self._conn.execute(q, args).fetchall()]

    def changes_since(self, since: dt.datetime, target: str | None = None) -> int:
        """Changes executed since `since` (for rate limits), optionally on one target ('kind/ns/name')."""
        rows = self._conn.execute(
            "SELECT c.doc FROM executions e JOIN changes c ON c.id = e.change_id WHERE e.claimed_at >= ?",
            (since.isoformat(),)).fetchall()
        if target is None:
            return len(rows)
        return sum(1 for (doc,) in rows if str(ChangeRequest.model_validate_json(doc).spec.target) == target)

    # ---- approvals ------------------------------------------------------------------------------
    def add_approval(self, a: Approval) -> bool:
        """Record an approval; False if this approver's decision on this change stands (a double click).

        An approval of the same person that has expired is replaced: the same person renews it (before,
        the old row stayed and the change was approved but could never execute).
        """
        def run(c: Conn) -> bool:
            row = c.execute("SELECT doc FROM approvals WHERE change_id = ? AND approver = ?",
                            (a.change_id, a.approver)).fetchone()
            if row is not None and Approval.model_validate_json(row[0]).expires_at > a.at:
                return False
            c.execute("INSERT INTO approvals (change_id, approver, at, doc) VALUES (?,?,?,?) "
                      "ON CONFLICT (change_id, approver) DO UPDATE SET at = excluded.at, doc = excluded.doc",
                      (a.change_id, a.approver, a.at.isoformat(), a.model_dump_json()))
            return True

        # One lock per change, taken first by every write on it: approvals, status updates and the claim
        # of two processes queue instead of deadlocking on each other's rows.
        return self._atomic(run, key=_key(a.change_id))

    def approvals(self, change_id: str) -> list[Approval]:
        rows = self._conn.execute("SELECT doc FROM approvals WHERE change_id = ? ORDER BY at", (change_id,))
        return [Approval.model_validate_json(r[0]) for r in rows.fetchall()]

    # ---- executions -----------------------------------------------------------------------------
    def claim(self, change_id: str, owner: str, original_spec_hash: str) -> tuple[bool, Execution]:
        """Claim a change's execution. Returns (won, row): won is False if someone claimed it before."""
        now = dt.datetime.now(dt.UTC).isoformat()

        def run(c: Conn) -> bool:
            cur = c.execute("INSERT INTO executions (change_id, state, owner, original_spec_hash, claimed_at) "
                            "VALUES (?, 'claimed', ?, ?, ?) ON CONFLICT DO NOTHING",
                            (change_id, owner, original_spec_hash, now))
            return cur.rowcount == 1

        won = self._atomic(run, key=_key(change_id))
        ex = self.execution(change_id)
        assert ex is not None
        return won, ex

    def set_intended(self, change_id: str, intended_spec_hash: str) -> None:
        self._atomic(lambda c: c.execute("UPDATE executions SET intended_spec_hash = ? WHERE change_id = ?",
                                         (intended_spec_hash, change_id)), key=_key(change_id))

    def finish(self, change_id: str, state: str, detail: str = "") -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        self._atomic(lambda c: c.execute("UPDATE executions SET state = ?, finished_at = ?, detail = ? "
                                         "WHERE change_id = ?", (state, now, detail, change_id)),
                     key=_key(change_id))

    def execution(self, change_id: str) -> Execution | None:
        row = self._conn.execute("SELECT change_id, state, owner, original_spec_hash, intended_spec_hash, "
                                 "claimed_at, finished_at, detail FROM executions WHERE change_id = ?",
                                 (change_id,)).fetchone()
        return Execution(*row) if row else None



def _key(change_id: str) -> str:
    return f"opsagent:change:{change_id}"
