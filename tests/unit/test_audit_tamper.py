"""Every way someone holding the audit database can tamper is found by `opsagent audit verify`, named by the
first bad record; the writer never signs a chain it cannot verify; and a rewrite of the whole chain (no key
needed) shows against any earlier checkpoint that survives outside the host."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import _COLUMNS, AuditLog, AuditTampered, Checkpoint, FileCheckpointSink, record_hash, sign
from agent.entry.cli import app as cli

KEY = b"test-signing-key-0123456789"


def event(i: int) -> AuditEvent:
    return AuditEvent(at=dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
                      kind=AuditKind.TOOL_CALL, actor="agent:rules", action="k8s_cordon_node",
                      incident_id="inc-1", inputs_hash=f"{i:064x}", decision="allowed", result={"i": i},
                      duration_ms=1.5)


@pytest.fixture
def sink(tmp_path: Path) -> FileCheckpointSink:
    return FileCheckpointSink(tmp_path / "export" / "checkpoints.jsonl")


@pytest.fixture
def log(db_target: str, sink: FileCheckpointSink) -> Iterator[AuditLog]:
    """25 records with checkpoints at 10, 20 and 25 (the writer's periodic ones and one on demand)."""
    a = AuditLog(db_target, KEY, [sink], checkpoint_every=10)
    for i in range(25):
        a.append(event(i))
    a.checkpoint()
    assert [c.seq for c in sink.all()] == [10, 20, 25]
    yield a
    a.close()


def rows(log: AuditLog) -> list[list[Any]]:
    return [[e[c] if c != "result" else json.dumps(e[c], sort_keys=True) for c in _COLUMNS] for e in log.events()]


def rewrite(log: AuditLog, new_rows: list[list[Any]]) -> None:
    """What an attacker with the database does without the key: replace the table's rows wholesale."""
    marks = ", ".join("?" * len(_COLUMNS))
    if log.postgres:
        with psycopg.connect(log.path, autocommit=True) as pg, pg.transaction():
            pg.execute("ALTER TABLE audit DISABLE TRIGGER USER")
            pg.execute("DELETE FROM audit")
            with pg.cursor() as cur:
                cur.executemany(f"INSERT INTO audit VALUES ({marks.replace('?', '%s')})", new_rows)  # noqa: S608
            pg.execute("ALTER TABLE audit ENABLE TRIGGER USER")
        return
    conn = sqlite3.connect(log.path)
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit")
    conn.executemany(f"INSERT INTO audit VALUES ({marks})", new_rows)  # noqa: S608
    conn.commit()
    conn.close()


def rechain(new_rows: list[list[Any]]) -> list[list[Any]]:
    """Renumber and recompute every link and hash, as anyone can: the chain needs no key."""
    prev, out = "0" * 64, []
    for i, r in enumerate(new_rows, start=1):
        r = [i, *r[1:11], prev]
        r.append(record_hash(*r[-1:], *r[:11]))  # prev_hash first, then seq..duration_ms
        out.append(r)
        prev = r[-1]
    return out


def first(log: AuditLog) -> tuple[int, str]:
    p = log.verify().problems
    assert p, "tampering went unnoticed"
    return p[0].seq, p[0].kind


def test_an_edited_record_is_named(log: AuditLog) -> None:
    r = rows(log)
    r[6][7] = "refused"  # record 7's decision
    rewrite(log, r)
    assert first(log) == (7, "edited")


def test_a_deleted_record_is_named(log: AuditLog) -> None:
    rewrite(log, [x for x in rows(log) if x[0] != 12])
    assert first(log) == (13, "deleted")


def test_reordered_records_are_named(log: AuditLog) -> None:
    r = rows(log)
    r[4][0], r[5][0] = 6, 5
    rewrite(log, r)
    assert first(log)[0] in (5, 6) and first(log)[1] in ("reordered", "edited")


def test_a_truncation_below_an_earlier_checkpoint_is_named_even_when_the_file_keeps_only_older_lines(
        log: AuditLog, sink: FileCheckpointSink) -> None:
    # The file sink's last line is not its newest checkpoint: the attacker appends an old one at the end.
    lines = sink.path.read_text().splitlines()
    sink.path.write_text("\n".join([*lines, lines[0]]) + "\n")
    rewrite(log, rows(log)[:15])
    problems = log.verify().problems
    assert (16, "truncated") in {(p.seq, p.kind) for p in problems}
    assert any(p.kind == "checkpoint-order" for p in problems)


@pytest.mark.parametrize("edited", [3, 14, 22])
def test_a_rewrite_and_rechain_is_named_from_the_first_checkpoint_it_broke(log: AuditLog, edited: int) -> None:
    r = rows(log)
    r[edited - 1][8] = "forged reason"
    rewrite(log, rechain(r))
    seq, kind = first(log)
    # The chain is self-consistent again; the signed checkpoints bound where the change is.
    assert kind == "rewritten"
    assert seq == {3: 1, 14: 11, 22: 21}[edited]


def test_tamper_then_append_is_found_and_the_writer_refuses_to_sign(
        log: AuditLog, sink: FileCheckpointSink, caplog: pytest.LogCaptureFixture) -> None:
    r = rows(log)
    r[7][8] = "forged"  # record 8, then a valid chain recomputed over it
    rewrite(log, rechain(r))
    for i in range(6):  # six normal appends cross the periodic checkpoint at 30
        log.append(event(100 + i))
    assert [c.seq for c in sink.all()] == [10, 20, 25], "the writer signed a rewritten chain"
    assert "refusing to sign" in caplog.text
    with pytest.raises(AuditTampered):
        log.checkpoint()
    assert first(log) == (1, "rewritten")


def test_a_removed_checkpoint_leaves_a_gap(log: AuditLog, sink: FileCheckpointSink) -> None:
    lines = sink.path.read_text().splitlines()
    sink.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert (20, "checkpoint-gap") in {(p.seq, p.kind) for p in log.verify().problems}


def test_a_forged_checkpoint_needs_the_key(log: AuditLog, sink: FileCheckpointSink) -> None:
    """A checkpoint made up to match a rewritten chain does not verify without the signing key."""
    r = rows(log)
    r[2][8] = "forged"
    new = rechain(r)
    rewrite(log, new)
    at = dt.datetime.now(dt.UTC).isoformat()
    forged = [Checkpoint(s, new[s - 1][12], at, sign(b"guessed-key-0123456789", s, new[s - 1][12], at))
              for s in (10, 20, 25)]
    sink.path.write_text("".join(c.to_json() + "\n" for c in forged))
    kinds = [p.kind for p in log.verify().problems]
    assert kinds.count("bad-checkpoint") == 3


def test_an_intact_log_with_every_checkpoint_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok, report.problems
    assert report.checkpoints == 3 and report.checkpoint_seq == 25


def _cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("OPSAGENT_STATE_DIR", str(state))
    monkeypatch.setenv("OPSAGENT_AUDIT__KEY", KEY.decode())
    return state


def test_the_cli_verifies_before_it_signs_and_never_signs_a_failing_chain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _cli_env(tmp_path, monkeypatch)
    state.mkdir()
    sink = FileCheckpointSink(state / "audit-checkpoints.jsonl")
    a = AuditLog(state / "audit.db", KEY, [sink], checkpoint_every=1000)
    a.append_many([event(i) for i in range(12)])
    a.checkpoint()
    a.close()
    ok = CliRunner().invoke(cli, ["audit", "verify", "--state-dir", str(state)])
    assert ok.exit_code == 0, ok.output
    # Now truncate below the signed head and rechain: the old verify signed the new head first and said OK.
    a = AuditLog(state / "audit.db", KEY, [sink])
    r = rows(a)
    r[3][8] = "forged"
    rewrite(a, rechain(r[:9]))
    a.close()
    before = sink.path.read_text()
    bad = CliRunner().invoke(cli, ["audit", "verify", "--state-dir", str(state)])
    assert bad.exit_code == 1
    assert "record 1: rewritten" in bad.output or "record 10: truncated" in bad.output, bad.output
    assert sink.path.read_text() == before, "a failing chain was signed"
