"""Fixtures every test directory may use: the store backends (SQLite and a real Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One Postgres server per session (started only if a test asks for it), stopped by its PID."""
    pg = LocalPostgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store/ledger/audit test keeps its tables: a SQLite file, or a fresh Postgres database."""
    if request.param == "sqlite":
        return str(tmp_path / "opsagent.db")
    pg: LocalPostgres = request.getfixturevalue("postgres")
    return pg.create_database()
