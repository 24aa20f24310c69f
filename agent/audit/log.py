"""The tamper-evident audit log: append-only, hash-chained, with signed checkpoints exported elsewhere.

Each record's hash covers its fields and the previous record's hash, so editing, deleting or
reordering a record breaks the chain from that point. Truncating the tail cannot be seen from the
chain alone, so every `checkpoint_every` records (and on demand) the writer signs (sequence number,
hash) with an HMAC key and exports the checkpoint to sinks outside the database (a file, S3 or
CloudWatch Logs); `verify` checks the chain against the newest checkpoint it can read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.audit.events import AuditEvent, AuditKind
from agent.storage.db import Db

GENESIS = "0" * 64
SEP = "\x1f"

_TABLE = """
CREATE TABLE IF NOT EXISTS audit (
    seq {int} PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    incident_id TEXT,
    inputs_hash TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL,
    duration_ms {float} NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_incident ON audit(incident_id, seq);
"""

SCHEMA = _TABLE.format(int="INTEGER", float="REAL") + """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"""

# The same table on Postgres: 8-byte floats (the hash covers repr(duration_ms)) and triggers that
# refuse UPDATE, DELETE and TRUNCATE for every role that does not own the table.
PG_SCHEMA = _TABLE.format(int="BIGINT", float="DOUBLE PRECISION") + """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_delete BEFORE DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""

_COLUMNS = ("seq", "at", "kind", "actor", "action", "incident_id", "inputs_hash", "decision", "reason", "result",
            "duration_ms", "prev_hash", "hash")
# Built once from the fixed column names above; no value is ever formatted into SQL.
_INSERT = f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM audit"  # noqa: S608


def record_hash(prev_hash: str, seq: int, at: str, kind: str, actor: str, action: str, incident_id: str | None,
                inputs_hash: str, decision: str, reason: str, result: str, duration_ms: float) -> str:
    payload = SEP.join((prev_hash, str(seq), at, kind, actor, action, incident_id or "", inputs_hash, decision,
                        reason, result, repr(float(duration_ms))))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    signature: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at, "signature": self.signature})

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        return cls(seq=int(d["seq"]), hash=str(d["hash"]), at=str(d["at"]), signature=str(d["signature"]))


def sign(key: bytes, seq: int, digest: str, at: str) -> str:
    return hmac.new(key, f"{seq}{SEP}{digest}{SEP}{at}".encode(), hashlib.sha256).hexdigest()


class CheckpointSink(Protocol):
    def export(self, cp: Checkpoint) -> None: ...
    def latest(self) -> Checkpoint | None: ...


