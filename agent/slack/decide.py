"""The approval path Slack calls: record a decision, then execute, verify, roll back on regression.

It follows the `ChangeFlow.decide` contract (`agent.flow`, being built on main): same arguments, a
`FlowState` back, `FlowEvent`s to a callback, `ExecutionRefused` (already audited) for a refused
decision. Until that lands, this small class does the same through `Executor.approve` and
`Executor.execute`; switching is a change of one constructor in `agent.slack.service`.

Decisions on one change are serialized in this process: the executor's ledger claim makes execution
exactly-once across processes, and the lock keeps a second click in this process from reconciling
against a write that is still in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.changes import ChangeRequest, ChangeStatus
from agent.executor import ExecutionRefused, Executor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowEvent:
    change_id: str
    stage: str
    message: str
    at: dt.datetime


@dataclass
class FlowState:
    change: ChangeRequest
    stage: str  # awaiting_approval, rejected, denied, executing, verified, rolled_back, failed, inconclusive
    verification: str | None = None
    events: list[FlowEvent] = field(default_factory=list)
    executed_now: bool = False  # this call performed the write (False: someone else did, or not yet)


Verifier = Callable[[ChangeRequest], Awaitable[tuple[str, str]]]  # -> (pass|regression|inconclusive, summary)
OnEvent = Callable[[FlowEvent], Awaitable[None]]


class InterimFlow:
    def __init__(self, executor: Callable[[], Executor], verifier: Verifier | None = None,
                 on_event: OnEvent | None = None) -> None:
        self._executor = executor
        self.verifier = verifier
        self.on_event = on_event
        self._locks: dict[str, asyncio.Lock] = {}

    async def _emit(self, state: FlowState, stage: str, message: str) -> None:
        ev = FlowEvent(state.change.id, stage, message, dt.datetime.now(dt.UTC))
        state.events.append(ev)
        state.stage = stage
        if self.on_event is not None:
            try:
                await self.on_event(ev)
            except Exception:  # a notification failure never stops a change half-way
                log.exception("flow event callback failed for %s", ev.change_id)

    async def decide(self, change_id: str, approver: str, decision: str = "approve", via: str = "slack") -> FlowState:
        ex = self._executor()
        lock = self._locks.setdefault(change_id, asyncio.Lock())
        async with lock:
            ch = await asyncio.to_thread(ex.approve, change_id, approver, decision=decision, via=via)
            state = FlowState(change=ch, stage="awaiting_approval")
            if ch.status == ChangeStatus.REJECTED:
                await self._emit(state, "rejected", f"rejected by {approver}; it will not run")
                return state
            if ch.status != ChangeStatus.APPROVED:
                await self._emit(state, "awaiting_approval", f"approved by {approver}; more approvals needed")
                return state
            await self._emit(state, "executing", f"approved by {approver}; the guarded executor is applying it")
            try:
                result = await ex.execute(ch.id, actor=f"user:{approver}")
            except ExecutionRefused as e:
                state.change = ex.ledger.get(ch.id) or ch
                await self._emit(state, "failed", str(e))
                return state
            state.executed_now = result.applied_now
            state.change = ex.ledger.get(ch.id) or ch
            if result.status != ChangeStatus.APPLIED:
                await self._emit(state, "failed", f"execution ended {result.status.value}: {result.detail}")
                return state
            await self._emit(state, "applied", "applied; verifying the rollout and the SLO signals")
        return await self._verify(ex, state)

    async def _verify(self, ex: Executor, state: FlowState) -> FlowState:
        ch = state.change
        if self.verifier is None:
            await self._emit(state, "inconclusive", "applied; no verifier is configured")
            return state
        try:
            outcome, summary = await self.verifier(ch)
        except Exception as e:
            outcome, summary = "inconclusive", f"verification could not run: {type(e).__name__}: {e}"
        state.verification = summary
        state.change = await asyncio.to_thread(ex.record_verification, ch, outcome, summary)
        if outcome == "pass":
            await self._emit(state, "verified", f"verified: {summary}")
        elif outcome in ("fail", "regression"):
            rb = await ex.auto_rollback(ch, summary)
            state.change = ex.ledger.get(ch.id) or state.change
            what = f"rolled back ({rb.status.value})" if rb else "could not be rolled back automatically"
            await self._emit(state, "rolled_back" if rb else "failed", f"verification failed: {summary}; {what}")
        else:
            await self._emit(state, "inconclusive", f"verification inconclusive: {summary}")
        return state
