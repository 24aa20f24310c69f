"""Approvals count only for the exact change, on the unchanged target, by a distinct, authorized, other person."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.policy.approvals import ApprovalView, check
from agent.policy.evaluate import load_policy
from agent.policy.model import Approvers

POLICY = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")
NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
FP = {"uid": "u1", "spec_hash": "abc"}
ONE = Approvers(roles=["oncall", "ml-platform"], count=1)
TWO = Approvers(roles=["oncall", "ml-platform"], count=2)


def ap(who: str, decision: str = "approve", digest: str = "d1", fp: dict[str, object] | None = None,
       expires: dt.datetime | None = None) -> ApprovalView:
    return ApprovalView(approver=who, role="", decision=decision, spec_digest=digest, fingerprint=fp or FP,
                        expires_at=expires or NOW + dt.timedelta(minutes=10))


@pytest.mark.parametrize(("need", "approvals", "ok", "words"), [
    (ONE, [ap("alice")], True, None),
    (ONE, [], False, None),
    (ONE, [ap("mallory")], False, "not in any of the roles"),
    (ONE, [ap("bob", digest="other")], False, "different change"),
    (ONE, [ap("bob", fp={**FP, "spec_hash": "abd"})], False, "target changed"),
    (ONE, [ap("bob", expires=NOW - dt.timedelta(seconds=1))], False, "expired"),
    (ONE, [ap("carol")], False, "requested this change"),
    (TWO, [ap("alice"), ap("alice")], False, None),  # the same person twice is one approval
    (TWO, [ap("alice"), ap("bob")], True, None),
    (TWO, [ap("alice"), ap("bob", decision="reject")], False, None),
])
def test_approvals(need: Approvers, approvals: list[ApprovalView], ok: bool, words: str | None) -> None:
    res = check(POLICY, need, requester="user:carol", spec_digest="d1", fingerprint_now=FP, approvals=approvals,
                now=NOW)
    assert res.satisfied is ok
    if words:
        assert any(words in r for r in res.refused), res.refused


def test_a_rejection_blocks() -> None:
    res = check(POLICY, TWO, requester="agent:rules", spec_digest="d1", fingerprint_now=FP,
                approvals=[ap("alice"), ap("bob", decision="reject")], now=NOW)
    assert not res.satisfied and res.blocked_by == "bob rejected the change"
