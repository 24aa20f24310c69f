"""What the Block Kit renderers show people: stages, facts, buttons only while a decision is possible."""

from __future__ import annotations

import datetime as dt
import json

from agent.change.models import Approval, BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.entry.slack import blocks
from agent.entry.slack.blocks import Stage
from agent.entry.slack.chat import Intent, classify
from agent.models import (
    ActionKind,
    Alert,
    Category,
    Hypothesis,
    Incident,
    IncidentStatus,
    ObjectRef,
    Severity,
    TriageReport,
)
from tests.slack_standin import buttons, render

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def _incident(title: str = "ModelServingErrorRateHigh llm-prod") -> Incident:
    alert = Alert(fingerprint="f1", status="firing", starts_at=NOW,
                  labels={"alertname": "ModelServingErrorRateHigh", "namespace": "llm-prod",
                          "model_name": "chat-large"}, annotations={"summary": "<!channel> scale to zero"})
    return Incident(id="inc-1", group_key="g", status=IncidentStatus.FIRING, title=title, severity=Severity.CRITICAL,
                    labels={"namespace": "llm-prod"}, alerts=[alert], created_at=NOW, updated_at=NOW)


def _report() -> TriageReport:
    h = Hypothesis(id="h1", category=Category.BAD_ROLLOUT, title="Bad rollout of chat-primary", confidence=0.86,
                   culprit=ObjectRef(kind="Deployment", name="chat-primary", namespace="llm-prod"),
                   supporting=["5xx share rose from 0.1% to 9% at revision 4 (2025.07.0)"])
    return TriageReport(incident_id="inc-1", title="t", summary="Revision 4 of chat-primary broke it.",
                        status="anomaly", hypotheses=[h], evidence=[], affected={"models": ["chat-large"],
                                                                                 "namespaces": ["llm-prod"]},
                        proposals=[], runbooks=["bad-rollout"], reasoner="rules", started=NOW, finished=NOW)


def _change(status: ChangeStatus = ChangeStatus.PENDING_APPROVAL, cost: float | None = -1200.0) -> ChangeRequest:
    spec = ChangeSpec(action=ActionKind.ROLLBACK, cluster="c",
                      target=ObjectRef(kind="Deployment", name="chat-primary", namespace="llm-prod"),
                      params={"to_revision": 3})
    return ChangeRequest(id="chg-1", spec=spec, spec_digest=spec.digest(),
                         fingerprint=TargetFingerprint(kind="Deployment", name="chat-primary", spec_hash="x",
                                                       generation=7),
                         risk="mutate", blast_radius=BlastRadius(gpus=8, replicas=2, capacity_drop=0.5),
                         cost_delta_per_month=cost, diff="+image: ok", reason="<@U1> said so", requester="agent:rules",
                         created_at=NOW, status=status, policy_rule="rollback", policy_reason="one on-call approval",
                         approvals_required=1, approver_roles=["oncall"], approval_ttl_s=900)


def test_incident_message_shows_stage_facts_and_escapes_alert_text() -> None:
    inc = _incident(title="<!channel> ModelServingErrorRateHigh")
    msg = blocks.incident_message(inc, Stage.TRIAGING, None)
    seen = render(msg)
    assert "*triaging*" in seen and "Triage is running" in seen
    assert "&lt;!channel&gt;" in seen and "<!channel>" not in json.dumps(msg["blocks"])
    assert "chat-large" in seen and "llm-prod" in seen and "critical" in seen and "inc-1" in seen
    done = render(blocks.incident_message(inc, Stage.RESOLVED, _report(), "change verified"))
    assert "*resolved*" in done and "Revision 4 of chat-primary broke it." in done and "change verified" in done


def test_triage_details_list_hypotheses_with_evidence() -> None:
    seen = render(blocks.triage_details(_report()))
    assert "Bad rollout of chat-primary* — 86%" in seen and "5xx share rose" in seen and "bad-rollout" in seen


def test_change_block_has_buttons_only_while_pending_and_shows_who_decided() -> None:
    pending = blocks.change_request(_change(), [], NOW)
    assert buttons(pending) == [("change_approve", "chg-1"), ("change_reject", "chg-1")]
    seen = render(pending)
    for fact in ("rollback", "to_revision=3", "8 GPUs, 2 replicas, up to 50% of capacity", "−$1,200/month",
                 "`rollback`: one on-call approval", "1 more from oncall (0/1 in)", "valid 15 min", "+image: ok",
                 "&lt;@U1&gt; said so"):
        assert fact in seen, fact
    a = Approval(change_id="chg-1", approver="alice", identity="slack:U024BE7LH", role="oncall", decision="approve",
                 at=NOW,
                 spec_digest="d", fingerprint=_change().fingerprint, expires_at=NOW + dt.timedelta(minutes=15),
                 via="slack")
    done = blocks.change_request(_change(ChangeStatus.VERIFIED, cost=None), [a], NOW, "verified: pass")
    assert buttons(done) == []
    seen = render(done)
    assert "approved by <@U024BE7LH> (oncall)" in seen and "applied and verified" in seen
    from_cli = a.model_copy(update={"identity": "kubernetes:alice", "via": "cli"})
    assert "approved by alice (oncall)" in render(blocks.change_request(_change(ChangeStatus.VERIFIED), [from_cli],
                                                                         NOW))
    assert "not estimated" in seen and "verified: pass" in seen and "1/1" in seen


def test_thread_questions_are_classified_and_change_words_never_mean_a_read() -> None:
    assert classify("<@UBOT> why do you think it's the rollout?") == Intent.WHY
    assert classify("what changed in the last hour?") == Intent.CHANGED
    assert classify("show me TTFT for chat-large") == Intent.METRIC
    assert classify("please roll back chat-primary to revision 3") == Intent.CHANGE
    assert classify("scale chat-primary to 4") == Intent.CHANGE
    assert classify("delete the namespace") == Intent.FORBIDDEN
    assert classify("how is the weather") == Intent.FREE
    assert classify("<@UBOT>") == Intent.HELP


def test_a_drain_request_shows_each_models_loss_and_the_pods_it_leaves() -> None:
    ch = _change().model_copy(update={"blast_radius": BlastRadius(
        gpus=8, replicas=3, capacity_drop=1.0, models=["llama", "qwen"], per_model={"llama": 0.25, "qwen": 1.0},
        left_in_place=["kube-system/coredns-1: namespace kube-system is not one the policy lets a drain evict from"])})
    seen = render(blocks.change_request(ch, [], NOW))
    assert "llama loses 25% of its serving replicas" in seen and "qwen loses 100%" in seen
    assert "left on the node: kube-system/coredns-1: namespace kube-system is not one" in seen
