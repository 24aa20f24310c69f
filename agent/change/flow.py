"""The change flow: one LangGraph thread per change request, held by `interrupt()` until approved.

Every entry point goes through here — triage proposals, Slack's chat and cost-report buttons,
`opsagent rightsize apply`, `opsagent changes approve`, Slack's Approve button, the eval harness — so
there is one path from a proposal to a mutation, with two doors:

    flow.propose(spec, reason=..., requester=...)  # executor proposal (dry run, policy), then the thread
                                                   # runs until the approval interrupt (or to the end)
    flow.decide(change_id, who, "approve")         # records the decision via the executor, then resumes

A decision is recorded in the ledger (bound to the change's digest and the target's fingerprint) before
the graph resumes; `resume_pending()` continues any change whose thread stopped part-way (a process
killed while executing or verifying), and the executor's ledger makes that re-run exactly-once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from agent.change.executor.outcome import ExecutionRefused
from agent.change.graph import build_change_graph
from agent.change.models import ChangeRequest, ChangeSpec, ChangeStage, ChangeStatus
from agent.change.state import ChangeContext, FlowExecutor
from agent.change.verify import Verification
from agent.telemetry import tracer

log = logging.getLogger(__name__)
_FOLLOWUPS: set[asyncio.Task[None]] = set()  # resumes scheduled by decisions recorded while a run held the lock

Checkpointer = Callable[[], AbstractAsyncContextManager[BaseCheckpointSaver[Any]]]
VerifyFn = Callable[[ChangeRequest, dt.datetime], Awaitable[Verification]]


@dataclass(frozen=True)
class FlowEvent:
    change_id: str
    stage: ChangeStage
    message: str
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    canary: bool = False  # an Argo Rollout's canary of this change is running: a person may promote or abort it


OnEvent = Callable[[FlowEvent], Awaitable[None]]


@dataclass
class FlowState:
    change: ChangeRequest
    stage: ChangeStage
    detail: str = ""
    verification: str | None = None
    waiting: bool = False  # held at the approval interrupt
    events: list[FlowEvent] = field(default_factory=list)


class ChangeFlow:
    def __init__(self, executor: FlowExecutor, checkpointer: Checkpointer, *, verify: VerifyFn | None = None,
                 on_event: OnEvent | None = None, locks: dict[str, asyncio.Lock] | None = None) -> None:
        self.executor = executor
        self.checkpointer = checkpointer
        self.verify = verify
        self.on_event = on_event
        # One runner per change thread in this process (share the dict between flows of one app): a
        # second click waits for the first decision's run instead of resuming the same thread twice.
        self.locks = locks if locks is not None else {}

    def _lock(self, change_id: str) -> asyncio.Lock:
        return self.locks.setdefault(change_id, asyncio.Lock())

    @staticmethod
    def thread(change_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": f"change:{change_id}"}}

    async def propose(self, spec: ChangeSpec, *, reason: str, requester: str, incident_id: str | None = None,
                      evidence: list[str] | None = None,
                      on_proposed: Callable[[ChangeRequest], Awaitable[None]] | None = None) -> FlowState:
        """Propose a change (fingerprint, dry run, blast radius, policy; stored and audited) and start its thread.

        `on_proposed` runs between the two, for a caller that must record or show the change request
        before its flow moves (the Slack cost report posts the change block into its thread first).
        """
        with tracer().start_as_current_span("policy decision", attributes={
                "change.action": spec.action.value, **({"incident.id": incident_id} if incident_id else {})}) as span:
            ch = await self.executor.propose(spec, reason=reason, requester=requester, incident_id=incident_id,
                                             evidence=evidence)
            if span.is_recording():
                span.set_attributes({"change.id": ch.id, "policy.rule": ch.policy_rule,
                                     "policy.reason": ch.policy_reason[:500], "change.status": ch.status.value,
                                     "policy.approvals_required": ch.approvals_required,
                                     "change.risk": str(ch.risk)})
        if on_proposed is not None:
            await on_proposed(ch)
        return await self.open(ch)

    def _approve(self, change_id: str, approver: str, decision: str, via: str) -> ChangeRequest:
        """Record one decision in the ledger (refused and audited when not allowed), inside an approval span."""
        with tracer().start_as_current_span("approval", attributes={
                "change.id": change_id, "approval.by": approver, "approval.decision": decision,
                "approval.via": via}) as span:
            ch = self.executor.approve(change_id, approver, decision=decision, via=via)
            span.set_attribute("change.status", ch.status.value)
            if ch.incident_id:
                span.set_attribute("incident.id", ch.incident_id)
            return ch

    async def open(self, change: ChangeRequest) -> FlowState:
        """Start the change's thread (idempotent: a thread that exists is continued, not restarted)."""
        async with self._lock(change.id):
            return await self._run(change.id, None)

    async def decide(self, change_id: str, approver: str, decision: str = "approve", via: str = "cli", *,
                     wait: bool = True) -> FlowState:
        """Record a decision (refused and audited when the approver may not make it), then resume.

        With `wait=False`, a decision arriving while an earlier one is running this change's thread in this
        process (executing, verifying) is recorded without waiting or resuming the thread a second time;
        the returned state is then not `waiting` and its detail says so.
        """
        if decision not in ("approve", "reject"):
            raise ValueError(f"decision must be approve or reject, not {decision!r}")
        lock = self._lock(change_id)
        if not wait and lock.locked():
            ch = await asyncio.to_thread(self._approve, change_id, approver, decision, via)
            events: list[FlowEvent] = []
            await self._emit(FlowEvent(change_id, ChangeStage.DECIDED, f"{decision}d by {approver} via {via}: "
                                                             f"{ch.status.value}"), events)
            if ch.status in (ChangeStatus.APPROVED, ChangeStatus.REJECTED):
                # The run holding the lock may have checked the approvals before this one was recorded and
                # be about to stop at the interrupt again: once it lets go, resume the thread (a finished
                # thread has nothing to run; the ledger keeps the execution to one).
                task = asyncio.create_task(self._resume_after(lock, change_id, approver, decision))
                _FOLLOWUPS.add(task)  # a strong reference: the loop keeps only weak ones
                task.add_done_callback(_FOLLOWUPS.discard)
            return FlowState(change=ch, stage=ChangeStage.DECIDED, detail="an earlier decision is carrying it forward",
                             events=events)
        async with lock:
            ch = self._approve(change_id, approver, decision, via)
            await self._emit(FlowEvent(change_id, ChangeStage.DECIDED,
                                       f"{decision}d by {approver} via {via}: {ch.status.value}"), [])
            return await self._run(change_id, {"by": approver, "decision": decision})

    async def _resume_after(self, lock: asyncio.Lock, change_id: str, approver: str, decision: str) -> None:
        try:
            async with lock:
                if (await self.state(change_id)).waiting:  # else it ran on (or ended): nothing to add
                    await self._run(change_id, {"by": approver, "decision": decision})
        except Exception:  # a background resume: its failure is logged, the change stays resumable
            log.exception("resuming %s after a decision recorded while it ran failed", change_id)

    async def resume_pending(self) -> list[FlowState]:
        """Continue changes whose thread stopped part-way (approved, executing or applied, not finished)."""
        out = []
        for status in (ChangeStatus.APPROVED, ChangeStatus.EXECUTING, ChangeStatus.APPLIED):
            for ch in self.executor.ledger.list_changes(status):
                if status != ChangeStatus.APPROVED and not await self._has_thread(ch.id):
                    # Executed outside any flow: an automatic rollback, run and judged by the flow of the
                    # change it undoes (which a restart resumes). Starting a thread for it now would watch
                    # whatever the target runs today (a later deployment's canary) as if it were this one.
                    log.info("not resuming %s (%s): it was carried out outside a change flow", ch.id,
                             ch.status.value)
                    continue
                log.info("resuming the flow of %s (%s)", ch.id, ch.status.value)
                async with self._lock(ch.id):
                    out.append(await self._run(ch.id, {"by": "restart"}))
        return out

    async def _has_thread(self, change_id: str) -> bool:
        async with self.checkpointer() as saver:
            snap = await build_change_graph(saver).aget_state(self.thread(change_id))
        return bool(snap and (snap.values or snap.next))

    async def state(self, change_id: str) -> FlowState:
        async with self.checkpointer() as saver:
            graph = build_change_graph(saver)
            snap = await graph.aget_state(self.thread(change_id))
        return self._state(change_id, snap.values if snap else {}, bool(snap and _interrupted(snap)), [])

    async def _run(self, change_id: str, resume: dict[str, Any] | None) -> FlowState:
        """Start the thread, resume it at its interrupt (with `resume`), or continue it where it stopped."""
        with tracer().start_as_current_span("change", attributes={"change.id": change_id}) as span:
            st = await self._run_graph(change_id, resume)
            if span.is_recording():
                span.set_attributes({"change.stage": st.stage, "change.status": st.change.status.value,
                                     "change.action": st.change.spec.action.value,
                                     "change.policy_rule": st.change.policy_rule,
                                     "change.resumed_by": str((resume or {}).get("by", ""))})
                if st.change.incident_id:
                    span.set_attribute("incident.id", st.change.incident_id)
                if st.verification:
                    span.set_attribute("change.verification", st.verification)
            return st

    async def _run_graph(self, change_id: str, resume: dict[str, Any] | None) -> FlowState:
        events: list[FlowEvent] = []

        async def notify(cid: str, stage: ChangeStage, message: str) -> None:
            await self._emit(FlowEvent(cid, stage, message), events)

        ctx = ChangeContext(executor=self.executor, verify=self.verify, notify=notify,
                            actor="executor")
        async with self.checkpointer() as saver:
            graph = build_change_graph(saver)
            config = self.thread(change_id)
            snap = await graph.aget_state(config)
            inp: Any
            if snap is None or not (snap.values or snap.next):
                inp = {"change_id": change_id}
            elif _interrupted(snap):
                inp = Command(resume=resume) if resume is not None else None
            elif snap.next:
                inp = None  # stopped part-way (a crash): continue from the last checkpoint
            elif snap.values.get("stage") in (ChangeStage.EXECUTING_ELSEWHERE, ChangeStage.APPROVED) \
                    and self._unfinished(change_id):
                # Another executor held the claim when this thread last ran, or the thread ended approved
                # without reaching execute (a process killed between the two steps); try again from
                # execute (the executor reconciles: it applies once, or finds the write already made).
                await graph.aupdate_state(config, {"stage": ChangeStage.APPROVED}, as_node="await_approval")
                inp = None
            else:
                inp = False  # finished: nothing to run
            if inp is not False and not (inp is None and _interrupted(snap)):
                # "sync": each step's checkpoint is on disk before the next step starts. With LangGraph's
                # default ("async") a process killed inside `execute` could leave the approval step's
                # checkpoint unwritten, and a restart would find the thread still at its interrupt.
                await graph.ainvoke(inp, config=config, context=ctx, durability="sync")
            snap = await graph.aget_state(config)
        values = snap.values if snap else {}
        waiting = bool(snap and _interrupted(snap))
        st = self._state(change_id, values, waiting, events)
        if not waiting:
            await self._emit(FlowEvent(change_id, st.stage, st.verification or st.detail or st.stage), events)
        return st

    def _unfinished(self, change_id: str) -> bool:
        ch = self.executor.ledger.get(change_id)
        return ch is not None and ch.status in (ChangeStatus.APPROVED, ChangeStatus.EXECUTING)

    def _state(self, change_id: str, values: dict[str, Any], waiting: bool, events: list[FlowEvent]) -> FlowState:
        ch = self.executor.ledger.get(change_id)
        if ch is None:
            raise ExecutionRefused(f"no change {change_id}")
        return FlowState(change=ch, stage=ChangeStage.AWAITING_APPROVAL if waiting
                         else ChangeStage(values.get("stage", ChangeStage.NEW)),
                         detail=str(values.get("detail", "")), verification=values.get("verification"),
                         waiting=waiting, events=events)

    async def _emit(self, ev: FlowEvent, sink: list[FlowEvent]) -> None:
        sink.append(ev)
        if self.on_event is not None:
            try:
                await self.on_event(ev)
            except Exception:  # a failing notifier (Slack down) never stops a change
                log.exception("flow event handler failed for %s", ev.change_id)


def _interrupted(snap: Any) -> bool:
    return any(t.interrupts for t in getattr(snap, "tasks", ()) or ())
