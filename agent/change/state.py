"""The change graph's state and run-scoped context.

State is what a checkpoint keeps (plain values: a change id, a stage, counts); `ChangeContext` is what a
run needs but must never be checkpointed (the executor, the verifier, the notifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict


class ChangeState(TypedDict, total=False):
    """One change request's path: awaiting approval → executing → verifying → done. Checkpointed per change."""

    change_id: str
    stage: str  # awaiting_approval | rejected | denied | refused | failed | verified | rolled_back | inconclusive ...
    detail: str
    verification: str
    approvals_seen: int


@dataclass
class ChangeContext:
    """What the change graph needs but never checkpoints: the executor and the verifier.

    `verify` is None when no verifier is configured (no Prometheus or reader identity): the change is
    then reported as applied but unverified — never as verified.
    """

    executor: Any  # agent.change.executor.core.Executor (typed loosely: nodes must not import its deps)
    verify: Any = None  # async (ChangeRequest, applied_at) -> agent.change.verify.Verification
    notify: Any = None  # async (change_id, stage, message) -> None
    actor: str = "executor"
