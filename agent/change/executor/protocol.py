"""The executor socket's wire format: one JSON request per connection, one JSON response back.

The executor process (`opsagent executor serve`) holds the write credentials; the process that parses
webhooks, Slack requests and model output reaches it only through these models. A request names a
change **by id** and never carries a claim that it is approved: the executor re-reads the change, its
policy decision and its approvals from the store and re-checks them itself. A proposal carries a spec,
which the executor fingerprints, dry-runs and submits to policy on its own.

Framing: the request is a single line of UTF-8 JSON ending in a newline, at most
`executor.max_request_bytes`; anything longer is refused unread. The response is one line, then the
connection closes. This module holds data only (no sockets, no executor) so that both sides can import it.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agent.change.models import ChangeRequest, ChangeSpec, ChangeStatus

PROTOCOL_VERSION = 1

# The shape `change_id()` gives every change: an id is looked up, never interpreted.
ChangeId = Annotated[str, Field(pattern=r"^chg-[0-9a-f]{12}$", description="A change request's id.")]
# Who or what: printable, bounded (they land in audit records and Slack messages).
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, Field(max_length=4000)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(default=1, description="Protocol version (PROTOCOL_VERSION); another is refused.")


class ProposeReq(_Req):
    """Propose a change: the executor reads the target, dry-runs the write, measures blast radius, asks policy."""

    op: Literal["propose"]
    spec: ChangeSpec
    reason: Text
    requester: Name
    incident_id: Name | None = None
    evidence: list[Name] = Field(default_factory=list, max_length=200)


class DecideReq(_Req):
    """Record one approver's decision (refused and audited for a wrong role, the requester, a finished change)."""

    op: Literal["approve"]
    change_id: ChangeId
    approver: Name
    decision: Literal["approve", "reject"]
    via: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")] = "cli"


class ExecuteReq(_Req):
    """Execute an approved change, exactly once. Refused unless the executor's own checks pass now."""

    op: Literal["execute"]
    change_id: ChangeId
    actor: Name = "executor"


class RollbackReq(_Req):
    """Undo an applied change whose verification failed, under its original approval (policy must allow it)."""

    op: Literal["rollback"]
    change_id: ChangeId
    why: Text


class VerifiedReq(_Req):
    """Record the verifier's verdict on an applied change."""

    op: Literal["verify"]
    change_id: ChangeId
    outcome: Literal["pass", "regression", "inconclusive"]
    summary: Text


Request = Annotated[ProposeReq | DecideReq | ExecuteReq | RollbackReq | VerifiedReq, Field(discriminator="op")]
REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


class ErrorCode(enum.StrEnum):
    MALFORMED = "malformed"  # not JSON, not one of the request shapes, an unknown field or version
    TOO_LARGE = "too_large"  # longer than executor.max_request_bytes: refused unread
    REFUSED = "refused"  # a check failed (audited): not approved, expired, changed, already executed …
    UNAVAILABLE = "unavailable"  # the executor failed (the store, the API server): nothing was decided
    # Client side only: no answer on the socket at all.
    NO_ANSWER = "no_answer"


class WireResult(BaseModel):
    """`ExecutionResult` on the wire."""

    model_config = ConfigDict(extra="forbid")

    change_id: str
    status: ChangeStatus
    applied_now: bool
    detail: dict[str, Any] = Field(default_factory=dict)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    error: ErrorCode | None = None
    message: str = ""
    change: ChangeRequest | None = Field(default=None, description="The change as the ledger holds it now.")
    result: WireResult | None = None


def parse_request(raw: bytes) -> Request:
    """The request in `raw` (one JSON document); ValueError with a readable reason otherwise."""
    try:
        return REQUEST.validate_json(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
                             for err in e.errors()[:5])
        raise ValueError(f"not a valid executor request ({problems})") from None
