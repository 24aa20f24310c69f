"""Slack delivery marks are shared through the store: a signed request replayed to another replica is refused.

Two `SeenMarks` on two store handles over one database are two replicas; each test runs on SQLite and
on a real Postgres.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest

from agent.entry.slack.app import REPLAY_WINDOW, SeenMarks
from agent.storage.store import SqlStore


@pytest.fixture
def stores(db_target: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    a, b = SqlStore(db_target), SqlStore(db_target)
    yield a, b
    a.close()
    b.close()


def test_a_request_handled_by_one_replica_is_a_replay_on_the_other(stores: tuple[SqlStore, SqlStore]) -> None:
    async def run() -> tuple[bool, bool]:
        a = SeenMarks(stores[0], lambda: dt.datetime.now(dt.UTC))
        b = SeenMarks(stores[1], lambda: dt.datetime.now(dt.UTC))
        await a.load()
        await b.load()  # both started before the request arrived: nothing to load
        first = await a.first("sig:v0=abc:", REPLAY_WINDOW)
        again = await b.first("sig:v0=abc:", REPLAY_WINDOW)
        await a.close()
        await b.close()
        return first, again

    assert asyncio.run(run()) == (True, False)


def test_a_burst_offered_to_two_replicas_at_once_is_handled_once_per_request(
        stores: tuple[SqlStore, SqlStore]) -> None:
    keys = [f"sig:v0={i:04x}:" for i in range(100)]

    async def run() -> list[bool]:
        replicas = [SeenMarks(s, lambda: dt.datetime.now(dt.UTC)) for s in stores]
        out = await asyncio.gather(*(r.first(k, REPLAY_WINDOW) for k in keys for r in replicas))
        for r in replicas:
            await r.close()
        return list(out)

    won = asyncio.run(run())
    assert [won[2 * i] + won[2 * i + 1] for i in range(len(keys))] == [1] * len(keys)


def test_a_lapsed_mark_is_taken_over(stores: tuple[SqlStore, SqlStore]) -> None:
    t0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
    assert stores[0].claim_seen([("event:E1", t0 - dt.timedelta(minutes=5))], t0, t0 - dt.timedelta(hours=1)) == {
        "event:E1"}
    later = t0 + dt.timedelta(minutes=10)
    assert stores[1].claim_seen([("event:E1", later - dt.timedelta(minutes=30))], later,
                                later - dt.timedelta(hours=1)) == set()  # still within 30 min
    assert stores[1].claim_seen([("event:E1", later - dt.timedelta(minutes=5))], later,
                                later - dt.timedelta(hours=1)) == {"event:E1"}  # its 5 min had passed
