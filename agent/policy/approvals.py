"""Are the approvals on a change enough, and still valid, right now? A pure function on plain data.

An approval counts only if: it approves (a single rejection blocks the change); its approver holds
one of the required roles; the approver is not the requester (unless the rule allows self-approval);
it was given for this exact change (same spec digest) on the target as it is now (same fingerprint);
and it has not expired. Distinct people are counted, so one person clicking twice, or approving once
from the CLI and once from Slack, is one approval.

Identities are `channel:id` strings resolved to the policy's `people:` by `person_of`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.policy.model import Approvers, Policy


@dataclass(frozen=True)
class ApprovalView:
    approver: str
    role: str
    decision: str  # approve | reject
    spec_digest: str
    fingerprint: Mapping[str, Any]
    expires_at: dt.datetime


@dataclass(frozen=True)
class ApprovalCheck:
    satisfied: bool
    counted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one sentence per approval that did not count
    blocked_by: str | None = None  # a rejection
    missing: int = 0


def person_of(policy: Policy, identity: str) -> str | None:
    """The person `identity` belongs to, or None when it is nobody's.

    `kubernetes:<username>` is a name the cluster's API server vouched for; `slack:<user id>` one Slack
    signed. A bare name (or `user:<name>`) names the person directly: entry points use it only where they
    established the person themselves (`--as` in env dev, the eval harness). Any other channel is nobody.
    """
    channel, sep, ident = identity.partition(":")
    if sep and channel == "kubernetes":
        return next((n for n, p in policy.people.items() if ident in p.kubernetes), None)
    if sep and channel == "slack":
        return next((n for n, p in policy.people.items() if ident in p.slack), None)
    if sep and channel != "user":
        return None
    name = ident if sep else identity
    return name if name in policy.people else None


def roles_of(policy: Policy, person: str) -> list[str]:
    p = policy.people.get(person)
    return list(p.roles) if p else []


def check(policy: Policy, need: Approvers, *, requester: str, spec_digest: str,
          fingerprint_now: Mapping[str, Any], approvals: Sequence[ApprovalView], now: dt.datetime) -> ApprovalCheck:
    """Judge `approvals` (their `approver` is a person of the policy) against the rule `need`."""
    counted: list[str] = []
    refused: list[str] = []
    for a in approvals:
        who = a.approver
        if a.decision == "reject":
            return ApprovalCheck(False, counted, refused, blocked_by=f"{who} rejected the change", missing=need.count)
        if not set(roles_of(policy, who)) & set(need.roles):
            refused.append(f"{who} is not in any of the roles {need.roles}")
        elif is_forbidden_self_approval(policy, need, requester=requester, approver=who):
            refused.append(f"{who} requested this change and may not approve it")
        elif a.spec_digest != spec_digest:
            refused.append(f"{who} approved a different change")
        elif dict(a.fingerprint) != dict(fingerprint_now):
            refused.append(f"{who} approved it when the target was in another state; the target changed since")
        elif a.expires_at <= now:
            refused.append(f"{who}'s approval expired at {a.expires_at:%H:%M:%S} UTC")
        elif who in counted:
            continue
        else:
            counted.append(who)
    missing = max(0, need.count - len(counted))
    return ApprovalCheck(missing == 0, counted, refused, None, missing)


def is_forbidden_self_approval(policy: Policy, need: Approvers, *, requester: str, approver: str) -> bool:
    """True when the person `approver` requested the change (through any of their identities: 'user:alice',
    'slack:U024BE7LH') and the rule does not allow self-approval."""
    return person_of(policy, requester) == approver and not need.allow_self_approval
