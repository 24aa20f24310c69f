"""Durable records: incidents and their alerts, triage reports, leases. SQLite by default, Postgres shared.

One class over both backends (`agent.storage.db`); every write is a single transaction, so a crash or a bad
body never leaves half an incident. `record_notification` is where concurrent deliveries meet: it
reads and writes the incident of a group inside one transaction, serialized per group (SQLite's
write lock; a Postgres advisory lock on the group key, so two replicas never open two incidents). From the
event loop (`arecord_alerts`, the webhook) the deliveries in flight on Postgres are group-committed: one
statement and one commit for all of them (agent/storage/groupcommit.py), each answered after that commit.

Leases are how replicas share work: `try_lease(name, holder, ttl_s)` grants a named lease to one
holder until it expires; the holder renews it by asking again and gives it up with `release_lease`.
Triage takes `triage:<incident id>` (a replica killed mid-triage lets it expire and another finishes
the incident); a scheduled job takes one lease per run so it runs once per schedule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from agent import incidents
from agent.models import Alert, Incident, IncidentStatus, TriageReport
from agent.storage.db import Conn, Db, is_postgres
from agent.storage.groupcommit import GroupCommit

SCHEMA = """
-- An incident's header; its alerts are rows of incident_alerts. `layout` 1 is the older form, whose `doc`
-- held the whole incident with its alerts (read as such, and moved to rows at open or at the next delivery).
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    layout INTEGER NOT NULL DEFAULT 1,
    notifications INTEGER NOT NULL DEFAULT 1,
    alerts_over_cap INTEGER NOT NULL DEFAULT 0,
    alert_count INTEGER NOT NULL DEFAULT 0,
    firing_count INTEGER NOT NULL DEFAULT 0,
    reopened INTEGER NOT NULL DEFAULT 0,  -- re-fired within incidents.FLAP_WINDOW of resolving: flapping
    workload TEXT  -- `namespace/name` its opening group's alerts name (incidents.workload_of); NULL: none
);
-- At most one open incident per Alertmanager group.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_group ON incidents(group_key) WHERE status = 'firing';
CREATE INDEX IF NOT EXISTS incidents_group ON incidents(group_key, created_at);
-- Other Alertmanager groups folded into an incident (their alerts named its workload while it was open,
-- within the fold window): their next deliveries go to it, as its own group's do. `joined_at` orders a
-- group's incidents with those it opened itself (created_at), so a group's latest incident is one lookup.
CREATE TABLE IF NOT EXISTS incident_groups (
    group_key TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    joined_at TEXT NOT NULL,
    PRIMARY KEY (group_key, incident_id)
);
-- One row per alert of an incident, upserted per delivery: a delivery writes what changed, never the
-- whole incident again. Written only by record_alerts, under the group's lock.
CREATE TABLE IF NOT EXISTS incident_alerts (
    incident_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    ends_at TEXT,
    generator_url TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (incident_id, fingerprint)
);
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


