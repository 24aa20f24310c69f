"""The audit trail's interface and a minimal append-only sink.

Audit is not logging: each record is a typed `AuditEvent` (who, what, inputs hash, decision, result,
timing). Every tool call — allowed, refused or failed — produces one. The tamper-evident, hash-chained
store with exported checkpoints builds on this interface.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class AuditKind(enum.StrEnum):
    TOOL_CALL = "tool_call"
    POLICY_DECISION = "policy_decision"
    APPROVAL = "approval"
    EXECUTION = "execution"
    VERIFICATION = "verification"
    TRIAGE = "triage"


class AuditEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: dt.datetime
    kind: AuditKind
    actor: str = Field(description="Who acted: 'agent:rules', 'agent:llm:gpt-4o', 'user:alice', 'executor'.")
    action: str = Field(description="Tool name or change id.")
    incident_id: str | None = None
    inputs_hash: str = Field(description="sha256 of the canonical JSON inputs (inputs may hold secrets).")
    decision: str = Field(description="allowed | refused | error | ...")
    reason: str = ""
    result: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float = 0.0


def inputs_hash(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


class AuditSink(Protocol):
    def append(self, event: AuditEvent) -> object: ...


class MemoryAudit:
    """Keeps events in a list (tests, one-shot CLI runs)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def append(self, event: AuditEvent) -> None:
        with self._lock:
            self.events.append(event)


class JsonlAudit:
    """Appends one JSON line per event to a file opened in append mode."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def append(self, event: AuditEvent) -> None:
        line = event.model_dump_json() + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)
