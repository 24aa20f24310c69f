"""Signed audit checkpoints exported off the host — to S3 (under Object Lock) and CloudWatch Logs, both
through moto's server on loopback — reveal a truncation even when the attacker holds the database and
rewrote the host's own checkpoint file."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import yaml
from botocore.exceptions import ClientError

from agent.app import build_app
from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import AuditLog, CloudWatchLogsCheckpointSink, FileCheckpointSink, S3CheckpointSink
from agent.config import load_settings
from tests.serving import free_port, stop_process

KEY = b"test-signing-key-0123456789"
BUCKET = "audit-checkpoints"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


def _client(url: str, service: str):  # type: ignore[no-untyped-def]
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def event(i: int) -> AuditEvent:
    return AuditEvent(at=dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
                      kind=AuditKind.EXECUTION, actor="executor", action=f"execute chg-{i}", incident_id="inc-1",
                      inputs_hash=f"{i:064x}", decision="applied", result={"i": i})


def _truncate(path: str, after: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq > ?", (after,))
    conn.commit()
    conn.close()


def test_s3_checkpoints_under_object_lock_reveal_a_truncation_the_host_tried_to_hide(
        moto_url: str, tmp_path: Path) -> None:
    s3 = _client(moto_url, "s3")
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    file_sink = FileCheckpointSink(tmp_path / "checkpoints.jsonl")
    s3_sink = S3CheckpointSink(s3, BUCKET, retain_days=1)
    log = AuditLog(tmp_path / "audit.db", KEY, [file_sink, s3_sink], checkpoint_every=10)
    log.append_many([event(i) for i in range(1, 31)])
    assert log.verify().ok
    newest = s3_sink.latest()
    assert newest is not None and newest.seq == 30

    # The attacker cannot remove the locked checkpoint from the bucket...
    obj = s3.list_object_versions(Bucket=BUCKET)["Versions"][-1]
    with pytest.raises(ClientError, match=r"AccessDenied|locked|retention|Forbidden"):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"], VersionId=obj["VersionId"])
    # ...but does truncate the database and rewrite the host's checkpoint file to match.
    _truncate(log.path, 20)
    lines = file_sink.path.read_text().splitlines()
    file_sink.path.write_text("\n".join(x for x in lines if '"seq": 30' not in x) + "\n")
    log.close()

    reopened = AuditLog(tmp_path / "audit.db", KEY, [file_sink, S3CheckpointSink(s3, BUCKET)])
    report = reopened.verify()
    assert [p.kind for p in report.problems] == ["truncated"], report.problems
    assert report.checkpoint_seq == 30
    # The host's file alone would not have told.
    assert AuditLog(tmp_path / "audit.db", KEY, [file_sink]).verify().ok


def test_cloudwatch_logs_checkpoints_reveal_a_truncation(moto_url: str, tmp_path: Path) -> None:
    logs = _client(moto_url, "logs")
    sink = CloudWatchLogsCheckpointSink(logs, "/opsagent/audit", "checkpoints-test")
    log = AuditLog(tmp_path / "audit.db", KEY, [sink], checkpoint_every=5)
    log.append_many([event(i) for i in range(1, 13)])
    log.checkpoint()
    latest = sink.latest()
    assert latest is not None and latest.seq == 12
    assert log.verify().ok
    _truncate(log.path, 7)
    log.close()
    report = AuditLog(tmp_path / "audit.db", KEY, [sink]).verify()
    assert [p.kind for p in report.problems] == ["truncated"]


def test_settings_wire_both_sinks_and_a_missing_aws_section_is_a_clear_error(moto_url: str, tmp_path: Path) -> None:
    s3 = _client(moto_url, "s3")
    s3.create_bucket(Bucket="wired")
    cfg = {"state_dir": str(tmp_path / "state"),
           "cloudwatch": {"endpoint_url": moto_url, "region": "us-east-1", "access_key_id": "test",
                          "secret_access_key": "test"},
           "audit": {"checkpoint_s3_bucket": "wired", "checkpoint_log_group": "/opsagent/wired",
                     "checkpoint_every": 3}}
    f = tmp_path / "settings.yaml"
    f.write_text(yaml.safe_dump(cfg))
    app = build_app(load_settings(f))
    try:
        app.audit.append_many([event(i) for i in range(1, 4)])
    finally:
        app.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="wired")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("opsagent/audit-checkpoints/00000000000000000003-")
    got = _client(moto_url, "logs").get_log_events(logGroupName="/opsagent/wired",
                                                   logStreamName="checkpoints-default")["events"]
    assert len(got) == 1 and '"seq": 3' in got[0]["message"]

    del cfg["cloudwatch"]
    f.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"need an AWS region: set audit\.checkpoint_region or the `cloudwatch`"):
        build_app(load_settings(f))
