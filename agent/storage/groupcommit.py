"""Group commit: the writes that arrive together on one event loop share one transaction and one commit.

A webhook delivery on Postgres is one statement in its own transaction; most of its database CPU is the
statement's round trip and the commit (WAL insert and flush), not the fold itself. `GroupCommit` gathers
the writes submitted while earlier batches are in flight, or in the same turn of the event loop, into one
call of `run_batch` (one statement, one transaction), and answers each caller only when that call returned,
that is, after the commit: nothing is acknowledged that is not durable.

Batches form by themselves, without a timer: an idle server sends each write at once (a batch of one,
no added latency); a busy one, with `max_inflight` batches on the wire, queues what arrives meanwhile and
sends it as the next batch. So the cost per write falls as the load rises.

If a batch fails (the statement or its commit raised), nothing of it was committed, and each of its writes
is run alone with `run_one`: a delivery that cannot be stored fails its own request only, and a failure
shared by all (the database gone) fails each of them, with no caller told "stored".

It must not know what it writes: the store gives it the two functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class GroupCommitStats:
    """Counters since the store opened (for tests and benchmarks)."""

    batches: int = 0  # calls of run_batch, failed ones included
    writes: int = 0  # writes submitted
    largest: int = 0  # the largest batch
    failed_batches: int = 0  # batches whose writes were then run alone


class GroupCommit(Generic[T, R]):
    """Coalesce writes submitted concurrently on one event loop into batches (see the module docstring).

    `run_batch(items)` must write all of them in one transaction and return one result per item, in order;
    `run_one(item)` writes one item in a transaction of its own. Both must be idempotent per item (a write
    whose commit's answer was lost may be run again). `max_batch` bounds a batch's size (its statement's
    parameter); `max_inflight` is how many batches may be on the wire at once (each holds a connection).
    """

    def __init__(self, run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
                 run_one: Callable[[T], Awaitable[R]], *, max_batch: int = 64, max_inflight: int = 2) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        self.run_batch, self.run_one = run_batch, run_one
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self.stats = GroupCommitStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """Write `item` in the next batch; return its result once that batch has committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (a test's, a restarted server's): nothing carries over
            self._loop, self._pending, self._inflight, self._scheduled = loop, [], 0, False
            self._tasks = set()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        self.stats.writes += 1
        if self._inflight < self.max_inflight and not self._scheduled:
            # Next turn of the loop: the requests parsed in this turn join the same batch.
            self._scheduled = True
            loop.call_soon(self._start)
        return await fut

    def _start(self) -> None:
        self._scheduled = False
        assert self._loop is not None
        while self._pending and self._inflight < self.max_inflight:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            self._inflight += 1
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        loop = asyncio.get_running_loop()
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            if len(batch) > 1:
                try:
                    results = await self.run_batch([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} writes returned {len(results)} results")
                except Exception as e:
                    self.stats.failed_batches += 1
                    log.warning("a batch of %d writes failed (%s); writing each alone", len(batch), e)
                else:
                    for (_, fut), result in zip(batch, results, strict=True):
                        _resolve(fut, result)
                    return
            for item, fut in batch:  # one after another: a failure shared by all costs no more connections
                try:
                    _resolve(fut, await self.run_one(item))
                except Exception as e:
                    _fail(fut, e)
        except BaseException:  # cancelled (the loop is closing): no caller waits for ever, none is told "stored"
            for _, fut in batch:
                if not fut.done():
                    fut.cancel()
            raise
        finally:
            if self._loop is loop:
                self._inflight -= 1
                if self._pending and not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self._start)


def _resolve(fut: asyncio.Future[R], result: R) -> None:
    if not fut.done():  # done: its caller went away (a cancelled request); the write stands all the same
        fut.set_result(result)


def _fail(fut: asyncio.Future[R], error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)
