"""The scheduled cost report: a cron expression, and a lease so one process posts each tick.

Several `opsagent serve` processes may share one state (the SQLite file, or later Postgres). Each
checks `due()` on its own clock; whichever claims the tick first (an atomic upsert guarded by the
lease) builds and posts the report, the others see the claim and do nothing. A process that dies
after claiming leaves a lease that expires, so another takes the tick over; a tick is marked done
only after the post returned. Posting itself is a callable passed in (the Slack app's).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from croniter import croniter

from agent.storage.db import Db

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_runs (
    job TEXT NOT NULL,
    tick TEXT NOT NULL,
    owner TEXT NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL,
    done_at TEXT,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, tick)
);
"""

Blocks = list[dict[str, Any]]
Post = Callable[[Blocks], Awaitable[Any] | Any]


class CronSchedule:
    """A cron expression evaluated in UTC. ValueError names the expression when it does not parse."""

    def __init__(self, expr: str) -> None:
        if not croniter.is_valid(expr):
            raise ValueError(f"rightsize.schedule {expr!r} is not a cron expression (e.g. '0 9 * * MON')")
        self.expr = expr

    def last_tick(self, now: dt.datetime) -> dt.datetime:
        """The latest scheduled time at or before `now`."""
        nxt = croniter(self.expr, now).get_next(dt.datetime)
        prev: dt.datetime = croniter(self.expr, nxt).get_prev(dt.datetime)
        return prev if prev <= now else croniter(self.expr, now).get_prev(dt.datetime)

    def next_tick(self, now: dt.datetime) -> dt.datetime:
        nxt: dt.datetime = croniter(self.expr, now).get_next(dt.datetime)
        return nxt


class ScheduleLeases(Db):
    """Claims of schedule ticks, shared by every process on the same store (SQLite file or Postgres)."""

    def __init__(self, path: Path | str, owner: str | None = None) -> None:
        super().__init__(path, SCHEMA)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"

    def claim(self, job: str, tick: dt.datetime, now: dt.datetime, lease_s: float) -> bool:
        """Take `tick` of `job` unless it is done or another owner's lease is still running."""
        # Most checks find the tick already done or held: answer those with a read, not a write transaction
        # (serve checks every `schedule_check_s` on every replica, and on SQLite a write takes the file lock).
        row = self._conn.execute("SELECT done_at, lease_until FROM schedule_runs WHERE job = ? AND tick = ?",
                                 (job, tick.isoformat())).fetchone()
        if row is not None and (row[0] is not None or float(row[1]) >= now.timestamp()):
            return False
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO schedule_runs (job, tick, owner, lease_until) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job, tick) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until "
                "WHERE schedule_runs.done_at IS NULL AND schedule_runs.lease_until < ?",
                (job, tick.isoformat(), self.owner, now.timestamp() + lease_s, now.timestamp()))
            return cur.rowcount == 1

    def finish(self, job: str, tick: dt.datetime, now: dt.datetime, detail: str = "") -> None:
        with self._tx() as c:
            c.execute("UPDATE schedule_runs SET done_at = ?, detail = ? WHERE job = ? AND tick = ? AND owner = ?",
                      (now.isoformat(), detail[:500], job, tick.isoformat(), self.owner))

    def release(self, job: str, tick: dt.datetime) -> None:
        """Give the tick back (the post failed), so the next check may try again."""
        with self._tx() as c:
            c.execute("UPDATE schedule_runs SET lease_until = 0 WHERE job = ? AND tick = ? AND owner = ? "
                      "AND done_at IS NULL", (job, tick.isoformat(), self.owner))

    def runs(self, job: str) -> list[tuple[str, str, str | None]]:
        rows = self._conn.execute("SELECT tick, owner, done_at FROM schedule_runs WHERE job = ? ORDER BY tick",
                                  (job,)).fetchall()
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]


async def run_if_due(job: str, schedule: CronSchedule, leases: ScheduleLeases, now: dt.datetime,
                     build: Callable[[], Awaitable[Blocks]], post: Post, *, max_lateness_s: float = 3600,
                     lease_s: float = 600) -> dt.datetime | None:
    """Post the report for the latest tick if it is due, not too late, and this process wins it.

    Returns the tick posted, or None. A tick older than `max_lateness_s` (the service was down) is
    skipped rather than posted late.
    """
    tick = schedule.last_tick(now)
    if (now - tick).total_seconds() > max_lateness_s:
        return None
    if not leases.claim(job, tick, now, lease_s):
        return None
    try:
        blocks = await build()
        out = post(blocks)
        if inspect.isawaitable(out):
            await out
    except BaseException:
        log.exception("scheduled %s for %s failed; released for a retry", job, tick.isoformat())
        leases.release(job, tick)
        raise
    leases.finish(job, tick, dt.datetime.now(dt.UTC), f"{len(blocks)} blocks")
    return tick
