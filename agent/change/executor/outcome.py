"""What an execution request ends in: a result, or a refusal that has been audited.

Kept apart from `core` so that a process which only *asks* for executions (`opsagent serve` talking to
the executor over its socket, the change nodes, the CLI) can name these types without importing the
executor, and with it the write client (`tools.k8s_write`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.change.models import ChangeStatus


class ExecutionRefused(Exception):
    """Execution was refused; the message says which check failed. It has been audited."""


@dataclass(frozen=True)
class ExecutionResult:
    change_id: str
    status: ChangeStatus
    applied_now: bool  # False when this call found it already applied (idempotent re-run)
    detail: dict[str, Any]
