"""Which executed changes a re-triage counts as "this incident's remediation already changed it"."""

from __future__ import annotations

import datetime as dt

from agent.app import prior_changes_of
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, Alert, Incident, IncidentStatus, ObjectRef, Severity

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _incident(starts_at: dt.datetime, *stale: dt.datetime) -> Incident:
    labels = {"alertname": "ModelServingErrorRateHigh", "namespace": "llm-prod", "severity": "critical"}
    alerts = [Alert(fingerprint=f"f{i}", status="firing", starts_at=t, labels=labels | {"pod": f"p{i}"})
              for i, t in enumerate([starts_at, *stale])]
    return Incident(id="inc-1", group_key="g", status=IncidentStatus.FIRING, title="t", severity=Severity.CRITICAL,
                    labels=labels, alerts=alerts, created_at=T0, updated_at=starts_at)


def _rollback(created_at: dt.datetime, status: ChangeStatus = ChangeStatus.VERIFIED) -> ChangeRequest:
    spec = ChangeSpec(action=ActionKind.ROLLBACK, cluster="c", params={"to_revision": 1},
                      target=ObjectRef(kind="Deployment", name="chat-primary", namespace="llm-prod"))
    return ChangeRequest(id=f"chg-{created_at:%H%M}", spec=spec, spec_digest=spec.digest(),
                         fingerprint=TargetFingerprint(kind="Deployment", name="chat-primary", spec_hash="x",
                                                       generation=3),
                         risk="mutate", blast_radius=BlastRadius(gpus=8, replicas=2, capacity_drop=0.5),
                         cost_delta_per_month=None, diff="", reason="r", requester="agent:rules",
                         created_at=created_at, status=status, policy_rule="rollback", policy_reason="p",
                         approvals_required=1, approver_roles=["oncall"], approval_ttl_s=900)


def test_a_rollback_made_while_the_alert_kept_firing_counts() -> None:
    prior = prior_changes_of(_incident(T0), [_rollback(T0 + dt.timedelta(minutes=3))])
    assert [(p.action, p.target.name, p.status) for p in prior] == [("rollback", "chat-primary", "verified")]


def test_a_rollback_of_an_earlier_episode_of_the_same_group_does_not_count() -> None:
    # The group fired days ago, was rolled back, its resolution never arrived; the same alert fires again now.
    again = T0 + dt.timedelta(days=3)
    assert prior_changes_of(_incident(again), [_rollback(T0 + dt.timedelta(minutes=3))]) == []
    # ... also when another alert of that earlier episode is still marked firing (its resolution was lost)
    assert prior_changes_of(_incident(again, T0), [_rollback(T0 + dt.timedelta(minutes=3))]) == []


def test_a_change_that_was_never_written_does_not_count() -> None:
    assert prior_changes_of(_incident(T0), [_rollback(T0 + dt.timedelta(minutes=3), ChangeStatus.DENIED)]) == []
