"""The tamper-evident audit log: append-only, hash-chained, with signed checkpoints exported elsewhere.

Each record's hash covers its fields and the previous record's hash, so editing, deleting or
reordering a record breaks the chain from that point. Truncating the tail cannot be seen from the
chain alone, so every `checkpoint_every` records (and on demand) the writer signs (sequence number,
hash, the sequence of the checkpoint before) with an HMAC key and exports the checkpoint to sinks
outside the database (a file, S3 or CloudWatch Logs). The writer checks the records since the last
checkpoint before it signs, so it never vouches for a chain someone rewrote; `verify` checks the chain
against every checkpoint it can read, so a rewrite of the whole chain shows as long as one earlier
checkpoint survives in a sink the host cannot rewrite (S3 under Object Lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.audit.events import AuditEvent, AuditKind
from agent.storage.db import Db

log = logging.getLogger(__name__)

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
    """A signed (sequence, head hash). `prev_seq` names the checkpoint before it (None for the first, and
    for checkpoints written before it existed), so a checkpoint removed from a sink leaves a visible gap."""

    seq: int
    hash: str
    at: str
    signature: str
    prev_seq: int | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "at": self.at, "signature": self.signature}
        if self.prev_seq is not None:
            d["prev_seq"] = self.prev_seq
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        prev = d.get("prev_seq")
        return cls(seq=int(d["seq"]), hash=str(d["hash"]), at=str(d["at"]), signature=str(d["signature"]),
                   prev_seq=None if prev is None else int(prev))

    def signed_by(self, key: bytes) -> bool:
        return hmac.compare_digest(sign(key, self.seq, self.hash, self.at, self.prev_seq), self.signature)


def sign(key: bytes, seq: int, digest: str, at: str, prev_seq: int | None = None) -> str:
    msg = f"{seq}{SEP}{digest}{SEP}{at}" + ("" if prev_seq is None else f"{SEP}{prev_seq}")
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


class CheckpointSink(Protocol):
    def export(self, cp: Checkpoint) -> None: ...
    def latest(self) -> Checkpoint | None: ...
    def all(self) -> list[Checkpoint]:
        """Every checkpoint in the order the sink keeps them (export order, or sequence order for S3)."""
        ...


def _parse(texts: Iterator[str] | list[str], where: str) -> list[Checkpoint]:
    out = []
    for t in texts:
        if t.strip():
            try:
                out.append(Checkpoint.from_json(t))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"unreadable checkpoint in {where}: {t[:120]!r}") from e
    return out


class FileCheckpointSink:
    """Appends checkpoints to a file the writer's database cannot rewrite (mount it elsewhere)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, cp: Checkpoint) -> None:
        with self.path.open("a") as f:
            f.write(cp.to_json() + "\n")

    def all(self) -> list[Checkpoint]:
        try:
            return _parse(self.path.read_text().splitlines(), str(self.path))
        except FileNotFoundError:
            return []

    def latest(self) -> Checkpoint | None:
        """The highest sequence in the file (not the last line: a line appended later may be older)."""
        return max(self.all(), key=lambda c: c.seq, default=None)


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

    def all(self) -> list[Checkpoint]:
        messages: list[str] = []
        kw: dict[str, Any] = {"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": True}
        while True:
            page = self.client.get_log_events(**kw)
            messages += [e["message"] for e in page["events"]]
            if not page["events"] or page.get("nextForwardToken") in (None, kw.get("nextToken")):
                break
            kw["nextToken"] = page["nextForwardToken"]
        return _parse(messages, f"log group {self.group}")

    def latest(self) -> Checkpoint | None:
        return max(self.all(), key=lambda c: c.seq, default=None)


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

    def _keys(self) -> list[str]:
        keys = [obj["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix) for obj in page.get("Contents", [])]
        return sorted(keys)

    def _get(self, key: str) -> str:
        return str(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode())

    def all(self) -> list[Checkpoint]:
        return _parse([self._get(k) for k in self._keys()], f"s3://{self.bucket}/{self.prefix}")

    def latest(self) -> Checkpoint | None:
        keys = self._keys()
        return _parse([self._get(keys[-1])], f"s3://{self.bucket}")[0] if keys else None


@dataclass(frozen=True)
class Problem:
    seq: int
    # edited | deleted | reordered | truncated | rewritten | bad-checkpoint | checkpoint-gap | checkpoint-order
    kind: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    records: int
    last_seq: int
    checkpoint_seq: int | None
    problems: list[Problem]
    seconds: float
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditTampered(RuntimeError):
    """The chain since the last signed checkpoint does not verify; nothing was signed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(f"refusing to sign an audit checkpoint: record {first.seq}: {first.kind}: {first.detail}")


_MAX_PROBLEMS = 100


def _walk(rows: Iterator[Any], prev: str, expected_seq: int,
          problems: list[Problem]) -> Iterator[tuple[int, str]]:
    """Check each record's link and hash; yield (seq, stored hash) and append what is wrong to `problems`."""
    for (seq, at, kind, actor, action, incident_id, inputs_hash, decision, reason, result, duration_ms,
         prev_hash, h) in rows:
        if seq != expected_seq:
            kind_ = "deleted" if seq > expected_seq else "reordered"
            problems.append(Problem(seq, kind_, f"expected record {expected_seq}, found {seq}"))
        elif prev_hash != prev:
            problems.append(Problem(seq, "reordered", "previous-hash link does not match the record before"))
        if record_hash(prev_hash, seq, at, kind, actor, action, incident_id, inputs_hash, decision, reason,
                       result, duration_ms) != h:
            problems.append(Problem(seq, "edited", "contents do not match the record's hash"))
        yield seq, h
        prev, expected_seq = h, seq + 1
        if len(problems) > _MAX_PROBLEMS:
            return


class AuditLog(Db):
    """The audit store on SQLite (a path) or Postgres (a URL, shared by replicas).

    Appends are serialized across processes (the SQLite write lock; a Postgres advisory lock) and
    read the chain head inside their transaction, so two replicas extend one chain. Checkpoints are
    serialized the same way, so each sink receives them in sequence order.
    """

    def __init__(self, path: Path | str, key: bytes, sinks: Sequence[CheckpointSink] = (),
                 checkpoint_every: int = 1000) -> None:
        if len(key) < 16:
            raise ValueError("the audit signing key must be at least 16 bytes")
        super().__init__(path, SCHEMA, PG_SCHEMA)
        self.key = key
        self.sinks = list(sinks)
        self.checkpoint_every = checkpoint_every
        self._last_signed: Checkpoint | None = None
        self._cp_lock = threading.Lock()

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
            try:
                self.checkpoint()
            except AuditTampered as e:
                # The records are stored; what must not happen is a signature over a rewritten chain.
                log.error("%s", e)
        return seq

    def _anchor(self) -> Checkpoint | None:
        """The newest checkpoint whose signature verifies, from the sinks or this process's last one."""
        best = self._last_signed
        for s in self.sinks:
            cp = s.latest()
            if cp is not None and cp.signed_by(self.key) and (best is None or cp.seq > best.seq):
                best = cp
        return best

    def checkpoint(self) -> Checkpoint:
        """Verify the records since the last signed checkpoint, then sign the head and export it.

        Raises:
            AuditTampered: the records since the last checkpoint do not verify (nothing is signed).
        """
        with self._cp_lock, self._tx() as c:
            self._serialize(c, "audit:checkpoint")
            anchor = self._anchor()
            start = anchor.seq if anchor is not None and anchor.seq > 0 else 1
            rows = c.execute(_SELECT + " WHERE seq >= ? ORDER BY seq", (start,)).fetchall()
            problems: list[Problem] = []
            prev, seq, head = GENESIS, 0, GENESIS
            if anchor is not None and anchor.seq > 0:
                if not rows or rows[0][0] != anchor.seq or rows[0][12] != anchor.hash:
                    problems.append(Problem(anchor.seq, "rewritten" if rows and rows[0][0] == anchor.seq
                                            else "truncated", f"record {anchor.seq} no longer matches the "
                                            "last signed checkpoint"))
                prev, seq, head = anchor.hash, anchor.seq, anchor.hash
                rows = rows[1:]
            for walked in _walk(iter(rows), prev, seq + 1, problems):
                seq, head = walked
            if problems:
                raise AuditTampered(problems)
            at = dt.datetime.now(dt.UTC).isoformat()
            prev_seq = anchor.seq if anchor is not None else None
            cp = Checkpoint(seq=seq, hash=head, at=at, signature=sign(self.key, seq, head, at, prev_seq),
                            prev_seq=prev_seq)
            for s in self.sinks:
                s.export(cp)
            self._last_signed = cp
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

    def _read_checkpoints(self, problems: list[Problem]) -> dict[int, set[str]]:
        """Every checkpoint in every sink, checked for signature, order and gaps; {seq: {signed hashes}}."""
        signed: dict[int, set[str]] = {}
        for sink in self.sinks:
            cps = sink.all()
            seen: set[int] = set()
            high = 0
            for cp in cps:
                if not cp.signed_by(self.key):
                    problems.append(Problem(cp.seq, "bad-checkpoint", "checkpoint signature does not verify"))
                    continue
                if cp.seq < high:
                    problems.append(Problem(cp.seq, "checkpoint-order", f"checkpoint {cp.seq} comes after "
                                            f"checkpoint {high} in {type(sink).__name__}"))
                high = max(high, cp.seq)
                seen.add(cp.seq)
                signed.setdefault(cp.seq, set()).add(cp.hash)
            for cp in cps:
                if cp.seq in seen and cp.prev_seq is not None and cp.prev_seq > 0 and cp.prev_seq not in seen:
                    problems.append(Problem(cp.prev_seq, "checkpoint-gap", f"checkpoint {cp.seq} follows "
                                            f"checkpoint {cp.prev_seq}, which is missing from "
                                            f"{type(sink).__name__}"))
        return signed

    def verify(self) -> VerifyReport:
        """Recompute the chain; compare it with every signed checkpoint in every sink."""
        t0 = time.monotonic()
        problems: list[Problem] = []
        signed = self._read_checkpoints(problems)
        n, last, last_good_cp, rewritten = 0, 0, 0, False
        for seq, h in _walk(self._stream(_SELECT + " ORDER BY seq"), GENESIS, 1, problems):
            n, last = n + 1, seq
            hashes = signed.get(seq)
            if hashes is None:
                continue
            if hashes == {h}:
                last_good_cp = seq
            elif not rewritten:
                rewritten = True
                problems.append(Problem(last_good_cp + 1, "rewritten", f"the chain at record {seq} differs from "
                                        f"its signed checkpoint: records {last_good_cp + 1}..{seq} were changed "
                                        "and the chain recomputed"))
        high = max(signed, default=None)
        if high is not None and last < high:
            problems.append(Problem(last + 1, "truncated",
                                    f"log ends at record {last} but a signed checkpoint covers {high}"))
        return VerifyReport(records=n, last_seq=last, checkpoint_seq=high, problems=problems,
                            seconds=time.monotonic() - t0, checkpoints=sum(len(v) for v in signed.values()))


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
