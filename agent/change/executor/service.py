"""The executor process's socket server: the only holder of the write credentials answers here.

`opsagent executor serve --socket PATH` runs this beside `opsagent serve` (a second container in the pod).
Each connection carries one request (`protocol.py`). The server never takes the caller's word for
anything: a request names a change by id, and the executor re-reads the change, its policy decision and
its approvals from the store, re-evaluates policy, re-reads the target and checks the approvals' binding
to the exact spec digest and target fingerprint itself (`Executor.execute`). A change that already ran is
refused, not re-run. Malformed, oversized or unfinished requests are refused with a reason, and every
refusal is audited with the peer's pid and uid (SO_PEERCRED).

The socket lives in a directory of its own, 0700 (0750 with `executor.socket_group`), and is 0600 (0660):
only the pod's processes under the same uid (or group) can connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.audit.events import AuditEvent, AuditKind, inputs_hash
from agent.change.executor.core import Executor
from agent.change.executor.outcome import ExecutionRefused, ExecutionResult
from agent.change.executor.protocol import (
    DecideReq,
    ErrorCode,
    ExecuteReq,
    ProposeReq,
    Request,
    Response,
    RollbackReq,
    VerifiedReq,
    WireResult,
    parse_request,
)
from agent.change.models import ChangeRequest, ChangeStatus

log = logging.getLogger(__name__)
DONE = (ChangeStatus.APPLIED, ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK)
READ_TIMEOUT_S = 10.0  # a client that connects and never finishes its line is dropped
DRAIN_S = 60.0  # on stop, a request already being answered gets this long to finish before it is cut


def wire(r: ExecutionResult) -> WireResult:
    return WireResult(change_id=r.change_id, status=r.status, applied_now=r.applied_now, detail=r.detail)


class ExecutorService:
    """Answers socket requests with the guarded executor; audits every refusal it makes itself."""

    def __init__(self, executor: Executor, *, max_request_bytes: int = 64 << 10, drain_s: float = DRAIN_S) -> None:
        self.executor = executor
        self.max_request_bytes = max_request_bytes
        self.drain_s = drain_s
        # open connections: True once the request line is read and being answered (drained on stop, not cut)
        self._open: dict[asyncio.Task[None], bool] = {}

    # ---- one request ----------------------------------------------------------------------------
    async def handle(self, raw: bytes, peer: str = "unknown") -> Response:
        """Answer one request (the bytes of its line). Never raises."""
        actor = f"socket:{peer}"
        try:
            req = parse_request(raw)
        except ValueError as e:
            return self._refuse(ErrorCode.MALFORMED, str(e), actor, inputs=raw)
        try:
            return await self._dispatch(req, actor)
        except ExecutionRefused as e:  # audited by the executor where it refused
            cid = getattr(req, "change_id", None)
            now = self.executor.ledger.get(cid) if cid else None
            return Response(ok=False, error=ErrorCode.REFUSED, message=str(e), change=now)
        except Exception as e:  # the store or the API server failed: say so, decide nothing
            log.exception("executor request %s failed", req.op)
            return Response(ok=False, error=ErrorCode.UNAVAILABLE, message=f"{req.op} failed: "
                            f"{type(e).__name__}: {str(e)[:500]}")

    async def _dispatch(self, req: Request, actor: str) -> Response:
        ex = self.executor
        if isinstance(req, ProposeReq):
            return Response(ok=True, change=await ex.propose(req.spec, reason=req.reason, requester=req.requester,
                                                             incident_id=req.incident_id,
                                                             evidence=list(req.evidence)))
        ch = ex.ledger.get(req.change_id)
        if ch is None:
            return self._refuse(ErrorCode.REFUSED, f"no change {req.change_id}", actor, action=f"{req.op} "
                                f"{req.change_id}", inputs=req.change_id.encode())
        if isinstance(req, DecideReq):
            return Response(ok=True, change=ex.approve(req.change_id, req.approver, decision=req.decision,
                                                       via=req.via))
        if isinstance(req, ExecuteReq):
            if ch.status in DONE:
                # Exactly once: a finished change is never handed to the write path again. The caller (a
                # flow resumed after a crash) learns its status from the refusal.
                return self._refuse(ErrorCode.REFUSED, f"{ch.id} was already executed (it is {ch.status.value})",
                                    f"{req.actor} via {actor}", change=ch)
            return Response(ok=True, result=wire(await ex.execute(ch.id, actor=req.actor)),
                            change=ex.ledger.get(ch.id))
        if isinstance(req, RollbackReq):
            if ch.status != ChangeStatus.APPLIED or ch.rollback_of is not None:
                return self._refuse(ErrorCode.REFUSED, f"{ch.id} is {ch.status.value}"
                                    + (" and is itself a rollback" if ch.rollback_of else "")
                                    + ": only an applied change is rolled back automatically", actor, change=ch)
            rb = await ex.auto_rollback(ch, req.why)
            return Response(ok=True, result=wire(rb) if rb is not None else None, change=ex.ledger.get(ch.id))
        assert isinstance(req, VerifiedReq)
        if ch.status != ChangeStatus.APPLIED:
            return self._refuse(ErrorCode.REFUSED, f"{ch.id} is {ch.status.value}: only an applied change is "
                                "verified", actor, change=ch)
        return Response(ok=True, change=ex.record_verification(ch, req.outcome, req.summary))

    def _refuse(self, code: ErrorCode, why: str, actor: str, *, action: str = "socket request",
                change: ChangeRequest | None = None, inputs: bytes = b"") -> Response:
        self.executor.audit.append(AuditEvent(
            at=dt.datetime.now(dt.UTC), kind=AuditKind.EXECUTION, actor=actor,
            action=f"execute {change.id}" if change is not None else action,
            incident_id=change.incident_id if change else None,
            inputs_hash=change.spec_digest if change else inputs_hash(inputs.hex()[:2 * 65536]),
            decision="refused", reason=why[:1000], result={"error": code.value}))
        return Response(ok=False, error=code, message=why, change=change)

    # ---- the socket -----------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        me = asyncio.current_task()
        if me is not None:
            self._open[me] = False
        try:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\n"), READ_TIMEOUT_S)
            except asyncio.LimitOverrunError:
                resp = self._refuse(ErrorCode.TOO_LARGE, f"request longer than {self.max_request_bytes} bytes "
                                    "(executor.max_request_bytes); refused unread", f"socket:{peer}")
            except asyncio.IncompleteReadError as e:  # EOF before a newline: the whole request is what came
                if not e.partial:
                    return  # connected and closed without a byte: a liveness probe, not a request
                resp = await self.handle(e.partial, peer)
            except TimeoutError:
                resp = self._refuse(ErrorCode.MALFORMED, f"no complete request line within {READ_TIMEOUT_S:.0f} s",
                                    f"socket:{peer}")
            else:
                if me is not None:
                    self._open[me] = True
                resp = await self.handle(raw, peer)
            writer.write(resp.model_dump_json().encode() + b"\n")
            await writer.drain()
        except (ConnectionError, BrokenPipeError):
            log.warning("executor client %s went away before its answer", peer)
        finally:
            if me is not None:
                self._open.pop(me, None)
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    async def _drain(self) -> None:
        """On stop: a connection still sending its request is closed; one being answered (a change may be
        half applied) gets `drain_s` to finish, then is cut. Every transport is closed before the loop ends."""
        for task, answering in list(self._open.items()):
            if not answering:
                task.cancel()
        pending = set(self._open)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.drain_s)
            for task in late:
                log.warning("executor stopping: a request still running after %.0f s is cut", self.drain_s)
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def serve(self, path: Path, *, group: bool = False,
                    ready: Callable[[], Awaitable[None] | None] | None = None,
                    stop: asyncio.Event | None = None) -> None:
        """Listen on `path` until `stop` is set (forever without one)."""
        prepare_socket_path(path, group=group)
        # +1: the newline. A line longer than this raises LimitOverrunError before it is buffered whole.
        server = await asyncio.start_unix_server(self._connection, path=str(path),
                                                 limit=self.max_request_bytes + 1)
        await asyncio.to_thread(path.chmod, 0o660 if group else 0o600)
        log.info("executor listening on %s", path)
        try:
            if ready is not None:
                r = ready()
                if r is not None:
                    await r
            await (stop or asyncio.Event()).wait()
        finally:
            server.close()  # no new connections; before 3.12 wait_closed() does not wait for open ones
            await asyncio.sleep(0)  # a connection accepted just now has its task created, not yet started
            await self._drain()
            await server.wait_closed()
            await asyncio.to_thread(path.unlink, missing_ok=True)


def prepare_socket_path(path: Path, *, group: bool) -> None:
    """The socket's directory: created 0700 (0750), or tightened if it is ours; refused if it is not ours.
    A socket left by a previous run is removed; anything else at the path is refused."""
    d = path.parent
    mode = 0o750 if group else 0o700
    d.mkdir(parents=True, exist_ok=True, mode=mode)
    st = d.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"the executor socket directory {d} belongs to uid {st.st_uid}, not to this "
                              f"process (uid {os.getuid()}): give the socket a directory of its own")
    if stat.S_IMODE(st.st_mode) != mode:
        d.chmod(mode)
    if path.is_socket():
        path.unlink()
    elif path.exists():
        raise FileExistsError(f"{path} exists and is not a socket: not replacing it")


def peer_of(sock: socket.socket | None) -> str:
    """'pid=N,uid=N' of the connected process (Linux SO_PEERCRED), for the audit record."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return "unknown"
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
    except OSError:
        return "unknown"
    return f"pid={pid},uid={uid}"


def serve_forever(executor: Executor, path: Path, *, max_request_bytes: int, group: bool,
                  on_ready: Callable[[], Any] | None = None) -> None:
    """Run the socket server until SIGTERM or SIGINT (the container's stop)."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ExecutorService(executor, max_request_bytes=max_request_bytes).serve(
            path, group=group, ready=on_ready, stop=stop)

    asyncio.run(main())
