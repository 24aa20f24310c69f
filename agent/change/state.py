"""The change graph's state and run-scoped context.

State is what a checkpoint keeps (plain values: a change id, a stage, counts); `ChangeContext` is what a
run needs but must never be checkpointed (the executor, the verifier, the notifier).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

from agent.change.models import ChangeRequest, ChangeSpec, ChangeStage

if TYPE_CHECKING:  # the nodes see the executor through this Protocol only, not its write client's imports
    from agent.change.executor.outcome import ExecutionResult
    from agent.change.ledger import Ledger
    from agent.change.verify import Verification


class ChangeState(TypedDict, total=False):
    """One change request's path: awaiting approval → executing → verifying → done. Checkpointed per change."""

    change_id: str
    stage: ChangeStage
    detail: str
    verification: str
    approvals_seen: int


class ChangeExecutor(Protocol):
    """What the change nodes use of `agent.change.executor.core.Executor`."""

    @property
    def ledger(self) -> Ledger: ...
    async def execute(self, change_id_: str, actor: str = ...) -> ExecutionResult: ...
    async def auto_rollback(self, original: ChangeRequest, why: str) -> ExecutionResult | None: ...
    def record_verification(self, ch: ChangeRequest, outcome: str, summary: str) -> ChangeRequest: ...


class FlowExecutor(ChangeExecutor, Protocol):
    """What `ChangeFlow` uses: the nodes' part plus the two doors, proposing and deciding.

    Two implementations: `Executor` in this process (dev, the sandbox demo, the CLI), or
    `ExecutorClient`, which asks the executor process over its Unix socket and holds no write credentials.
    """

    async def propose(self, spec: ChangeSpec, *, reason: str, requester: str, incident_id: str | None = ...,
                      evidence: list[str] | None = ...) -> ChangeRequest: ...
    def approve(self, change_id_: str, approver: str, *, decision: str = ..., via: str = ...) -> ChangeRequest: ...


class Verifier(Protocol):
    """Watches an applied change: the rollout, then SLO signals against the baseline."""

    def __call__(self, change: ChangeRequest, applied_at: dt.datetime, /) -> Awaitable[Verification]: ...


class Notifier(Protocol):
    """Tells the people following a change where its flow stands (Slack, the CLI's progress lines)."""

    def __call__(self, change_id: str, stage: ChangeStage, message: str, /) -> Awaitable[None]: ...


@dataclass
class ChangeContext:
    """What the change graph needs but never checkpoints: the executor and the verifier.

    `verify` is None when no verifier is configured (no Prometheus or reader identity): the change is
    then reported as applied but unverified — never as verified.
    """

    executor: ChangeExecutor
    verify: Verifier | None = None
    notify: Notifier | None = None
    actor: str = "executor"
