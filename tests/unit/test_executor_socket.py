"""The executor socket as a compromised parser would use it, and `opsagent serve` without write credentials.

A real `ExecutorService` listens on a real Unix socket in a thread of its own; requests are written to the
socket as raw bytes, the way code running inside a compromised `opsagent serve` could. The executor here has
no write client at all (None): a request that got as far as reading or writing the cluster would fail with
`unavailable`, so each `refused` below was decided before anything could touch the API. The cluster side
(not approved, another fingerprint, expired, a crash mid-change) is in tests/integration/test_executor_socket.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.audit.log import AuditLog
from agent.change.executor.client import ExecutorClient, ExecutorUnavailable
from agent.change.executor.core import ExecutionRefused, Executor
from agent.change.executor.service import ExecutorService, prepare_socket_path
from agent.change.ledger import Ledger
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, ObjectRef
from agent.policy.evaluate import load_policy

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
MAX = 4096


class Running:
    """An ExecutorService on a socket, served by its own event loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "run" / "executor" / "executor.sock"
        self.ledger = Ledger(tmp / "ledger.db")
        self.audit = AuditLog(tmp / "audit.db", b"k" * 32)
        self.executor = Executor(self.ledger, load_policy(ROOT / "policies" / "default.yaml"),
                                 write=None, audit=self.audit)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.ready = threading.Event()

        async def ready() -> None:
            self.ready.set()

        self.service = ExecutorService(self.executor, max_request_bytes=MAX)

        async def main() -> None:
            await self.service.serve(self.path, ready=ready, stop=self.stop)

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the executor socket did not come up"

    def raw(self, data: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.path))
            # the server may answer and close before reading everything (too large): that is fine
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return dict(json.loads(buf))

    def service_open(self) -> int:
        return len(self.service._open)

    def refusals(self) -> list[dict[str, Any]]:
        return [e for e in self.audit.events() if e["decision"] == "refused"]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.loop.close()
        self.ledger.close()
        self.audit.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.close()


def change(status: ChangeStatus, **kw: Any) -> ChangeRequest:
    s = ChangeSpec(action=ActionKind.SCALE, cluster="sandbox",
                   target=ObjectRef(kind="Deployment", name="chat", namespace="llm-prod"), params={"replicas": 3})
    fields: dict[str, Any] = {
        "id": "chg-0123456789ab", "spec": s, "spec_digest": s.digest(),
        "fingerprint": TargetFingerprint(kind="Deployment", name="chat", namespace="llm-prod", uid="u1",
                                         spec_hash="h"),
        "risk": "mutate", "blast_radius": BlastRadius(gpus=0, replicas=1, capacity_drop=0), "reason": "t",
        "requester": "agent:rules", "created_at": NOW, "status": status, "approvals_required": 1,
        "approver_roles": ["oncall"]}
    return ChangeRequest(**{**fields, **kw})


@pytest.mark.parametrize(("payload", "says"), [
    (b"this is not json\n", "invalid json"),
    (b'{"op": "execute"}\n', "change_id: field required"),
    # the caller claims the change is approved: there is no such field, and the claim is refused
    (b'{"op": "execute", "change_id": "chg-0123456789ab", "approved": true}\n', "approved: extra inputs"),
    (b'{"op": "execute", "change_id": "chg-0123456789ab", "approvals": [{"approver": "bob"}]}\n',
     "approvals: extra inputs"),
    (b'{"op": "patch", "target": "deployment/chat", "body": {"spec": {"replicas": 0}}}\n', "does not match any"),
    (b'{"op": "execute", "change_id": "../../ledger.db"}\n', "change_id: string should match pattern"),
    (b'{"v": 2, "op": "execute", "change_id": "chg-0123456789ab"}\n', "v: input should be 1"),
    (b'{"op": "approve", "change_id": "chg-0123456789ab", "approver": "bob\\nroot", "decision": "approve"}\n',
     "approver: string should match pattern"),
    (b"[" * 1500 + b"]" * 1500 + b"\n", "recursion limit"),
], ids=["not-json", "no-id", "claims-approved", "carries-approvals", "raw-patch", "path-id", "version",
        "newline-name", "deep-nesting"])
def test_a_forged_request_gets_a_clear_error_and_is_audited(running: Running, payload: bytes, says: str) -> None:
    running.ledger.save(change(ChangeStatus.PENDING_APPROVAL))
    r = running.raw(payload)
    assert (r["ok"], r["error"]) == (False, "malformed"), r
    assert says in r["message"].lower(), r["message"]
    [audited] = running.refusals()
    assert audited["kind"] == "execution" and audited["result"] == {"error": "malformed"}
    assert audited["actor"].startswith("socket:pid=") and "uid=" in audited["actor"]
    assert running.ledger.get("chg-0123456789ab").status == ChangeStatus.PENDING_APPROVAL  # type: ignore[union-attr]
    assert running.ledger.execution("chg-0123456789ab") is None


