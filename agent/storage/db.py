"""One small database layer under the store, the ledger and the audit log: SQLite or Postgres.

The durable modules write their SQL once, in the dialect both engines share (`?` placeholders,
`INSERT ... ON CONFLICT`, partial indexes), and get from here:
- `_tx()`: one write transaction. SQLite takes the file's write lock up front (`BEGIN IMMEDIATE`)
  so concurrent writers queue instead of failing half-way; Postgres runs at READ COMMITTED and the
  caller serializes what must not interleave with `_serialize(c, key)` (a transaction-scoped
  advisory lock; a no-op on SQLite, whose write lock already serializes everything).
- `_atomic(fn, key=...)`: `fn` in one write transaction that first takes the advisory lock `key`, run
  again with backoff when Postgres aborts it as a serialization failure or a deadlock (SQLSTATE
  40001 / 40P01): the caller's statements never see a half-done attempt, and no user sees the error.
- `_conn.execute(...)`: reads outside a transaction (a pooled connection on Postgres).
- `_stream(...)`: large reads in batches (a server-side cursor on Postgres).
- `await _fetchone_async(...)` / `_fetchall_async(...)`: one statement from the event loop on the loop's own
  connections (Postgres), for a handler's per-request statement (intake), without a thread hop.

SQLite is the single-replica default (a file, WAL journal, readers never block the writer);
Postgres (`postgresql://...`) is what several replicas share. Nothing here knows about incidents
or changes: the modules above own their tables.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Postgres aborts one of the transactions with these, and the transaction can simply be run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Any: ...


def is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def _pg(sql: str) -> str:
    # Our statements never contain '?' or '%' inside literals, so the placeholder swap is exact.
    return sql.replace("?", "%s")


class _Rows:
    """A fully fetched result, so the pooled connection can go back before the caller reads it."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _PgTx:
    """A Postgres connection inside a transaction, spoken to with the SQLite placeholders."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        cur: Cursor = self.raw.execute(_pg(sql), parameters)
        return cur

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Any:
        with self.raw.cursor() as cur:
            cur.executemany(_pg(sql), parameters)


class _PgReader:
    """Reads outside a transaction: borrow a pooled connection, fetch everything, give it back."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        with self.pool.connection() as conn:
            cur = conn.execute(_pg(sql), parameters)
            rows = cur.fetchall() if cur.description is not None else []
            return _Rows(rows, cur.rowcount)

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Any:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany(_pg(sql), parameters)


