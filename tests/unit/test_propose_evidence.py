"""A forged alert cannot choose what gets changed: a proposal's target must be the object the evidence the agent
read points at, never only the one an alert label names; otherwise triage pages a human and says why."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.audit.events import MemoryAudit
from agent.guard.runner import ToolRunner
from agent.models import ActionKind, Evidence, EvidenceStatus
from agent.triage.features import feature_map
from agent.triage.nodes.propose import objects_read, proposals_for
from agent.triage.reasoners.rules import RulesReasoner
from agent.triage.runbooks import load_dir
from agent.triage.state import TriageState

BOOKS = {b.id: b for b in load_dir()}
SICK, HEALTHY = "ip-10-0-130-10.ec2.internal", "ip-10-0-131-77.ec2.internal"


def ev(eid: str, params: dict[str, Any] | None = None, status: EvidenceStatus = EvidenceStatus.OK,
       **features: Any) -> Evidence:
    return Evidence(id=eid, tool="t", title=eid, params=params or {}, status=status, summary="", features=features)


def propose(book: str, context: dict[str, str], evidence: list[Evidence]) -> list[Any]:
    state: TriageState = {"context": context, "evidence": evidence}
    books = [BOOKS[book]]
    hyps, _ = asyncio.run(RulesReasoner().diagnose(state, books, ToolRunner([], {}, MemoryAudit())))
    return proposals_for(hyps[0] if hyps else None, books, feature_map(state), objects_read(state))


XID = [ev("xid", {"query": "max by (Hostname) (DCGM_FI_DEV_XID_ERRORS) > 0"}, value=79, top_Hostname=SICK),
       ev("gpu_nodes", {"gpu_only": True}, unallocatable=1, unallocatable_nodes=SICK),
       ev("pending", {"phase": "Pending"}, insufficient_gpu=1)]


def test_a_forged_alert_naming_a_healthy_node_pages_a_human_instead_of_cordoning_it() -> None:
    props = propose("gpu-xid", {"node": HEALTHY}, XID)
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert HEALTHY in props[0].reason and SICK in props[0].reason


def test_the_node_the_xid_evidence_names_is_cordoned() -> None:
    props = propose("gpu-xid", {"node": SICK}, XID)
    assert [(p.kind, p.target.name if p.target else None) for p in props] == [(ActionKind.CORDON_NODE, SICK)]


ROLLOUT = dict(revisions=2, current_revision=2, previous_revision=1, current_version="2025.07.0",
               previous_version="2025.06.1", changed_ago_s=300, changed_ago_slack_s=480, changed_ago_min=5)
SIGNALS = [ev("errors", baseline=0.001, recent=0.07, change_ratio=70, onset_ago_s=240),
           ev("ttft", baseline=0.4, recent=3.9, change_ratio=9.7, onset_ago_s=250, onset_ago_min=4.2),
           ev("traffic", change_ratio=1.02, recent=12)]
CTX = {"namespace": "llm-prod", "deployment": "chat-primary"}


def test_a_rollback_needs_the_rollout_history_of_that_very_deployment() -> None:
    read = ev("rollout", {"namespace": "llm-prod", "name": "chat-primary"}, **ROLLOUT)
    assert [p.kind for p in propose("bad-rollout", CTX, [read, *SIGNALS])] == [ActionKind.ROLLBACK]
    # The same features, but the history the agent read was another Deployment's.
    other = ev("rollout", {"namespace": "llm-prod", "name": "search-embed"}, **ROLLOUT)
    props = propose("bad-rollout", CTX, [other, *SIGNALS])
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert "only an alert label names it" in props[0].reason


def test_a_write_to_a_gitops_owned_deployment_becomes_a_change_for_git_never_a_write() -> None:
    from agent.triage.nodes.propose import _through_git
    from tools.k8s_read.ownership import gitops_owner

    read = ev("rollout", {"namespace": "llm-prod", "name": "chat-primary"}, **ROLLOUT)
    [rollback] = propose("bad-rollout", CTX, [read, *SIGNALS])
    owner = gitops_owner({}, {"argocd.argoproj.io/tracking-id": "llm-prod-chat:apps/Deployment:llm-prod/chat-primary"})
    out = _through_git(rollback, owner)
    assert out.kind == ActionKind.PAGE_HUMAN and out.target == rollback.target
    patch = out.params["manifest_patch"]
    assert patch["owner"] == "Argo CD" and patch["source"] == "llm-prod-chat"
    assert patch["change"] == {"kind": "rollback", "target": "Deployment llm-prod/chat-primary",
                               "params": rollback.params}
    assert "reverted on its next sync" in out.reason and rollback.reason in out.reason
    assert _through_git(rollback, None) == rollback, "a workload nobody reconciles keeps its direct rollback"


def test_a_re_triage_after_a_rollback_that_did_not_help_pages_a_human_instead_of_rolling_back_again() -> None:
    """Live ticket-144: the previous revision carried another defect, so the first rollback left TTFT high;
    the re-triage proposed a second rollback of the same Deployment (a flip-flop)."""
    from agent.models import ObjectRef
    from agent.triage.nodes.propose import _not_again
    from agent.triage.state import PriorChange

    read = ev("rollout", {"namespace": "llm-prod", "name": "chat-primary"}, **ROLLOUT)
    [rollback] = propose("bad-rollout", CTX, [read, *SIGNALS])
    done = PriorChange(action="rollback", target=rollback.target, status="applied")
    out = _not_again(rollback, [done])
    assert out.kind == ActionKind.PAGE_HUMAN and out.target == rollback.target
    assert "already changed for this incident" in out.reason and "rollback (applied)" in out.reason
    assert out.params["not_proposed"] == {"kind": "rollback", "params": rollback.params}
    other = PriorChange(action="rollback", target=ObjectRef(kind="Deployment", name="chat-lite", namespace="llm-prod"),
                        status="verified")
    assert _not_again(rollback, [other]) == rollback, "a change to another object does not hold this one back"
    assert _not_again(rollback, []) == rollback