def test_an_oversized_request_is_refused_unread_and_the_socket_keeps_answering(running: Running) -> None:
    big = b'{"op": "propose", "reason": "' + b"x" * (1 << 20) + b'"}\n'
    r = running.raw(big)
    assert (r["ok"], r["error"]) == (False, "too_large") and str(MAX) in r["message"], r
    assert [e["result"] for e in running.refusals()] == [{"error": "too_large"}]
    # one line just under the limit is read whole (and refused for what it says, not for its size)
    r = running.raw(b'{"op": "execute", "change_id": "chg-ffffffffffff", "actor": "' + b"a" * 150 + b'"}\n')
    assert r["error"] == "refused" and "no change chg-ffffffffffff" in r["message"]


def test_an_unknown_change_is_refused_and_audited(running: Running) -> None:
    r = running.raw(b'{"op": "execute", "change_id": "chg-ffffffffffff"}\n')
    assert (r["ok"], r["error"]) == (False, "refused") and "no change chg-ffffffffffff" in r["message"]
    assert [e["action"] for e in running.refusals()] == ["execute chg-ffffffffffff"]


def test_a_change_that_already_ran_is_refused_not_rerun(running: Running) -> None:
    running.ledger.save(change(ChangeStatus.APPLIED, result={"replicas": 3}))
    r = running.raw(b'{"op": "execute", "change_id": "chg-0123456789ab"}\n')
    assert (r["ok"], r["error"]) == (False, "refused") and "already executed" in r["message"], r
    [audited] = running.refusals()
    assert audited["action"] == "execute chg-0123456789ab" and "already executed" in audited["reason"]
    assert running.ledger.execution("chg-0123456789ab") is None  # never claimed: nothing was written
    # A flow resumed after a crash asks again through the client: it learns the change is applied.
    client = ExecutorClient(running.path, running.ledger, timeout_s=10)
    got = asyncio.run(client.execute("chg-0123456789ab"))
    assert (got.status, got.applied_now) == (ChangeStatus.APPLIED, False)


def test_a_ledger_row_whose_spec_was_edited_after_approval_is_refused(running: Running) -> None:
    """A parser with store access rewrites an approved change's spec (replicas 3 → 0) and keeps its digest,
    to which the approvals are bound: the executor refuses before reading the target."""
    approved = change(ChangeStatus.APPROVED)
    running.ledger.save(approved)
    edited = approved.spec.model_copy(update={"params": {"replicas": 0}})
    running.ledger.update(approved.model_copy(update={"spec": edited}))
    r = running.raw(b'{"op": "execute", "change_id": "chg-0123456789ab"}\n')
    assert (r["ok"], r["error"]) == (False, "refused"), r
    assert "does not match the digest" in r["message"]
    assert any("does not match the digest" in e["reason"] for e in running.refusals())


def test_only_an_applied_change_is_verified_or_rolled_back(running: Running) -> None:
    running.ledger.save(change(ChangeStatus.PENDING_APPROVAL))
    for line in (b'{"op": "rollback", "change_id": "chg-0123456789ab", "why": "x"}\n',
                 b'{"op": "verify", "change_id": "chg-0123456789ab", "outcome": "pass", "summary": "ok"}\n'):
        r = running.raw(line)
        assert (r["ok"], r["error"]) == (False, "refused") and "pending_approval" in r["message"], r
    assert running.ledger.get("chg-0123456789ab").status == ChangeStatus.PENDING_APPROVAL  # type: ignore[union-attr]
    assert len(running.refusals()) == 2


def test_the_client_raises_the_refusal_and_names_a_missing_executor(running: Running, tmp_path: Path) -> None:
    client = ExecutorClient(running.path, running.ledger, timeout_s=10)
    with pytest.raises(ExecutionRefused, match="no change chg-ffffffffffff"):
        asyncio.run(client.execute("chg-ffffffffffff"))
    with pytest.raises(ExecutionRefused, match="no change 'not-an-id'"):
        client.approve("not-an-id", "bob")
    with pytest.raises(ValueError, match="String should match pattern"):  # checked before it leaves
        client.approve("chg-0123456789ab", "bob\nroot")
    gone = ExecutorClient(tmp_path / "nobody.sock", running.ledger, timeout_s=2)
    with pytest.raises(ExecutorUnavailable, match="is `opsagent executor serve` running"):
        asyncio.run(gone.execute("chg-0123456789ab"))


