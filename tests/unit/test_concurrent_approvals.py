"""Eight approvers in four processes click Approve on the same change at once, twenty rounds, on both backends.

Each approver does what `opsagent changes approve` and Slack's button do on the shared store: open the
change flow's checkpointer (on Postgres its first use creates LangGraph's tables, whose migration runs
`CREATE INDEX CONCURRENTLY`), record its approval and try to claim the execution. Every round must end
with exactly one claim and no error shown to any approver (a deadlock, "waits for ShareLock on virtual
transaction", was one before the checkpoint set-up stopped blocking inside a snapshot).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing as mp
import threading
import traceback
from typing import Any

import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from agent.app import _setup_once  # imported before the fork, so the approver processes start at once
from agent.change.ledger import Ledger
from agent.change.models import Approval, ChangeStatus
from agent.storage.db import is_postgres
from tests.postgres import LocalPostgres
from tests.unit.test_store_backends import change

PROCESSES, THREADS, ROUNDS = 4, 2, 20
NOW = dt.datetime.now(dt.UTC)


async def _open_checkpointer(url: str) -> None:
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await _setup_once(saver)


def _approver(worker: int, targets: list[str], barrier: Any, out: Any) -> None:
    for rnd, target in enumerate(targets):
        barrier.wait(timeout=300)
        try:
            if is_postgres(target):
                asyncio.run(_open_checkpointer(target))
            ledger = Ledger(target)
            try:
                ledger.add_approval(Approval(
                    change_id=f"ch-{rnd}", approver=f"person-{worker}", role="oncall", decision="approve",
                    at=NOW, spec_digest="d", fingerprint=change().fingerprint,
                    expires_at=NOW + dt.timedelta(minutes=15), via="cli"))
                won, _ = ledger.claim(f"ch-{rnd}", f"executor:{worker}", "orig")
            finally:
                ledger.close()
            out.put((rnd, worker, won, None))
        except Exception:
            out.put((rnd, worker, False, traceback.format_exc()))


def _process(first: int, targets: list[str], barrier: Any, out: Any) -> None:
    threads = [threading.Thread(target=_approver, args=(first + i, targets, barrier, out)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_eight_concurrent_approvers_from_four_processes_execute_each_change_once(
        backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    targets: list[str] = []
    for rnd in range(ROUNDS):
        if backend == "postgres":
            pg: LocalPostgres = request.getfixturevalue("postgres")
            target = pg.create_database("approve")  # a fresh database: the checkpoint tables are created too
        else:
            target = str(tmp_path / f"round-{rnd}.db")
        ledger = Ledger(target)
        ledger.save(change(f"ch-{rnd}"))
        ledger.close()
        targets.append(target)
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(PROCESSES * THREADS), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(p * THREADS, targets, barrier, out)) for p in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in range(PROCESSES * THREADS * ROUNDS)]
    for p in procs:
        p.join(timeout=60)
    errors = [err for *_, err in results if err]
    assert errors == [], errors[0]
    wins = {rnd: sum(1 for r, _, won, _ in results if r == rnd and won) for rnd in range(ROUNDS)}
    assert wins == dict.fromkeys(range(ROUNDS), 1), wins
    for rnd, target in enumerate(targets):
        ledger = Ledger(target)
        try:
            assert len(ledger.approvals(f"ch-{rnd}")) == PROCESSES * THREADS
            assert ledger.get(f"ch-{rnd}").status == ChangeStatus.PENDING_APPROVAL  # type: ignore[union-attr]
        finally:
            ledger.close()
