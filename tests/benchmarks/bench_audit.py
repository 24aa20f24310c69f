"""Benchmark the audit log: append throughput and the time to verify N records.

Run: uv run python tests/benchmarks/bench_audit.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import AuditLog, FileCheckpointSink


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog(Path(d) / "audit.db", b"benchmark-key-0123456789",
                       [FileCheckpointSink(Path(d) / "cp.jsonl")], checkpoint_every=10_000)
        t0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
        events = [AuditEvent(at=t0, kind=AuditKind.TOOL_CALL, actor="agent:rules", action="prometheus_query_range",
                             incident_id=f"inc-{i % 97}", inputs_hash=f"{i:064x}", decision="allowed",
                             result={"ok": True}, duration_ms=12.5) for i in range(args.batch)]
        start = time.perf_counter()
        for _ in range(args.records // args.batch):
            log.append_many(events)
        append_s = time.perf_counter() - start
        single = 2000
        start = time.perf_counter()
        for e in events[:single]:
            log.append(e)
        single_s = time.perf_counter() - start
        log.checkpoint()
        report = log.verify()
        assert report.ok, report.problems[:3]
        print(f"records: {report.records:,}")
        print(f"append (batches of {args.batch}): {args.records / append_s:,.0f} records/s")
        print(f"append (one per transaction): {single / single_s:,.0f} records/s")
        print(f"verify: {report.seconds:.2f} s ({report.records / report.seconds:,.0f} records/s)")


if __name__ == "__main__":
    main()
