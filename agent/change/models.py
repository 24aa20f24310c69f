"""Change requests: the typed, hashed description of one proposed change and everything bound to it.

A change request carries what to do (`ChangeSpec`, hashed), the target's state when it was proposed
(`TargetFingerprint`), its risk, blast radius, predicted cost change, server-side dry-run diff and
why it was proposed. Approvals bind to the spec hash and the fingerprint: approving "roll back
chat-primary to revision 3 while it is at generation 7" says nothing about any other change.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.models import ActionKind, ObjectRef
from tools.base import Risk

# Risk of each action when executed (its label is the policy's `risks` vocabulary).
ACTION_RISK: dict[ActionKind, Risk] = {
    ActionKind.ROLLBACK: Risk.MUTATE,
    ActionKind.SCALE: Risk.MUTATE,
    ActionKind.DEPLOY: Risk.MUTATE,
    ActionKind.SET_GPU_RESOURCES: Risk.MUTATE,
    ActionKind.PAUSE_ROLLOUT: Risk.MUTATE,
    ActionKind.RESUME_ROLLOUT: Risk.MUTATE,
    ActionKind.PROMOTE_ROLLOUT: Risk.MUTATE,
    ActionKind.ABORT_ROLLOUT: Risk.MUTATE,
    ActionKind.CORDON_NODE: Risk.MUTATE,
    ActionKind.DRAIN_NODE: Risk.MUTATE,  # evictions are recoverable; policy asks two approvers
    ActionKind.RESTART_POD: Risk.MUTATE,  # its controller replaces the pod; a pod with none is refused
    ActionKind.PAGE_HUMAN: Risk.READ,
    ActionKind.NONE: Risk.READ,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChangeSpec(_Model):
    """What to change. Its canonical JSON is hashed; nothing else about a change is approved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: ActionKind
    cluster: str
    target: ObjectRef
    params: dict[str, Any] = Field(default_factory=dict)

    def digest(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


class TargetFingerprint(_Model):
    """The target's spec state when the change was proposed (not its status, which moves constantly)."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    spec_hash: str = Field(description="sha256 of the target's spec (template, replicas, taints...).")
    revision: str | None = Field(default=None, description="deployment.kubernetes.io/revision, for Deployments.")

    def same_as(self, other: TargetFingerprint) -> bool:
        """Same object (uid) with the same spec. Not the generation: the API bumps a Deployment's generation
        on any annotation change too, which alters nothing that runs."""
        return (self.uid, self.spec_hash) == (other.uid, other.spec_hash)


class BlastRadius(_Model):
    gpus: int = Field(ge=0, description="GPUs whose pods are restarted, added or removed.")
    replicas: int = Field(ge=0, description="Replicas restarted, added or removed.")
    capacity_drop: float = Field(ge=0, le=1, description="Share of the model's serving capacity removed.")
    models: list[str] = Field(default_factory=list)
    per_model: dict[str, float] = Field(default_factory=dict,
                                        description="Node changes: share of each model's serving capacity removed.")
    left_in_place: list[str] = Field(default_factory=list,
                                     description="Drains: pods the drain will not evict, each with the reason.")
    failing: int = Field(default=0, ge=0, description="Replicas available to Kubernetes but answering mostly "
                                                      "errors (read from Prometheus): not healthy capacity.")
    at_risk: dict[str, float] = Field(default_factory=dict,
                                      description="Cordons: share of each model's serving capacity on the node; it "
                                                  "keeps serving, a later drain would remove it.")
    ready_after: int | None = Field(default=None, ge=0,
                                    description="Pod restarts: Ready replicas of the pod's Deployment left while "
                                                "it is replaced (the policy's min_ready_replicas compares it).")


class ChangeStage(enum.StrEnum):
    """Where a change's flow (its LangGraph thread) stands; reported by `ChangeFlow` and shown by Slack.

    `ChangeStatus` is the ledger's record of the change; a stage also names the steps between records
    (executing, verifying, rolling back) and the flow's own outcomes (refused, unverified).
    """

    NEW = "new"
    AWAITING_APPROVAL = "awaiting_approval"
    DECIDED = "decided"  # a decision was recorded while an earlier one carries the change forward
    APPROVED = "approved"
    REJECTED = "rejected"
    DENIED = "denied"
    EXPIRED = "expired"
    REFUSED = "refused"
    EXECUTING = "executing"
    EXECUTING_ELSEWHERE = "executing_elsewhere"
    APPLIED = "applied"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    REGRESSION = "regression"
    INCONCLUSIVE = "inconclusive"
    UNVERIFIED = "unverified"
    FAILED = "failed"


class ChangeStatus(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    DENIED = "denied"  # by policy
    EXECUTING = "executing"
    APPLIED = "applied"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled_back"  # verification failed and the change was undone
    FAILED = "failed"
    EXPIRED = "expired"


class Approval(_Model):
    change_id: str
    approver: str = Field(description="The person (a name in the policy's `people:`): counted once per change.")
    identity: str = Field(default="", description="The identity they decided through: 'kubernetes:alice' "
                          "(verified by the API server), 'slack:U024BE7LH' (signed by Slack), or a name.")
    role: str
    decision: str = Field(pattern="^(approve|reject)$")
    at: dt.datetime
    spec_digest: str
    fingerprint: TargetFingerprint
    expires_at: dt.datetime
    via: str = Field(default="cli", description="cli | slack | eval")


class ChangeRequest(_Model):
    id: str
    spec: ChangeSpec
    spec_digest: str
    fingerprint: TargetFingerprint
    risk: str
    blast_radius: BlastRadius
    cost_delta_per_month: float | None = Field(default=None, description="USD; negative saves money.")
    diff: str = Field(default="", description="Server-side dry-run diff of the target's spec.")
    reason: str
    incident_id: str | None = None
    evidence: list[str] = Field(default_factory=list)
    requester: str
    created_at: dt.datetime
    status: ChangeStatus
    policy_rule: str = ""
    policy_reason: str = ""
    approvals_required: int = 0
    approver_roles: list[str] = Field(default_factory=list)
    approval_ttl_s: int = 900
    allow_self_approval: bool = Field(default=False, description="The policy rule lets the requester approve.")
    rollback_of: str | None = Field(default=None, description="Id of the change this one undoes, if any.")
    result: dict[str, Any] = Field(default_factory=dict)


def change_id(spec: ChangeSpec, fingerprint: TargetFingerprint, incident_id: str | None, attempt: int = 0) -> str:
    """Stable: proposing the same change on the same object (uid) in the same spec state for the same
    incident gives the same id, so a repeated proposal is the same request. `attempt` > 0 names a new
    request for a situation that recurred after an earlier one with this id had run its course."""
    key = f"{spec.digest()}|{fingerprint.uid}|{fingerprint.spec_hash}|{incident_id or ''}"
    h = hashlib.sha256((key + (f"|{attempt}" if attempt else "")).encode()).hexdigest()
    return f"chg-{h[:12]}"


# A proposal whose id matches one of these starts a new request: the earlier one was carried out (the
# target came back to the same state since), failed, or its approval lapsed. A pending, approved,
# rejected or denied one is returned as it is — the same question is not asked twice.
FINISHED = frozenset({ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK, ChangeStatus.FAILED, ChangeStatus.EXPIRED})
