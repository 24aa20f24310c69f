"""The executor, seen from a process without write credentials: every request goes over its Unix socket.

`ExecutorClient` is what `ChangeFlow` is given in `opsagent serve` when `executor.socket` is set. It
proposes, decides, executes, rolls back and records verification by asking the executor process
(`service.py`), and reads the ledger itself (reading needs no write credentials). It must not import
`core` or `tools.k8s_write`: that is the point of it (tests/unit/test_executor_socket.py checks).
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from pydantic import BaseModel

from agent.change.executor.outcome import ExecutionRefused, ExecutionResult
from agent.change.executor.protocol import (
    DecideReq,
    ErrorCode,
    ExecuteReq,
    ProposeReq,
    Response,
    RollbackReq,
    VerifiedReq,
)
from agent.change.ledger import Ledger
from agent.change.models import ChangeRequest, ChangeSpec, ChangeStatus

CHANGE_ID = re.compile(r"chg-[0-9a-f]{12}")  # protocol.ChangeId
DONE = (ChangeStatus.APPLIED, ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK)


class ExecutorUnavailable(RuntimeError):
    """The executor process did not answer, or failed before deciding; nothing was decided. Retry later."""


class ExecutorClient:
    def __init__(self, path: Path, ledger: Ledger, *, timeout_s: float = 120.0) -> None:
        self.path = path
        self.ledger = ledger  # reads only: the executor process is the one that decides and writes
        self.timeout_s = timeout_s

    # ---- the flow's doors -----------------------------------------------------------------------
    async def propose(self, spec: ChangeSpec, *, reason: str, requester: str, incident_id: str | None = None,
                      evidence: list[str] | None = None) -> ChangeRequest:
        r = await self._call(ProposeReq(op="propose", spec=spec, reason=reason, requester=requester,
                                        incident_id=incident_id, evidence=evidence or []))
        return _change(r)

    def approve(self, change_id_: str, approver: str, *, decision: str = "approve", via: str = "cli") -> ChangeRequest:
        _known_shape(change_id_)
        return _change(self._call_sync(DecideReq(op="approve", change_id=change_id_, approver=approver,
                                                 decision=decision, via=via)))

    # ---- what the nodes use ---------------------------------------------------------------------
    async def execute(self, change_id_: str, actor: str = "executor") -> ExecutionResult:
        _known_shape(change_id_)
        try:
            r = await self._call(ExecuteReq(op="execute", change_id=change_id_, actor=actor))
        except ExecutionRefused:
            ch = self.ledger.get(change_id_)
            if ch is not None and ch.status in DONE:
                # Refused because it already ran (a flow resumed after a crash): that is its result.
                return ExecutionResult(ch.id, ch.status, False, ch.result)
            raise
        assert r.result is not None
        return ExecutionResult(r.result.change_id, r.result.status, r.result.applied_now, r.result.detail)

    async def auto_rollback(self, original: ChangeRequest, why: str) -> ExecutionResult | None:
        r = await self._call(RollbackReq(op="rollback", change_id=original.id, why=why[:4000]))
        if r.result is None:
            return None
        return ExecutionResult(r.result.change_id, r.result.status, r.result.applied_now, r.result.detail)

    def record_verification(self, ch: ChangeRequest, outcome: str, summary: str) -> ChangeRequest:
        return _change(self._call_sync(VerifiedReq(op="verify", change_id=ch.id, outcome=outcome,
                                                   summary=summary[:4000])))

    # ---- transport ------------------------------------------------------------------------------
    async def _call(self, req: BaseModel) -> Response:
        line = req.model_dump_json().encode() + b"\n"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path), limit=1 << 24),
                                                    self.timeout_s)
        except (OSError, TimeoutError) as e:
            raise self._unreachable(e) from e
        try:
            writer.write(line)
            await writer.drain()
            raw = await asyncio.wait_for(reader.readline(), self.timeout_s)
        except (OSError, TimeoutError) as e:
            raise self._unreachable(e) from e
        finally:
            writer.close()
        return _checked(raw, self.path)

    def _call_sync(self, req: BaseModel) -> Response:
        line = req.model_dump_json().encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout_s)
                s.connect(str(self.path))
                s.sendall(line)
                chunks: list[bytes] = []
                while not (chunks and chunks[-1].endswith(b"\n")):
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as e:
            raise self._unreachable(e) from e
        return _checked(b"".join(chunks), self.path)

    def _unreachable(self, e: BaseException) -> ExecutorUnavailable:
        what = f"{type(e).__name__}: {e}" if str(e) else f"no answer in {self.timeout_s:.0f} s"
        return ExecutorUnavailable(f"the executor process is not answering on {self.path} ({what}); is "
                                   "`opsagent executor serve` running beside this process?")


def _known_shape(change_id_: str) -> None:
    """An id no change can have is answered as the in-process executor answers an unknown one."""
    if not CHANGE_ID.fullmatch(change_id_):
        raise ExecutionRefused(f"no change {change_id_[:80]!r}")


def _checked(raw: bytes, path: Path) -> Response:
    if not raw.strip():
        raise ExecutorUnavailable(f"the executor process on {path} closed the connection without an answer")
    r = Response.model_validate_json(raw)
    if r.ok:
        return r
    if r.error == ErrorCode.REFUSED:
        raise ExecutionRefused(r.message)
    if r.error in (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE):
        raise ValueError(f"the executor refused the request: {r.message}")
    raise ExecutorUnavailable(r.message)


def _change(r: Response) -> ChangeRequest:
    if r.change is None:
        raise ExecutorUnavailable("the executor answered without the change")
    return r.change