class FileCheckpointSink:
    """Appends checkpoints to a file the writer's database cannot rewrite (mount it elsewhere)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, cp: Checkpoint) -> None:
        with self.path.open("a") as f:
            f.write(cp.to_json() + "\n")

    def latest(self) -> Checkpoint | None:
        try:
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return None
        return Checkpoint.from_json(lines[-1]) if lines else None


class CloudWatchLogsCheckpointSink:
    """Exports checkpoints as log events (a log group the agent may write but not delete from)."""

    def __init__(self, client: Any, group: str, stream: str) -> None:
        self.client, self.group, self.stream = client, group, stream
        for call, kw in ((client.create_log_group, {"logGroupName": group}),
                         (client.create_log_stream, {"logGroupName": group, "logStreamName": stream})):
            with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
                call(**kw)

    def export(self, cp: Checkpoint) -> None:
        self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream,
                                   logEvents=[{"timestamp": int(time.time() * 1000), "message": cp.to_json()}])

    def latest(self) -> Checkpoint | None:
        events = self.client.get_log_events(logGroupName=self.group, logStreamName=self.stream,
                                            startFromHead=False, limit=1)["events"]
        return Checkpoint.from_json(events[-1]["message"]) if events else None


class S3CheckpointSink:
    """Exports each checkpoint as its own object, keyed by sequence number, to a bucket outside the host.

    With `retain_days` the objects are written under S3 Object Lock (compliance mode by default): not
    even the bucket's owner can overwrite or delete them before then, so an attacker holding the
    database and the host's files still cannot hide a truncation. Governance mode lets principals with
    s3:BypassGovernanceRetention lift it. The bucket must have Object Lock enabled.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "opsagent/audit-checkpoints/",
                 retain_days: int | None = None, *, lock_mode: str = "COMPLIANCE") -> None:
        self.client, self.bucket, self.prefix, self.retain_days = client, bucket, prefix, retain_days
        self.lock_mode = lock_mode

    def key(self, cp: Checkpoint) -> str:
        return f"{self.prefix}{cp.seq:020d}-{cp.hash[:16]}.json"

    def export(self, cp: Checkpoint) -> None:
        kw: dict[str, Any] = {}
        if self.retain_days:
            kw = {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate":
                  dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retain_days)}
        self.client.put_object(Bucket=self.bucket, Key=self.key(cp), Body=cp.to_json().encode(),
                               ContentType="application/json", **kw)

    def latest(self) -> Checkpoint | None:
        last: str | None = None
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                if last is None or obj["Key"] > last:
                    last = obj["Key"]
        if last is None:
            return None
        body = self.client.get_object(Bucket=self.bucket, Key=last)["Body"].read()
        return Checkpoint.from_json(body.decode())


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # edited | deleted | reordered | truncated | bad-checkpoint
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    records: int
    last_seq: int
    checkpoint_seq: int | None
    problems: list[Problem]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog(Db):
    """The audit store on SQLite (a path) or Postgres (a URL, shared by replicas).

    Appends are serialized across processes (the SQLite write lock; a Postgres advisory lock) and
    read the chain head inside their transaction, so two replicas extend one chain.
    """

    def __init__(self, path: Path | str, key: bytes, sinks: Sequence[CheckpointSink] = (),
                 checkpoint_every: int = 1000) -> None:
        if len(key) < 16:
            raise ValueError("the audit signing key must be at least 16 bytes")
        super().__init__(path, SCHEMA, PG_SCHEMA)
        self.key = key
        self.sinks = list(sinks)
        self.checkpoint_every = checkpoint_every

    def _head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def append(self, event: AuditEvent) -> int:
        return self.append_many([event])

    def append_many(self, events: Sequence[AuditEvent]) -> int:
        """Append events in one transaction; returns the last sequence number."""
        with self._tx() as c:
            self._serialize(c, "audit:chain")
            row = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            first, head = (int(row[0]), str(row[1])) if row else (0, GENESIS)
            rows, seq = [], first
            for e in events:
                seq += 1
                at = e.at.astimezone(dt.UTC).isoformat()
                result = json.dumps(e.result, sort_keys=True, default=str)
                h = record_hash(head, seq, at, e.kind.value, e.actor, e.action, e.incident_id, e.inputs_hash,
                                e.decision, e.reason, result, e.duration_ms)
                rows.append((seq, at, e.kind.value, e.actor, e.action, e.incident_id, e.inputs_hash, e.decision,
                             e.reason, result, float(e.duration_ms), head, h))
                head = h
            c.executemany(_INSERT, rows)
        if first // self.checkpoint_every != seq // self.checkpoint_every:
            self.checkpoint()
        return seq

    def checkpoint(self) -> Checkpoint:
        seq, head = self._head()
        at = dt.datetime.now(dt.UTC).isoformat()
        cp = Checkpoint(seq=seq, hash=head, at=at, signature=sign(self.key, seq, head, at))
        for s in self.sinks:
            s.export(cp)
        return cp

    def events(self, incident_id: str | None = None) -> Iterator[dict[str, Any]]:
        q = _SELECT
        args: tuple[Any, ...] = ()
        if incident_id:
            q += " WHERE incident_id = ?"
            args = (incident_id,)
        for row in self._conn.execute(q + " ORDER BY seq", args):
            d = dict(zip(_COLUMNS, row, strict=True))
            d["result"] = json.loads(d["result"])
            yield d

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyReport:
        """Recompute the chain; compare its end with the newest signed checkpoint."""
        t0 = time.monotonic()
        if checkpoint is None:
            for s in self.sinks:
                if (cp := s.latest()) is not None and (checkpoint is None or cp.seq > checkpoint.seq):
                    checkpoint = cp
        problems: list[Problem] = []
        prev, expected_seq, n, cp_hash_at_seq = GENESIS, 1, 0, None
        for batch in _batched(self._stream(_SELECT + " ORDER BY seq"), 20000):
            for (seq, at, kind, actor, action, incident_id, inputs_hash, decision, reason, result, duration_ms,
                 prev_hash, h) in batch:
                n += 1
                if seq != expected_seq:
                    kind_ = "deleted" if seq > expected_seq else "reordered"
                    problems.append(Problem(seq, kind_, f"expected record {expected_seq}, found {seq}"))
                elif prev_hash != prev:
                    problems.append(Problem(seq, "reordered", "previous-hash link does not match the record before"))
                if record_hash(prev_hash, seq, at, kind, actor, action, incident_id, inputs_hash, decision, reason,
                               result, duration_ms) != h:
                    problems.append(Problem(seq, "edited", "contents do not match the record's hash"))
                if checkpoint is not None and seq == checkpoint.seq:
                    cp_hash_at_seq = h
                prev, expected_seq = h, seq + 1
                if len(problems) > 100:
                    break
        last = expected_seq - 1
        if checkpoint is not None:
            if not hmac.compare_digest(sign(self.key, checkpoint.seq, checkpoint.hash, checkpoint.at),
                                       checkpoint.signature):
                problems.append(Problem(checkpoint.seq, "bad-checkpoint", "checkpoint signature does not verify"))
            elif last < checkpoint.seq:
                problems.append(Problem(last + 1, "truncated",
                                        f"log ends at record {last} but a signed checkpoint covers {checkpoint.seq}"))
            elif cp_hash_at_seq != checkpoint.hash:
                problems.append(Problem(checkpoint.seq, "edited",
                                        "the chain at the checkpoint differs from the signed hash"))
        return VerifyReport(records=n, last_seq=last, checkpoint_seq=checkpoint.seq if checkpoint else None,
                            problems=problems, seconds=time.monotonic() - t0)


def _batched(rows: Iterator[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for r in rows:
        batch.append(r)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def kind_of(value: str) -> AuditKind:
    return AuditKind(value)