class _SqliteReader:
    """Reads on the shared SQLite connection, run to completion under the handle's lock: a statement
    left half-read would keep a stale snapshot open and make the next write fail with 'locked'."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        with self.lock:
            cur = self.conn.execute(sql, parameters)
            return _Rows(cur.fetchall(), cur.rowcount)

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Any:
        with self.lock:
            self.conn.executemany(sql, parameters)


LOOP_APPLICATION_NAME = "opsagent-intake"  # how the loop's connections show in pg_stat_activity


class _LoopConnections:
    """Up to `size` autocommit Postgres connections used straight from the running event loop.

    For the one statement an HTTP handler issues per request (intake): no thread hop and none of the
    threaded pool's locking, which together cost more CPU than the statement. Connections belong to the loop
    that opened them; another loop (a test's, a restarted server's) starts a fresh set and closes the old one,
    so one store serves one event loop at a time (`opsagent serve` runs one). A connection whose statement did
    not complete (an error, a cancelled request) is closed, never reused half-way.
    """

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle: asyncio.Queue[Any] | None = None
        self.opened: set[Any] = set()

    async def fetchall(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        import psycopg

        loop = asyncio.get_running_loop()
        if loop is not self.loop or self.idle is None:
            self.close()
            self.loop, self.idle = loop, asyncio.Queue()
        for attempt in range(2):
            if self.idle.empty() and len(self.opened) < self.size:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                             application_name=LOOP_APPLICATION_NAME)
                self.opened.add(conn)
            else:
                conn = await self.idle.get()
            done = False
            try:
                cur = await conn.execute(_pg(sql), parameters)
                rows: list[Any] = await cur.fetchall()
                done = True
                return rows
            except psycopg.OperationalError:
                # A connection the server dropped while idle (a restart, an idle timeout) fails on first use:
                # once, on a fresh one. Callers' statements are idempotent folds, so a repeat is harmless.
                if attempt or not conn.broken:
                    raise
            finally:
                if done:
                    self.idle.put_nowait(conn)
                else:
                    self.opened.discard(conn)
                    conn.pgconn.finish()  # synchronous: this may run while the request is being cancelled
        raise AssertionError("unreachable")  # the loop returns or raises

    def close(self) -> None:
        for conn in self.opened:
            conn.pgconn.finish()
        self.opened.clear()
        self.idle = None


class Db:
    """A database the durable modules share: `target` is a SQLite path or a `postgresql://` URL.

    `schema` is run at open (idempotent DDL). `pg_schema`, when given, replaces it on Postgres for
    the few things the dialects spell differently (triggers, column types). `migrate(conn, postgres)`, when
    given, runs right after it in the same transaction (under the schema lock on Postgres), for changes of
    layout that idempotent DDL cannot say (a column added to an existing table, rows rewritten).
    """

    def __init__(self, target: Path | str, schema: str, pg_schema: str | None = None, *, pool_size: int = 4,
                 migrate: Callable[[Conn, bool], None] | None = None) -> None:
        self.path = str(target)
        self.postgres = is_postgres(target)
        self._lock = threading.Lock()
        self._conn: Conn
        if self.postgres:
            from psycopg_pool import ConnectionPool  # only deployments on Postgres need psycopg

            self._pool = ConnectionPool(self.path, min_size=1, max_size=pool_size, open=True, timeout=30,
                                        kwargs={"autocommit": True})
            with self._pool.connection() as pg, pg.transaction():
                # Two replicas starting at once must not race on CREATE ... IF NOT EXISTS.
                pg.execute("SELECT pg_advisory_xact_lock(hashtextextended('opsagent:schema', 0))")
                pg.execute(pg_schema or schema)
                if migrate is not None:
                    migrate(_PgTx(pg), True)
            self._conn = _PgReader(self._pool)
            self._loop_conns = _LoopConnections(self.path, pool_size)
        else:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            _sqlite_init(self._sqlite, schema, migrate)
            self._conn = _SqliteReader(self._sqlite, self._lock)

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        if self.postgres:
            with self._pool.connection() as conn, conn.transaction():
                yield _PgTx(conn)
            return
        with self._lock:
            self._sqlite.execute("BEGIN IMMEDIATE")
            try:
                yield self._sqlite
            except BaseException:
                self._sqlite.execute("ROLLBACK")
                raise
            self._sqlite.execute("COMMIT")

    def _atomic(self, fn: Callable[[Conn], T], *, key: str | None = None, attempts: int = 8,
                base_delay_s: float = 0.01) -> T:
        """Run `fn` in one write transaction (holding `key` first, when given); retry it after a
        serialization failure or a deadlock, with jittered exponential backoff (10 ms, 20 ms, ... ≤ 0.5 s)."""
        for attempt in range(attempts):
            try:
                with self._tx() as c:
                    if key is not None:
                        self._serialize(c, key)
                    return fn(c)
            except Exception as e:
                if getattr(e, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == attempts - 1:
                    raise
                time.sleep(min(base_delay_s * 2 ** attempt, 0.5) * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _serialize(self, c: Conn, key: str) -> None:
        """Hold `key` until the transaction ends, across every process on this database."""
        if self.postgres:
            c.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def _stream(self, sql: str, parameters: Sequence[Any] = (), batch: int = 20000) -> Iterator[Any]:
        """Yield rows of a large result without holding it all in memory."""
        if self.postgres:
            with self._pool.connection() as conn, conn.transaction(), \
                    conn.cursor(name=f"stream_{uuid.uuid4().hex[:8]}") as cur:
                cur.itersize = batch
                cur.execute(_pg(sql), parameters)
                yield from cur
            return
        lite = self._sqlite.execute(sql, parameters)
        while rows := lite.fetchmany(batch):
            yield from rows

    async def _fetchone_async(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """One statement in its own transaction, from the event loop (Postgres only); its first row."""
        rows = await self._loop_conns.fetchall(sql, parameters)
        return rows[0] if rows else None

    async def _fetchall_async(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """One statement in its own transaction, from the event loop (Postgres only); all its rows."""
        return await self._loop_conns.fetchall(sql, parameters)

    def close(self) -> None:
        if self.postgres:
            self._loop_conns.close()
            self._pool.close()
        else:
            self._sqlite.close()


def _sqlite_init(conn: sqlite3.Connection, schema: str, migrate: Callable[[Conn, bool], None] | None = None,
                 timeout_s: float = 30.0) -> None:
    """WAL mode, foreign keys and the schema, safe when several processes open a new file at once.

    Switching to WAL needs the file to itself and SQLite answers "database is locked" at once rather
    than waiting for it (as it does for a deferred transaction that would deadlock), so both are retried
    until `timeout_s`; the DDL runs in an IMMEDIATE transaction, which does wait its turn.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(f"BEGIN IMMEDIATE;\n{schema}")
            if migrate is not None:
                migrate(conn, False)
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            time.sleep(0.05)