def test_the_socket_is_private_to_its_owner(running: Running, tmp_path: Path) -> None:
    assert stat.S_IMODE(running.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(running.path.parent.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    prepare_socket_path(loose / "x.sock", group=False)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700, "a directory others could write into is tightened"
    (loose / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="not a socket"):
        prepare_socket_path(loose / "file", group=False)


# ---- opsagent serve without write credentials ---------------------------------------------------------
SERVE = """
import json, sys
import uvicorn
import agent.entry.commands.common as common
import agent.entry.commands.serve as serve_mod
from agent.entry.cli import app
from typer.testing import CliRunner

built = {}
real_open = common.open_app
def spy(*a, **kw):
    built["app"] = real_open(*a, **kw)
    return built["app"]
serve_mod.open_app = spy
def run(asgi, **kw):  # instead of listening: report what the serve process holds
    app = built["app"]
    flow = app.flow()
    print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("tools.k8s_write")
                                        or m == "agent.change.executor.core"),
                      "writer_kubeconfig": str(app.settings.kubernetes.executor_kubeconfig),
                      "flow_executor": type(flow.executor).__name__}), file=sys.__stdout__, flush=True)
uvicorn.run = run
r = CliRunner().invoke(app, ["serve", "--config", sys.argv[1], "--state-dir", sys.argv[2]])
print(r.output, file=sys.stderr)
sys.exit(r.exit_code)
"""


def _serve(tmp_path: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    return subprocess.run([sys.executable, "-c", SERVE, str(cfg), str(tmp_path / "state")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _kubeconfig(tmp_path: Path) -> str:
    kc = tmp_path / "writer.kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "w",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "writer-token-that-serve-must-not-hold"}}],
        "contexts": [{"name": "w", "context": {"cluster": "c", "user": "u"}}]}))
    return str(kc)


def test_serve_with_an_executor_socket_holds_no_write_credentials(tmp_path: Path) -> None:
    """Even with the writer's kubeconfig in its settings file, serve drops it and never loads the write client."""
    run = _serve(tmp_path, {"executor": {"socket": str(tmp_path / "x" / "executor.sock")},
                            "kubernetes": {"executor_kubeconfig": _kubeconfig(tmp_path)}})
    assert run.returncode == 0, run.stderr
    held = json.loads(run.stdout.strip().splitlines()[-1])
    assert held == {"modules": [], "writer_kubeconfig": "None", "flow_executor": "ExecutorClient"}


def test_control_serve_in_process_loads_the_write_client(tmp_path: Path) -> None:
    """Control for the check above: in dev without a socket, the same probe sees the write client loaded."""
    run = _serve(tmp_path, {"kubernetes": {"executor_kubeconfig": _kubeconfig(tmp_path)}})
    assert run.returncode == 0, run.stderr
    held = json.loads(run.stdout.strip().splitlines()[-1])
    assert "tools.k8s_write.client" in held["modules"] and held["flow_executor"] == "Executor"
    assert held["writer_kubeconfig"].endswith("writer.kubeconfig")


def test_a_prod_serve_without_an_executor_socket_refuses_to_start(tmp_path: Path) -> None:
    run = _serve(tmp_path, {"env": "prod", "audit": {"key": "3f9a1c7e5b2d8f4a6c0e9b1d7f3a5c8e",
                                                      "allow_rewritable_checkpoints": True},
                            "server": {"auth_tokens": "a-bearer-token-of-enough-length-1"}})
    assert run.returncode == 2
    assert "executor.socket is not set" in run.stderr and "opsagent executor serve" in run.stderr


def test_a_connection_that_sends_nothing_is_a_probe_and_an_unfinished_line_is_refused(running: Running) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(running.path))
    r = running.raw(b'{"op": "execute", "change_id": "chg-ffff')  # EOF before the newline: what came is judged
    assert r["error"] == "malformed"
    assert [e["result"] for e in running.refusals()] == [{"error": "malformed"}], "the probe left no record"


def test_doctor_checks_the_executor_process_not_a_write_identity_it_does_not_hold(running: Running,
                                                                                  tmp_path: Path) -> None:
    from agent.config import Settings
    from agent.health import Status, _k8s_executor

    up = asyncio.run(_k8s_executor(Settings(executor={"socket": running.path}, state_dir=tmp_path)))
    assert up.status == Status.OK and str(running.path) in up.detail
    assert running.refusals() == [], "the probe is not a request"
    down = asyncio.run(_k8s_executor(Settings(executor={"socket": tmp_path / "none.sock"}, state_dir=tmp_path)))
    assert down.status == Status.FAIL and "not answering" in down.detail


def test_stopping_the_executor_closes_a_connection_still_sending_its_request(tmp_path: Path) -> None:
    r = Running(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(r.path))
        s.sendall(b'{"op": "execute", "change_id": "chg-')  # no newline: the server is still reading
        deadline = time.monotonic() + 5
        while r.service_open() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.service_open() == 1, "the server never took the connection"
        t0 = time.monotonic()
        r.close()
        assert s.recv(100) == b"", "the executor stopped with the connection still open"
        assert time.monotonic() - t0 < 5, "stopping waited for the read timeout instead of closing the connection"
    with contextlib.closing(AuditLog(tmp_path / "audit.db", b"k" * 32)) as audit:
        assert [e for e in audit.events() if e["decision"] == "refused"] == [], "a request cut by the stop is judged"
