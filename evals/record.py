"""What one scenario run did, as data: the record a live run writes and a replay re-scores.

The scorer reads only this record and the scenario, so a live run, its recording and its replay are
scored by the same code.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evals.tapes import Tape


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChangeOutcome(_Rec):
    """One change request the run opened, and what became of it."""

    change_id: str
    source: Literal["triage", "model"] = Field(description="triage: a runbook proposal; model: what a (compromised) "
                                                           "model asked for directly.")
    action: str
    target: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    policy_effect: str = Field(description="allow | require_approval | deny, at proposal time.")
    policy_rule: str = ""
    policy_request: dict[str, Any] | None = Field(default=None, description="The policy input, for replay.")
    approver_decision: Literal["approve", "reject", "none"] = "none"
    approvals: int = 0
    executed: bool = False
    status: str = ""
    verification: str | None = None
    verification_detail: str | None = None
    stage: str | None = Field(default=None, description="Where the change flow ended: verified, rolled_back, ...")
    rolled_back_by: str | None = Field(default=None, description="The automatic rollback's change id, if any.")
    flow: list[str] = Field(default_factory=list, description="The change flow's events, in order.")
    error: str | None = None


class Mutation(_Rec):
    """A change of an object's spec seen on the API between the agent's start and its end."""

    object: str  # deployment/ns/name or node/name
    before: dict[str, Any]
    after: dict[str, Any]
    explained_by: str | None = Field(default=None, description="The executed, approved change request, if any.")


class AuditFacts(_Rec):
    chain_ok: bool
    records: int
    missing: list[str] = Field(default_factory=list, description="Actions without their audit records.")
    refusals: int = 0
    refusals_audited: int = 0


class LlmFacts(_Rec):
    provider: str
    model: str
    steps: int
    input_tokens: int
    output_tokens: int
    tool_calls: int
    refused_calls: int
    fallback: str | None = None


class Delivered(_Rec):
    """One Alertmanager notification, as the harness delivered it to the agent's intake."""

    received: dt.datetime
    body: dict[str, Any]
    incident_id: str = Field(default="", description="The incident the intake merged it into.")


class IncidentRun(_Rec):
    """A further incident of the scenario (`Scenario.incidents`): what the intake made of it and the triage."""

    name: str
    incident_id: str | None = None
    detected: bool | None = None
    time_to_detect_s: float | None = None
    triage_now: dt.datetime | None = None
    report: dict[str, Any] | None = None
    changes: list[ChangeOutcome] = Field(default_factory=list)


class FollowUpRun(_Rec):
    """The re-triage of the main incident after its first remediation ran."""

    triage_now: dt.datetime | None = None
    report: dict[str, Any] | None = None
    executed: list[ChangeOutcome] = Field(default_factory=list, description="The changes already executed for it.")
    delivered_before: int = Field(default=0, description="How many of the run's notifications the first triage "
                                                         "had; the rest came in before the re-triage.")


class DeployRun(_Rec):
    """A deployment scenario's request (as the CI API answered it) and what the canary did."""

    target: str = Field(description="NAMESPACE/NAME.")
    kind: str = Field(default="", description="Rollout or Deployment, as the agent found it.")
    http_status: int = Field(default=0, description="The API's answer to the POST (202, 422, 404, ...).")
    answer: dict[str, Any] = Field(default_factory=dict, description="The API's last answer (POST, then GET).")
    change_id: str | None = None
    outcome: Literal["promoted", "aborted", "refused", "patch", "pending", "other"] = "other"
    reasons: list[str] = Field(default_factory=list, description="A refusal's reasons, with the numbers.")
    stored_changes: int = Field(default=0, description="Change requests in the ledger after the request.")
    refusal_audited: bool = False
    diff: str = Field(default="", description="The change's diff (a GitOps-owned target: the manifest patch).")
    stable_before: str | None = Field(default=None, description="The stable ReplicaSet's pod-template hash.")
    stable_after: str | None = None
    canary_hash: str | None = None
    weights: list[int] = Field(default_factory=list, description="Canary weights seen, in order.")
    served_new: float | None = Field(default=None, description="Requests the new version's pods served.")
    served_total: float | None = Field(default=None, description="Requests the workload served meanwhile.")
    approval_to_outcome_s: float | None = Field(default=None, description="From the last approval to the end.")
    preflight_inputs: dict[str, Any] = Field(default_factory=dict, description="The target, nodes and pods the "
                                             "preflight read (trimmed to what it uses), for replay.")
    preflight_ok: bool | None = None

    @property
    def exposure(self) -> float | None:
        """The share of the workload's requests the new version served."""
        if self.served_new is None or not self.served_total:
            return None
        return self.served_new / self.served_total


class RunRecord(_Rec):
    scenario: str
    iteration: int
    mode: Literal["live", "record", "replay"]
    reasoner: str
    started: dt.datetime
    wall_s: float = 0.0
    run_key: str = Field(description="Suffix that keeps this run's incident apart from every other run's.")
    fault_node: str | None = None
    detected: bool | None = None
    time_to_detect_s: float | None = None
    notification: dict[str, Any] | None = Field(default=None, description="The webhook body triaged (as delivered, "
                                                                          "with injected text).")
    triage_now: dt.datetime | None = None
    scrape_interval_s: float = Field(default=5.0, description="Prometheus scrape interval the run's queries were "
                                                              "sized for (rate windows); replay uses the same.")
    report: dict[str, Any] | None = None
    time_to_triage_s: float | None = None
    changes: list[ChangeOutcome] = Field(default_factory=list)
    time_to_mitigate_s: float | None = None
    recovery_ok: bool | None = None
    recovery_detail: str = ""
    mutations: list[Mutation] = Field(default_factory=list)
    audit: AuditFacts | None = None
    llm: LlmFacts | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list, description="Actions the model asked for.")
    errors: list[str] = Field(default_factory=list)
    notifications: list[Delivered] = Field(default_factory=list, description="Every notification delivered to "
                                           "the intake during the run, in order (resolved and re-fired ones too).")
    incidents: list[IncidentRun] = Field(default_factory=list, description="The scenario's further incidents.")
    grouping: dict[str, list[str]] = Field(default_factory=dict, description="Incident id → the scenario's alerts "
                                           "(`alertname/namespace-or-node`) the intake put in it.")
    followup: FollowUpRun | None = None
    scenario_s: float | None = Field(default=None, description="Wall time from injection to the agent's last "
                                     "action: what the time budget judges (reset, settling, audit excluded).")
    deploy: DeployRun | None = Field(default=None, description="A deployment scenario's request and outcome.")


class Recording(_Rec):
    """A live run kept for replay: its record and the read tools' outputs."""

    record: RunRecord
    tape: Tape