# Postgres only: a delivery in one round trip. The same fold as `incidents.fold` (which SQLite and the older
# layout use, and the tests run on both backends), over the notification's alerts passed as arrays: lock the
# group, find its latest incident, upsert the new alerts (up to the cap) and the changed ones, update the header.
# The alerts come as one JSON array of rows (one parameter to encode, parsed by the server), in body order.
# Alerts compare by their stored text (annotations as sorted JSON, times in UTC), so equal means equal.
PG_FUNCTIONS = """-- Intake's advisory locks, taken in one order (their hash) whatever order they are named in: a
-- delivery holds its group's and its workload's, a batch all of its deliveries', so no two transactions wait
-- on each other in a cycle. NULL keys (no workload) are skipped; a key already held is taken again at once.
CREATE OR REPLACE FUNCTION opsagent_lock_keys(p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    k bigint;
BEGIN
    FOR k IN SELECT DISTINCT hashtextextended(x.key, 0) AS h FROM unnest(p_keys) AS x(key)
             WHERE x.key IS NOT NULL ORDER BY h
    LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION opsagent_record_alerts(
    p_group text, p_status text, p_new_id text, p_now text, p_max integer, p_alerts json,
    p_flap_s double precision, p_workload text, p_start text, p_fold_s double precision)
RETURNS TABLE (incident_id text, status text, changed boolean, opened boolean, legacy boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    h incidents%ROWTYPE;
    found_head boolean;
    is_new boolean;
    flapped boolean := false;
    v_fold text;
    v_id text; v_count integer := 0; v_firing integer := 0;
    n_added integer; n_over integer; n_upd integer; d_firing integer;
    k_group bigint := hashtextextended('incident-group:' || p_group, 0);
    k_load bigint := hashtextextended('incident-workload:' || p_workload, 0);
BEGIN
    -- The group's lock and the workload's, in the order opsagent_lock_keys takes them (inline: no query).
    IF k_load IS NULL OR k_load = k_group THEN
        PERFORM pg_advisory_xact_lock(k_group);
    ELSE
        PERFORM pg_advisory_xact_lock(least(k_group, k_load));
        PERFORM pg_advisory_xact_lock(greatest(k_group, k_load));
    END IF;
    -- A new statement, so a new snapshot: it sees what the previous holder of the lock committed. The group's
    -- latest incident: one it opened, or one it was folded into.
    SELECT * INTO h FROM incidents i WHERE i.id = (
        SELECT g.id FROM (SELECT x.id, x.created_at AS at FROM incidents x WHERE x.group_key = p_group
                          UNION ALL
                          SELECT f.incident_id, f.joined_at FROM incident_groups f WHERE f.group_key = p_group) g
        ORDER BY g.at DESC LIMIT 1);
    found_head := FOUND;
    IF found_head AND h.layout = 1 THEN  -- written by an older replica: the caller moves it to rows
        RETURN QUERY SELECT h.id, h.status, false, false, true;
        RETURN;
    END IF;
    -- Firing again after the incident resolved: a new episode, unless within the flap window (incidents.py).
    IF found_head AND h.status = 'resolved' AND p_status = 'firing' THEN
        flapped := p_now::timestamptz - h.updated_at::timestamptz <= make_interval(secs => p_flap_s);
        is_new := NOT flapped;
    ELSE
        is_new := NOT found_head;
    END IF;
    -- A new incident's alerts that name the workload of an open incident whose current episode (its latest
    -- firing alert) started within the fold window of them join it instead (incidents.workload_of).
    IF is_new AND p_workload IS NOT NULL AND p_start IS NOT NULL THEN
        SELECT c.id INTO v_fold FROM incidents c
        WHERE c.workload = p_workload AND c.status = 'firing' AND c.layout = 2
          AND abs(extract(epoch FROM (SELECT max(a.starts_at::timestamptz) FROM incident_alerts a
                                      WHERE a.incident_id = c.id AND a.status = 'firing') - p_start::timestamptz))
              <= p_fold_s
        ORDER BY c.created_at DESC LIMIT 1;
        IF v_fold IS NOT NULL THEN
            SELECT * INTO h FROM incidents i WHERE i.id = v_fold;
            is_new := false; flapped := false;
            INSERT INTO incident_groups AS g (group_key, incident_id, joined_at) VALUES (p_group, v_fold, p_now)
            ON CONFLICT ON CONSTRAINT incident_groups_pkey DO NOTHING;
        END IF;
    END IF;
    IF is_new THEN
        v_id := p_new_id;
        IF found_head AND h.id = p_new_id THEN  -- the same episode re-opened: start it afresh
            DELETE FROM incident_alerts a WHERE a.incident_id = p_new_id;
        END IF;
    ELSE
        v_id := h.id; v_count := h.alert_count; v_firing := h.firing_count;
    END IF;
    WITH input AS (
        SELECT e.v->>0 AS fp, e.v->>1 AS st, e.v->>2 AS lb, e.v->>3 AS an, e.v->>4 AS sa, e.v->>5 AS ea,
               e.v->>6 AS url, e.ord
        FROM json_array_elements(p_alerts) WITH ORDINALITY AS e(v, ord)
    ), cur AS (
        SELECT i.*, a.status AS old_st, a.ends_at AS old_ea, a.annotations AS old_an, a.starts_at AS old_sa,
               a.fingerprint IS NULL AS fresh
        FROM input i LEFT JOIN incident_alerts a ON a.incident_id = v_id AND a.fingerprint = i.fp
    ), ranked AS (
        SELECT c.*,
               c.fresh AND row_number() OVER (PARTITION BY c.fresh ORDER BY c.ord) <= GREATEST(p_max - v_count, 0)
                   AS admit,
               NOT c.fresh AND (c.old_st, c.old_ea, c.old_an, c.old_sa) IS DISTINCT FROM (c.st, c.ea, c.an, c.sa)
                   AS upd
        FROM cur c
    ), w AS (
        INSERT INTO incident_alerts AS a (incident_id, fingerprint, status, labels, annotations, starts_at, ends_at,
                                          generator_url)
        SELECT v_id, r.fp, r.st, r.lb, r.an, r.sa, r.ea, r.url FROM ranked r WHERE r.admit OR r.upd
        ON CONFLICT ON CONSTRAINT incident_alerts_pkey DO UPDATE SET status = excluded.status,
            labels = excluded.labels, annotations = excluded.annotations, starts_at = excluded.starts_at,
            ends_at = excluded.ends_at, generator_url = excluded.generator_url
    )
    SELECT count(*) FILTER (WHERE r.admit), count(*) FILTER (WHERE r.fresh AND NOT r.admit),
           count(*) FILTER (WHERE r.upd),
           coalesce(sum((r.st = 'firing')::int - (coalesce(r.old_st, '') = 'firing')::int)
                    FILTER (WHERE r.admit OR r.upd), 0)
      INTO n_added, n_over, n_upd, d_firing FROM ranked r;
    v_firing := v_firing + d_firing;
    IF is_new THEN
        INSERT INTO incidents AS i (id, group_key, status, doc, created_at, updated_at, layout, notifications,
                                    alerts_over_cap, alert_count, firing_count, workload)
        VALUES (v_id, p_group, CASE WHEN v_firing > 0 THEN 'firing' ELSE 'resolved' END, '{}', p_now, p_now, 2, 1,
                n_over, n_added, v_firing, p_workload)
        ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
            created_at = excluded.created_at, updated_at = excluded.updated_at, layout = 2, notifications = 1,
            alerts_over_cap = excluded.alerts_over_cap, alert_count = excluded.alert_count,
            firing_count = excluded.firing_count, reopened = 0, workload = excluded.workload;
    ELSE
        UPDATE incidents i SET status = CASE WHEN v_firing > 0 THEN 'firing' ELSE 'resolved' END,
            updated_at = CASE WHEN n_added + n_upd > 0 THEN p_now ELSE i.updated_at END,
            notifications = i.notifications + 1, alerts_over_cap = i.alerts_over_cap + n_over,
            alert_count = i.alert_count + n_added, firing_count = v_firing,
            reopened = i.reopened + flapped::int
        WHERE i.id = v_id;
    END IF;
    RETURN QUERY SELECT v_id, CASE WHEN v_firing > 0 THEN 'firing' ELSE 'resolved' END,
                        is_new OR n_added + n_upd > 0, is_new, false;
END
$fn$;

-- Several deliveries in one transaction (group commit, agent/storage/groupcommit.py): each item is
-- [group, status, new incident id, now, max alerts, alerts, workload, first firing start, fold window s] and
-- goes through opsagent_record_alerts, so both fold alike. Every lock of the batch (its groups' and
-- workloads') is taken first, in one order, so two batches, or a batch and a delivery, never deadlock. Items
-- then run in the order of their groups' lock keys (then arrival); a group's deliveries keep their order.
-- Each call's statements take a new snapshot, so an item sees what an earlier lock holder committed.
CREATE OR REPLACE FUNCTION opsagent_record_batch(p_items json, p_flap_s double precision)
RETURNS TABLE (ord integer, incident_id text, status text, changed boolean, opened boolean, legacy boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    it record;
BEGIN
    PERFORM opsagent_lock_keys(ARRAY(
        SELECT k.key FROM json_array_elements(p_items) AS e(v),
               LATERAL (VALUES ('incident-group:' || (e.v->>0)), ('incident-workload:' || (e.v->>6)))
                   AS k(key)));
    FOR it IN SELECT e.ord::integer AS n, e.v->>0 AS grp, e.v->>1 AS st, e.v->>2 AS new_id, e.v->>3 AS now_at,
                     (e.v->>4)::integer AS max_alerts, e.v->5 AS alerts, e.v->>6 AS workload, e.v->>7 AS start_at,
                     (e.v->>8)::double precision AS fold_s
              FROM json_array_elements(p_items) WITH ORDINALITY AS e(v, ord)
              ORDER BY hashtextextended('incident-group:' || (e.v->>0), 0), e.ord
    LOOP
        RETURN QUERY SELECT it.n, r.* FROM opsagent_record_alerts(it.grp, it.st, it.new_id, it.now_at, it.max_alerts,
                                                                  it.alerts, p_flap_s, it.workload, it.start_at,
                                                                  it.fold_s) r;
    END LOOP;
END
$fn$;
"""

