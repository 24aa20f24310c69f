"""The audit chain finds edits, deletions, reordering and truncation, even by someone with the DB file."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import AuditLog, FileCheckpointSink

KEY = b"test-signing-key-0123456789"


def event(i: int) -> AuditEvent:
    return AuditEvent(at=dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
                      kind=AuditKind.TOOL_CALL, actor="agent:rules", action="prometheus_query_range",
                      incident_id="inc-1", inputs_hash=f"{i:064x}", decision="allowed", result={"ok": True, "i": i},
                      duration_ms=1.5)


@pytest.fixture
def log(db_target: str, tmp_path: Path) -> Iterator[AuditLog]:
    a = AuditLog(db_target, KEY, [FileCheckpointSink(tmp_path / "export" / "checkpoints.jsonl")],
                 checkpoint_every=10)
    a.append_many([event(i) for i in range(25)])
    a.checkpoint()
    yield a
    a.close()


def tamper(log: AuditLog, *sql: str) -> None:
    """What an attacker with database access can do: drop (disable) the append-only triggers and write."""
    if log.postgres:
        with psycopg.connect(log.path, autocommit=True) as pg, pg.transaction():
            pg.execute("ALTER TABLE audit DISABLE TRIGGER USER")
            for s in sql:
                pg.execute(s)  # type: ignore[arg-type]  # fixed strings from the tests below
            pg.execute("ALTER TABLE audit ENABLE TRIGGER USER")
        return
    conn = sqlite3.connect(log.path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for s in sql:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_an_intact_log_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok and report.records == 25 and report.checkpoint_seq == 25


def test_the_database_refuses_updates_and_deletes(log: AuditLog) -> None:
    if log.postgres:
        with psycopg.connect(log.path, autocommit=True) as pg:
            for sql in ("UPDATE audit SET decision = 'allowed' WHERE seq = 3", "DELETE FROM audit WHERE seq = 3",
                        "TRUNCATE audit"):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    pg.execute(sql)  # type: ignore[arg-type]
            assert pg.execute("SELECT count(*) FROM audit").fetchone() == (25,)
        return
    conn = sqlite3.connect(log.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET decision = 'allowed' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 3")


def test_an_edited_record_is_found(log: AuditLog) -> None:
    tamper(log, "UPDATE audit SET decision = 'refused' WHERE seq = 7")
    kinds = {(p.seq, p.kind) for p in log.verify().problems}
    assert (7, "edited") in kinds


def test_a_deleted_record_is_found(log: AuditLog) -> None:
    tamper(log, "DELETE FROM audit WHERE seq = 12")
    problems = log.verify().problems
    assert any(p.kind == "deleted" and p.seq == 13 for p in problems)


def test_reordered_records_are_found(log: AuditLog) -> None:
    tamper(log, "UPDATE audit SET seq = -1 WHERE seq = 5", "UPDATE audit SET seq = 5 WHERE seq = 6",
           "UPDATE audit SET seq = 6 WHERE seq = -1")
    assert any(p.kind in ("reordered", "edited") and p.seq in (5, 6) for p in log.verify().problems)


def test_a_truncated_tail_is_found_through_the_checkpoint(log: AuditLog) -> None:
    tamper(log, "DELETE FROM audit WHERE seq > 20")
    problems = log.verify().problems
    assert [p.kind for p in problems] == ["truncated"]


def test_a_forged_checkpoint_is_found(log: AuditLog, tmp_path: Path) -> None:
    path = tmp_path / "export" / "checkpoints.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], lines[-1].replace('"seq": 25', '"seq": 20')]) + "\n")
    assert any(p.kind == "bad-checkpoint" for p in log.verify().problems)


def test_appends_continue_the_chain_after_reopening(log: AuditLog, tmp_path: Path) -> None:
    log.close()
    again = AuditLog(log.path, KEY, [FileCheckpointSink(tmp_path / "export" / "checkpoints.jsonl")])
    again.append(event(99))
    report = again.verify()
    again.close()
    assert report.ok and report.records == 26


def test_two_writers_extend_one_chain(log: AuditLog, tmp_path: Path) -> None:
    """Two replicas (two handles on one database) appending at once still leave one unbroken chain."""
    other = AuditLog(log.path, KEY, [FileCheckpointSink(tmp_path / "export" / "checkpoints.jsonl")],
                     checkpoint_every=10)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: (log if i % 2 else other).append(event(100 + i)), range(40)))
    report = log.verify()
    other.close()
    assert report.ok, report.problems
    assert report.records == 65 and report.last_seq == 65
