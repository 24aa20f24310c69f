"""Posted cost reports and their "Create change request" buttons, on the shared store.

A click on a report's button arrives from Slack with the button's value, which is input like any
other: it could be garbled or forged. So every report this agent posts records, per button, the
change spec it computed (and the reason), keyed by the message (channel, ts) and the recommendation
id. A click is honoured only for a button recorded here whose value names the same spec, and the
spec proposed is the recorded one, never the one the click carried.

The same row makes a click idempotent across double clicks, Slack retries and replicas: the first
click claims it (an atomic conditional update), opens the change request and writes its id back;
later clicks are told which change request the recommendation already became. A click whose work
fails releases its claim so a later click can try again.

Nothing here talks to Slack or Kubernetes; the Slack app and `opsagent report cost --post` do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from agent.change.models import ChangeSpec
from agent.storage.db import Db

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_buttons (
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,                  -- the report message's Slack timestamp
    recommendation TEXT NOT NULL,
    spec TEXT NOT NULL,                -- the ChangeSpec this agent computed (canonical JSON)
    reason TEXT NOT NULL,
    job TEXT NOT NULL,
    tick TEXT NOT NULL,
    posted_at TEXT NOT NULL,
    clicked_by TEXT,
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    change_id TEXT,
    PRIMARY KEY (channel, ts, recommendation)
);
"""


@dataclass(frozen=True)
class PostedButton:
    channel: str
    ts: str
    recommendation: str
    spec: ChangeSpec
    reason: str
    job: str
    tick: str
    posted_at: dt.datetime
    clicked_by: str | None
    change_id: str | None


@dataclass(frozen=True)
class ButtonForPost:
    """One button of a report about to be posted: what a click on it may propose."""

    recommendation: str
    spec: ChangeSpec
    reason: str


_SELECT = ("SELECT channel, ts, recommendation, spec, reason, job, tick, posted_at, clicked_by, change_id "
           "FROM report_buttons ")


class ReportPosts(Db):
    """Buttons of posted reports, shared by every process on the same store (SQLite file or Postgres)."""

    def __init__(self, target: Path | str) -> None:
        super().__init__(target, SCHEMA)

    def record(self, channel: str, ts: str, job: str, tick: str, buttons: list[ButtonForPost],
               now: dt.datetime) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT INTO report_buttons (channel, ts, recommendation, spec, reason, job, tick, posted_at) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (channel, ts, recommendation) DO NOTHING",
                [(channel, ts, b.recommendation, b.spec.model_dump_json(), b.reason[:2000], job, tick,
                  now.isoformat()) for b in buttons])

    def get(self, channel: str, ts: str, recommendation: str) -> PostedButton | None:
        row = self._conn.execute(_SELECT + "WHERE channel = ? AND ts = ? AND recommendation = ?",
                                 (channel, ts, recommendation)).fetchone()
        return _button(row) if row else None

    def claim(self, channel: str, ts: str, recommendation: str, user: str, now: dt.datetime,
              ttl_s: float) -> bool:
        """Take the button for `user` unless it already became a change or another click is working on it."""
        with self._tx() as c:
            cur = c.execute("UPDATE report_buttons SET clicked_by = ?, claimed_until = ? WHERE channel = ? AND ts = ? "
                            "AND recommendation = ? AND change_id IS NULL AND claimed_until < ?",
                            (user, now.timestamp() + ttl_s, channel, ts, recommendation, now.timestamp()))
            return cur.rowcount == 1

    def done(self, channel: str, ts: str, recommendation: str, change_id: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE report_buttons SET change_id = ? WHERE channel = ? AND ts = ? AND recommendation = ?",
                      (change_id, channel, ts, recommendation))

    def release(self, channel: str, ts: str, recommendation: str) -> None:
        """Give a claim back (the click's work failed), so the next click may try again."""
        with self._tx() as c:
            c.execute("UPDATE report_buttons SET clicked_by = NULL, claimed_until = 0 WHERE channel = ? AND ts = ? "
                      "AND recommendation = ? AND change_id IS NULL", (channel, ts, recommendation))

    def posted(self, job: str) -> list[PostedButton]:
        rows = self._conn.execute(_SELECT + "WHERE job = ? ORDER BY posted_at", (job,)).fetchall()
        return [_button(r) for r in rows]


def _button(row: tuple[object, ...]) -> PostedButton:
    channel, ts, rec, spec, reason, job, tick, posted_at, clicked_by, change_id = row
    return PostedButton(str(channel), str(ts), str(rec), ChangeSpec.model_validate_json(str(spec)), str(reason),
                        str(job), str(tick), dt.datetime.fromisoformat(str(posted_at)),
                        str(clicked_by) if clicked_by is not None else None,
                        str(change_id) if change_id is not None else None)
