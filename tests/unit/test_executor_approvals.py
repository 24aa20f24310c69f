"""Approvals through the executor follow the policy's approval rule, including `allow_self_approval`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit.events import MemoryAudit
from agent.change.executor.core import ExecutionRefused, Executor
from agent.change.ledger import Ledger
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, ObjectRef
from agent.policy.model import Policy

NOW = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
POLICY = Policy.model_validate({"version": 1, "people": {
    "alice": {"roles": ["oncall"]}, "bob": {"roles": ["oncall"]}}, "rules": [
    {"id": "all", "description": "everything", "effect": "require_approval", "approvers": {"roles": ["oncall"]}}]})


@pytest.fixture
def executor(db_target: str) -> Iterator[Executor]:
    ledger = Ledger(db_target)
    # `approve` never writes to the cluster: no write client is needed to record a decision.
    ex = Executor(ledger, POLICY, write=None, audit=MemoryAudit(), clock=lambda: NOW)  # type: ignore[arg-type]
    yield ex
    ledger.close()


def pending(ex: Executor, *, self_ok: bool, requester: str = "user:alice", **kw: Any) -> ChangeRequest:
    s = ChangeSpec(action=ActionKind.SCALE, cluster="sandbox",
                   target=ObjectRef(kind="Deployment", name="chat", namespace="serving"), params={"replicas": 2})
    ch = ChangeRequest(id="chg-self", spec=s, spec_digest=s.digest(),
                       fingerprint=TargetFingerprint(kind="Deployment", name="chat", namespace="serving",
                                                     spec_hash="h"),
                       risk="mutate", blast_radius=BlastRadius(gpus=0, replicas=1, capacity_drop=0), reason="t",
                       requester=requester, created_at=NOW, status=ChangeStatus.PENDING_APPROVAL,
                       approvals_required=1, approver_roles=["oncall"], allow_self_approval=self_ok, **kw)
    ex.ledger.save(ch)
    return ch


def test_a_rule_that_allows_self_approval_lets_the_requester_approve(executor: Executor) -> None:
    ch = pending(executor, self_ok=True)
    assert executor.approve(ch.id, "alice").status == ChangeStatus.APPROVED
    assert executor._check_approvals(ch, ch.fingerprint, NOW).counted == ["alice"]


def test_without_the_flag_the_requester_is_refused_and_another_person_approves(executor: Executor) -> None:
    ch = pending(executor, self_ok=False)
    with pytest.raises(ExecutionRefused, match="requested chg-self and may not approve it"):
        executor.approve(ch.id, "alice")
    assert executor.approve(ch.id, "bob").status == ChangeStatus.APPROVED


def test_an_expired_approval_is_renewed_by_the_same_person(executor: Executor) -> None:
    ch = pending(executor, self_ok=False, approval_ttl_s=60)
    executor.approve(ch.id, "bob")
    later = NOW + dt.timedelta(minutes=5)
    assert not executor._check_approvals(ch, ch.fingerprint, later).satisfied  # bob's approval lapsed
    executor.clock = lambda: later
    executor.approve(ch.id, "bob")  # bob approves again
    assert executor._check_approvals(ch, ch.fingerprint, later).satisfied