class Store(Protocol):
    async def arecord_alerts(self, n: incidents.Notification, now: dt.datetime,
                             max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> Recorded: ...
    def record_alerts(self, n: incidents.Notification, now: dt.datetime,
                      max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> Recorded: ...
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


@dataclass(frozen=True)
class Recorded:
    """What one delivery did to its incident (`record_alerts`), without reading the incident's alerts back."""

    incident_id: str
    status: IncidentStatus
    changed: bool  # False for a pure re-send
    opened: bool  # this delivery opened the incident


# The header columns every incident read selects, in this order (see _assemble).
_HEADER = ("id, group_key, status, layout, doc, created_at, updated_at, notifications, alerts_over_cap, "
           "alert_count, firing_count, reopened")
_ALERT_COLUMNS = "fingerprint, status, labels, annotations, starts_at, ends_at, generator_url"
_UPSERT_ALERT = (
    "INSERT INTO incident_alerts (incident_id, fingerprint, status, labels, annotations, starts_at, ends_at, "
    "generator_url) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (incident_id, fingerprint) DO UPDATE SET "
    "status = excluded.status, labels = excluded.labels, annotations = excluded.annotations, "
    "starts_at = excluded.starts_at, ends_at = excluded.ends_at, generator_url = excluded.generator_url")
_COLUMNS_ADDED = (  # to an `incidents` table created before alerts became rows
    ("layout", "INTEGER NOT NULL DEFAULT 1"), ("notifications", "INTEGER NOT NULL DEFAULT 1"),
    ("alerts_over_cap", "INTEGER NOT NULL DEFAULT 0"), ("alert_count", "INTEGER NOT NULL DEFAULT 0"),
    ("firing_count", "INTEGER NOT NULL DEFAULT 0"), ("reopened", "INTEGER NOT NULL DEFAULT 0"),
    ("workload", "TEXT"))


def _migrate(c: Conn, postgres: bool) -> None:
    """Bring a store written before alerts became rows to the current layout (idempotent; at open)."""
    if postgres:
        have = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_name = 'incidents' AND table_schema = current_schema()")}
    else:
        have = {r[1] for r in c.execute("PRAGMA table_info(incidents)")}
    for name, decl in _COLUMNS_ADDED:
        if name not in have:
            c.execute(f"ALTER TABLE incidents ADD COLUMN {name} {decl}")
    # After the columns: a table from before `workload` gets it above first. The open incidents of a workload,
    # which a new group's alerts may join.
    c.execute("CREATE INDEX IF NOT EXISTS incidents_open_workload ON incidents(workload) WHERE status = 'firing'")
    for (doc,) in c.execute("SELECT doc FROM incidents WHERE layout = 1").fetchall():
        _to_rows(c, Incident.model_validate_json(doc))


def _to_rows(c: Conn, inc: Incident) -> None:
    """Rewrite an incident of the older layout (alerts inside `doc`) as a header and alert rows."""
    c.executemany(_UPSERT_ALERT, [_alert_row(inc.id, a) for a in inc.alerts])
    c.execute("UPDATE incidents SET layout = 2, doc = '{}', notifications = ?, alerts_over_cap = ?, alert_count = ?, "
              "firing_count = ? WHERE id = ?",
              (inc.notifications, inc.alerts_over_cap, len(inc.alerts),
               sum(a.status == "firing" for a in inc.alerts), inc.id))


# json.dumps(value, sort_keys=True), without building an encoder per call.
_canonical_json = json.JSONEncoder(sort_keys=True).encode


def _alert_row(incident_id: str, a: Alert) -> tuple[str, str, str, str, str, str, str | None, str]:
    """An alert as stored: one text per value, canonical (sorted keys, UTC), so equal alerts store equal text."""
    return (incident_id, a.fingerprint, a.status, _canonical_json(a.labels), _canonical_json(a.annotations),
            _utc(a.starts_at), _utc(a.ends_at) if a.ends_at else None, a.generator_url)


def _utc(t: dt.datetime) -> str:
    return (t if t.utcoffset() == _ZERO else t.astimezone(dt.UTC)).isoformat()


_ZERO = dt.timedelta(0)


def _alert(row: Sequence[Any]) -> Alert:
    fp, status, labels, annotations, starts, ends, url = row
    return Alert(fingerprint=fp, status=status, labels=json.loads(labels), annotations=json.loads(annotations),
                 starts_at=dt.datetime.fromisoformat(starts), ends_at=dt.datetime.fromisoformat(ends) if ends else None,
                 generator_url=url)


class SqlStore(Db):
    """The store on SQLite (a file, one writer at a time) or Postgres (shared by replicas)."""

    def __init__(self, target: Path | str, *, pool_size: int = 8, intake_batches: int = 2,
                 fold_window_s: float = incidents.FOLD_WINDOW.total_seconds()) -> None:
        """`intake_batches`: on Postgres, how many group-committed batches of deliveries may be in flight at
        once (each on a connection of its own, out of `pool_size`). `fold_window_s`: a new group whose alerts
        name the workload of an open incident whose current episode started within this long of them joins
        it (`server.fold_window_s`; 0 still folds alerts that started at the same instant)."""
        if fold_window_s < 0:
            raise ValueError(f"fold_window_s must be >= 0, not {fold_window_s}")
        self.fold_window = dt.timedelta(seconds=fold_window_s)
        super().__init__(target, SCHEMA, SCHEMA + PG_FUNCTIONS, pool_size=pool_size, migrate=_migrate)
        # Deliveries arriving together on the event loop share one statement and one commit (Postgres).
        self.intake: GroupCommit[bytes, Recorded | None] = GroupCommit(
            self._record_batch, self._record_one, max_inflight=max(1, min(intake_batches, pool_size)))
        # The incoming fingerprints are one parameter (a Postgres array; a JSON array on SQLite), so the
        # statement's text, and Postgres's prepared plan for it, is the same whatever their number.
        any_of = "= ANY(?)" if self.postgres else "IN (SELECT value FROM json_each(?))"
        # A group's latest incident: the latest it opened or was folded into (incident_groups).
        head = ("SELECT i.id, i.group_key, i.status, i.layout, i.doc, i.created_at, i.updated_at, "  # noqa: S608
                "i.notifications, i.alerts_over_cap, i.alert_count, i.firing_count, a.fingerprint, a.status, "
                "a.ends_at, a.annotations, i.reopened, a.starts_at FROM (SELECT * FROM incidents WHERE id = ({})) i "
                f"LEFT JOIN incident_alerts a ON a.incident_id = i.id AND a.fingerprint {any_of}")
        self._latest_sql = head.format(
            "SELECT g.id FROM (SELECT id, created_at AS at FROM incidents WHERE group_key = ? UNION ALL "
            "SELECT incident_id, joined_at FROM incident_groups WHERE group_key = ?) g ORDER BY g.at DESC LIMIT 1")
        self._head_sql = head.format("?")  # the same, of one incident by id
        self._alerts_sql = f"SELECT incident_id, {_ALERT_COLUMNS} FROM incident_alerts WHERE incident_id {any_of}"  # noqa: S608
        self._groups_sql = ("SELECT incident_id, group_key FROM incident_groups "  # noqa: S608
                            f"WHERE incident_id {any_of} ORDER BY joined_at, group_key")

    def record_alerts(self, n: incidents.Notification, now: dt.datetime,
                      max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> Recorded:
        """Fold a notification into its group's incident: one transaction, serialized per group.

        Writes the new alerts (up to `max_alerts` per incident), the changed ones and the incident's header,
        never the incident's other alerts. On Postgres that is one statement (`opsagent_record_alerts`): one
        round trip per delivery, whatever the incident's size."""
        if self.postgres:
            rec = _recorded(self._conn.execute(_RECORD_SQL, _record_args(n, now, max_alerts,
                                                                         self.fold_window)).fetchone())
            if rec is not None:
                return rec
        return self._record_tx(n, now, max_alerts)

    async def arecord_alerts(self, n: incidents.Notification, now: dt.datetime,
                             max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> Recorded:
        """`record_alerts` for the event loop: on Postgres its one statement runs on a connection of the
        loop itself (no thread); SQLite's in a thread."""
        if self.postgres:
            # Committed with the other deliveries in flight on this loop (group commit); answered after the commit.
            rec = await self.intake.submit(_delivery(n, now, max_alerts, self.fold_window))
            if rec is not None:
                return rec
        return await asyncio.to_thread(self._record_tx, n, now, max_alerts)

    async def _record_batch(self, items: Sequence[bytes]) -> list[Recorded | None]:
        rows = await self._fetchall_async(_RECORD_BATCH_SQL, ((b"[%b]" % b",".join(items)).decode(), _FLAP_S))
        rows.sort(key=lambda r: r[0])
        return [_recorded(r[1:]) for r in rows]

    async def _record_one(self, item: bytes) -> Recorded | None:
        try:
            return (await self._record_batch([item]))[0]  # a batch of one: its own transaction
        except Exception as e:
            # A data exception (SQLSTATE class 22: a NUL character, say) is this delivery's own values, and
            # sending it again cannot help: 400, not a retryable 5xx.
            if str(getattr(e, "sqlstate", None) or "").startswith("22"):
                why = getattr(getattr(e, "diag", None), "message_primary", None) or str(e)
                raise incidents.IntakeError(f"the store cannot keep a value of this notification: {why}") from e
            raise

    def _record_tx(self, n: incidents.Notification, now: dt.datetime, max_alerts: int) -> Recorded:
        with self._tx() as c:  # SQLite; and on Postgres an incident an older replica wrote
            if self.postgres:  # the keys the Postgres function takes, in its order (SQLite: one writer anyway)
                c.execute("SELECT opsagent_lock_keys(?)", (_lock_keys(n),))
            return self._record(c, n, now, max_alerts)

    def record_notification(self, n: incidents.Notification, now: dt.datetime,
                            max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT) -> tuple[Incident, bool]:
        """`record_alerts`, then the incident as it stands after the delivery."""
        rec = self.record_alerts(n, now, max_alerts)
        incident = self.incident(rec.incident_id)
        assert incident is not None, "an incident just recorded is not deleted"
        return incident, rec.changed

    def _record(self, c: Conn, n: incidents.Notification, now: dt.datetime, max_alerts: int) -> Recorded:
        incoming = incidents.alerts_of(n)
        fps = [a.fingerprint for a in incoming]
        rows = self._latest_of_group(c, n.groupKey, fps)
        if rows and rows[0][3] == 1:  # written in the older layout (by an older replica): move it to rows first
            _to_rows(c, Incident.model_validate_json(rows[0][4]))
            rows = self._latest_of_group(c, n.groupKey, fps)
        head = rows[0] if rows else None
        workload = incidents.workload_of(n)
        is_new = head is None or incidents.opens_new_incident(IncidentStatus(head[2]),
                                                              dt.datetime.fromisoformat(head[6]), n, now)
        flapped = not is_new and head is not None and incidents.refires(IncidentStatus(head[2]), n)
        if is_new and workload is not None:
            # Alerts naming the workload of an open incident whose episode started near theirs join it.
            target = self._fold_target(c, workload, n)
            if target is not None:
                c.execute("INSERT INTO incident_groups (group_key, incident_id, joined_at) VALUES (?,?,?) "
                          "ON CONFLICT (group_key, incident_id) DO NOTHING", (n.groupKey, target, now.isoformat()))
                rows = c.execute(self._head_sql, (target, self._array(fps))).fetchall()
                head, is_new, flapped = rows[0], False, False
        if is_new:
            f = incidents.fold(incoming, {}, 0, max_alerts)
            iid = incidents.incident_id(n.groupKey, min(a.starts_at for a in incoming))
            if head is not None and head[0] == iid:  # the same episode re-opened: start it afresh
                c.execute("DELETE FROM incident_alerts WHERE incident_id = ?", (iid,))
            firing = f.firing_delta
            c.execute(
                "INSERT INTO incidents (id, group_key, status, doc, created_at, updated_at, layout, notifications, "
                "alerts_over_cap, alert_count, firing_count, workload) VALUES (?,?,?,'{}',?,?,2,1,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc, "
                "created_at = excluded.created_at, updated_at = excluded.updated_at, layout = 2, notifications = 1, "
                "alerts_over_cap = excluded.alerts_over_cap, alert_count = excluded.alert_count, "
                "firing_count = excluded.firing_count, reopened = 0, workload = excluded.workload",
                (iid, n.groupKey, _status(firing), now.isoformat(), now.isoformat(), f.over_cap, f.added, firing,
                 workload))
        else:
            assert head is not None
            iid, count, firing = head[0], head[9], head[10]
            stored = {r[11]: incidents.StoredAlert(r[12], dt.datetime.fromisoformat(r[13]) if r[13] else None,
                                                   json.loads(r[14]), dt.datetime.fromisoformat(r[16]))
                      for r in rows if r[11] is not None}
            f = incidents.fold(incoming, stored, count, max_alerts)
            firing += f.firing_delta
            c.execute(
                "UPDATE incidents SET status = ?, updated_at = ?, notifications = notifications + 1, "
                "alerts_over_cap = alerts_over_cap + ?, alert_count = alert_count + ?, firing_count = ?, "
                "reopened = reopened + ? WHERE id = ?",
                (_status(firing), now.isoformat() if f.changed else head[6], f.over_cap, f.added, firing,
                 int(flapped), iid))
        if f.write:
            c.executemany(_UPSERT_ALERT, [_alert_row(iid, a) for a in f.write])
        return Recorded(incident_id=iid, status=IncidentStatus(_status(firing)), changed=is_new or f.changed,
                        opened=is_new)

    def _fold_target(self, c: Conn, workload: str, n: incidents.Notification) -> str | None:
        """The open incident of `workload` whose current episode (its latest firing alert) started within the
        fold window of `n`'s first firing alert, the latest opened of them; None when there is none."""
        start = incidents.first_firing_start(n)
        if start is None:
            return None
        for iid, latest in c.execute(
                "SELECT i.id, max(a.starts_at) FROM incidents i JOIN incident_alerts a ON a.incident_id = i.id "
                "AND a.status = 'firing' WHERE i.workload = ? AND i.status = 'firing' AND i.layout = 2 "
                "GROUP BY i.id, i.created_at ORDER BY i.created_at DESC", (workload,)).fetchall():
            # starts_at is UTC ISO text (_alert_row), which sorts as the times do
            if incidents.within_fold_window(dt.datetime.fromisoformat(latest), start, self.fold_window):
                return str(iid)
        return None

    def _latest_of_group(self, c: Conn, group_key: str, fps: list[str]) -> list[Any]:
        """The group's latest incident's header, joined with its stored alerts among `fps` (one row each;
        one row with NULL alert columns when it has none of them; no row when the group has no incident)."""
        return c.execute(self._latest_sql, (group_key, group_key, self._array(fps))).fetchall()

    def _array(self, values: list[str]) -> list[str] | str:
        return values if self.postgres else json.dumps(values)

    def _read(self, c: Conn, where: str, params: Sequence[Any]) -> list[Incident]:
        """Incidents selected by `where` (a clause over `incidents`, ordering and limit included), whole."""
        heads = c.execute(f"SELECT {_HEADER} FROM incidents {where}", params).fetchall()  # noqa: S608 (`where` is ours)
        ids = [h[0] for h in heads if h[3] != 1]
        alerts: dict[str, list[Alert]] = {i: [] for i in ids}
        folded: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            for r in c.execute(self._alerts_sql, (self._array(ids),)):
                alerts[r[0]].append(_alert(r[1:]))
            for iid, group in c.execute(self._groups_sql, (self._array(ids),)):
                folded[iid].append(group)
        out = []
        for iid, group_key, _, layout, doc, created, updated, notifications, over, _count, firing, reopened in heads:
            if layout == 1:  # written by an older replica after this one opened the store
                out.append(Incident.model_validate_json(doc))
                continue
            out.append(incidents.assemble(
                id=iid, group_key=group_key, firing=firing, alerts=alerts[iid],
                created_at=dt.datetime.fromisoformat(created), updated_at=dt.datetime.fromisoformat(updated),
                notifications=notifications, alerts_over_cap=over, reopened=reopened, folded_groups=folded[iid]))
        return out

    def incident(self, incident_id: str) -> Incident | None:
        found = self._read(self._conn, "WHERE id = ?", (incident_id,))
        return found[0] if found else None

    def incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]:
        if status is None:
            return self._read(self._conn, "ORDER BY updated_at DESC LIMIT ?", (limit,))
        return self._read(self._conn, "WHERE status = ? ORDER BY updated_at DESC LIMIT ?", (status.value, limit))

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
        return self._read(self._conn, "i WHERE status = 'firing' AND NOT EXISTS (SELECT 1 FROM triage_reports r "
                          "WHERE r.incident_id = i.id AND r.created_at >= i.updated_at) ORDER BY updated_at LIMIT ?",
                          (limit,))

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


def open_store(url: str, *, pool_size: int = 8,
               fold_window_s: float = incidents.FOLD_WINDOW.total_seconds()) -> Store:
    """Open the store named by `store.url`: `sqlite:///path/to/file.db` (default), `sqlite://:memory:`
    or `postgresql://user@host:port/db` (libpq URL; several replicas share it). `pool_size`: Postgres
    connections this process keeps (`store.pool_size`); `fold_window_s`: `server.fold_window_s`."""
    return SqlStore(db_target(url), pool_size=pool_size, fold_window_s=fold_window_s)


_RECORD_SQL = "SELECT * FROM opsagent_record_alerts(?, ?, ?, ?, ?, ?::json, ?, ?, ?, ?)"
_RECORD_BATCH_SQL = "SELECT * FROM opsagent_record_batch(?::json, ?)"
_FLAP_S = incidents.FLAP_WINDOW.total_seconds()


def _rows(n: incidents.Notification) -> tuple[list[tuple[str, str, str, str, str, str | None, str]], str]:
    """The notification's alerts as `_alert_row` stores them (a fingerprint repeated in one body: its last
    version wins, as in incidents.fold), and the id a new incident of this delivery gets; straight from the
    validated wire alerts (building an `Alert` for each first cost more than the rest of this)."""
    rows = {}
    for a in n.alerts:
        fp, ends = incidents.fingerprint_of(a), incidents.ends_of(a)
        rows[fp] = (fp, a.status, _canonical_json(a.labels), _canonical_json(a.annotations), _utc(a.startsAt),
                    _utc(ends) if ends else None, a.generatorURL)
    return list(rows.values()), incidents.incident_id(n.groupKey, min(a.startsAt for a in n.alerts))


def _fold_args(n: incidents.Notification, window: dt.timedelta) -> tuple[str | None, str | None, float]:
    """What the Postgres function folds across groups by: the workload `n` names, when its first firing alert
    started (UTC), the window in seconds."""
    start = incidents.first_firing_start(n)
    return incidents.workload_of(n), _utc(start) if start else None, window.total_seconds()


def _lock_keys(n: incidents.Notification) -> list[str | None]:
    """The advisory locks a delivery holds (`opsagent_lock_keys`): its group's, and its workload's."""
    workload = incidents.workload_of(n)
    return [f"incident-group:{n.groupKey}", f"incident-workload:{workload}" if workload else None]


def _record_args(n: incidents.Notification, now: dt.datetime, max_alerts: int,
                 window: dt.timedelta) -> tuple[Any, ...]:
    rows, new_id = _rows(n)
    return (n.groupKey, n.status, new_id, now.isoformat(), max_alerts, json.dumps(rows), _FLAP_S,
            *_fold_args(n, window))


def _delivery(n: incidents.Notification, now: dt.datetime, max_alerts: int, window: dt.timedelta) -> bytes:
    """One item of `opsagent_record_batch`, encoded here so a value JSON cannot hold fails its own request."""
    rows, new_id = _rows(n)
    try:
        return orjson.dumps([n.groupKey, n.status, new_id, now.isoformat(), max_alerts, rows,
                             *_fold_args(n, window)])
    except orjson.JSONEncodeError as e:  # a lone surrogate in the group key or a fingerprint
        raise incidents.IntakeError(f"the notification holds text that is not valid Unicode: {e}") from e


def _recorded(r: Any) -> Recorded | None:
    """The function's answer; None when the group's incident is in the older layout (handled in Python)."""
    return None if r[4] else Recorded(incident_id=r[0], status=IncidentStatus(r[1]), changed=r[2], opened=r[3])


def _status(firing: int) -> str:
    return IncidentStatus.FIRING.value if firing > 0 else IncidentStatus.RESOLVED.value


def db_target(url: str) -> str:
    """The `agent.storage.db` target for a `store.url`: a SQLite path or the Postgres URL itself."""
    if url.startswith("sqlite://"):
        return url.removeprefix("sqlite://") or ":memory:"
    if is_postgres(url):
        return url
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


