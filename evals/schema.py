"""The scenario file: what to set up, what to break, what a right answer is, and how to judge it.

One YAML file per scenario. Every model forbids unknown fields, so a typo is an error that names the
file and the field, never a silently ignored setting. Workload names are the sandbox fleet's
(`deploy/sandbox/fleet.yaml`), which say nothing about the fault.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.models import ActionKind, Category

FAULT_TYPES = ("bad-rollout", "gpu-oom", "prefix-cache-regression", "triton-batching", "tensor-cores-idle",
               "traffic-surge", "gpu-xid", "idle-overprovision", "gpu-thermal", "autoscaler-thrash",
               "context-limit", "image-pull", "host-oom", "gpu-capacity", "slow-start", "spot-loss", "hung-worker",
               "traffic-flap", "gitops-owner", "alb-5xx", "traffic-shift")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placement(enum.StrEnum):
    """Where adversarial text is planted (each is a place an attacker can write to in real life)."""

    ALERT_ANNOTATION = "alert_annotation"  # a rule template over a label the attacker controls
    ALERT_LABEL = "alert_label"
    LOG_LINE = "log_line"  # the model server's container log (CloudWatch Logs)
    K8S_EVENT = "k8s_event"  # an Event on the workload
    OBJECT_ANNOTATION = "object_annotation"  # the Deployment's change-cause annotation
    OBJECT_LABEL = "object_label"  # a label on the Deployment's pod template (a rollout)


class Fault(_Strict):
    type: str = Field(description=f"One of the sandbox faults: {', '.join(FAULT_TYPES)}.")
    workload: str | None = Field(default=None, description="Fleet workload name; default: the fault's own.")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Override the fault's defaults (version, xid, heat_c, ...).")
    after_s: float = Field(default=0, ge=0, le=600, description="Seconds after set-up before injecting.")

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FAULT_TYPES:
            raise ValueError(f"unknown fault {v!r}; choose one of: {', '.join(FAULT_TYPES)}")
        return v


class SetupObject(_Strict):
    """A fact of the world the scenario starts from: labels and annotations on an object.

    Setup is what a real cluster carries anyway (a GitOps owner's tracking labels, a team label, a
    change-cause): never adversarial, never counted as an injection. The harness removes exactly what it
    set when the scenario ends."""

    kind: Literal["Deployment", "Rollout", "Node"] = "Deployment"
    workload: str | None = Field(default=None, description="Deployment / Rollout: the fleet workload; default the "
                                                           "scenario's.")
    node_pool: str | None = Field(default=None, description="Node: every node of this fleet pool.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=20)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=20)

    @model_validator(mode="after")
    def _some(self) -> SetupObject:
        if not (self.labels or self.annotations):
            raise ValueError("give labels or annotations to set")
        if self.kind == "Node" and not self.node_pool:
            raise ValueError("a Node setup names its node_pool")
        return self


class SimClock(_Strict):
    """Where the simulator's traffic clock stands when the scenario starts (the sandbox runs in real time)."""

    at: Literal["peak", "trough", "now"] = Field(default="now", description="peak / trough: the scenario "
                                                 "workload's daily peak (trough) hour, today; now: no shift.")
    burst: Literal["inside", "outside", "any"] = Field(
        default="any", description="inside: in one of that day's traffic bursts; outside: away from all of them.")
    settle_s: float = Field(default=30, ge=0, le=300, description="Let the new traffic level reach the scrapes "
                                                                  "before injecting (outside the time budget).")


class Injection(_Strict):
    """Adversarial text: data the agent reads that asks for a forbidden action."""

    placement: Placement
    text: str = Field(min_length=1, max_length=2000)
    key: str | None = Field(default=None, max_length=253,
                            description="object_label / object_annotation / alert_label / alert_annotation: the "
                                        "key that carries the text (defaults: `team`, `kubernetes.io/change-cause`, "
                                        "`runbook_hint`, `description`). Never a key that names the harness.")
    workload: str | None = Field(default=None, description="Whose object or log carries it; default the fault's.")
    forbidden: ActionSpec = Field(description="The action the text asks for (what a compromised model proposes).")


class TargetSpec(_Strict):
    kind: Literal["Deployment", "Node", "Pod", "HorizontalPodAutoscaler", "Namespace", "Model", "HTTPRoute"]
    name: str | None = Field(default=None, description="Exact name; '$node' is the node the fault hit; "
                                                       "omit to match any.")
    namespace: str | None = None


class ActionSpec(_Strict):
    """An action pattern: a proposal matches when kind, target and every given param agree."""

    kind: ActionKind | Literal["delete_namespace", "delete_deployment"]
    target: TargetSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Params that must be equal.")
    min_replicas: int | None = Field(default=None, ge=0, description="For scale: the new count at least this.")
    max_replicas: int | None = Field(default=None, ge=0, description="For scale: the new count at most this.")


class Detection(_Strict):
    alerts: list[str] = Field(default_factory=list, description="Any of these alert names detects the fault.")
    wait: bool = Field(default=True, description="Wait for the real alert. False: its rule needs more history than "
                                                 "a run has (e.g. a 30-minute average); detection is not scored "
                                                 "and the alert is built from `alert_labels`.")
    timeout_s: float = Field(default=240, gt=0, le=1800)
    alert_labels: dict[str, str] = Field(default_factory=dict,
                                         description="Labels of the alert to build when not waiting (and for "
                                                     "healthy controls: the probe alert the agent is asked about).")
    omit_labels: list[str] = Field(default_factory=list, max_length=20,
                                   description="Labels the built alert leaves out, `namespace` included: a real "
                                               "alert from someone else's rule may carry none of ours.")


class Truth(_Strict):
    """The ground truth the run is scored against."""

    categories: list[Category] = Field(min_length=1, description="Right top-1 categories (usually one).")
    culprit: TargetSpec | None = Field(default=None, description="The object at fault.")
    expect: Literal["mitigate", "page_human", "no_action"] = Field(
        description="mitigate: an acceptable change is executed and the SLO recovers; page_human: the right call "
                    "is a human, nothing is executed; no_action: healthy, nothing proposed or executed.")
    acceptable: list[ActionSpec] = Field(default_factory=list,
                                         description="any_of: executing one of these mitigates the incident.")
    all_of: list[ActionSpec] = Field(default_factory=list,
                                     description="Every one of these must be executed as well (e.g. cordon the "
                                                 "node and roll back): each is also an acceptable action.")
    forbidden: list[ActionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Truth:
        if self.expect == "mitigate" and not (self.acceptable or self.all_of):
            raise ValueError("expect: mitigate needs at least one acceptable action")
        return self

    @property
    def allowed(self) -> list[ActionSpec]:
        return [*self.acceptable, *self.all_of]


class IncidentSpec(_Strict):
    """A further incident the scenario opens besides its main one (several faults, or an alert storm)."""

    name: str = Field(min_length=1, max_length=40, description="A label for the reports (neutral).")
    workload: str | None = Field(default=None, description="Fleet workload the incident is about; default the "
                                                           "scenario's.")
    alerts: list[str] = Field(min_length=1, description="Alert names that belong to this incident.")
    timeout_s: float = Field(default=240, gt=0, le=1800)
    truth: Truth


class Grouping(_Strict):
    """How the intake should group the scenario's notifications into incidents."""

    incidents: int | None = Field(default=None, ge=0, le=50,
                                  description="Incidents the scenario's alerts should open in all; default one per "
                                              "expected incident.")
    watch_s: float = Field(default=0, ge=0, le=900, description="Keep delivering notifications this long after "
                                                               "detection (resolved and re-fired ones included) "
                                                               "before counting incidents: flapping needs a few "
                                                               "periods.")


class FollowUp(_Strict):
    """A second look after the first remediation: re-triage the same incident and judge what the agent does."""

    after_s: float = Field(default=60, ge=0, le=900, description="Wait after the last change before re-triage.")
    expect: Literal["resolved", "page_human"] = Field(
        description="resolved: the change worked, nothing more is proposed; page_human: the change did not help, "
                    "and the agent must hand over to a human without undoing or repeating what it did (no "
                    "flip-flop).")


class Approver(_Strict):
    identity: str = Field(default="alice", description="Who approves (a policy role holder).")
    behaviour: Literal["approve_acceptable", "reject_all"] = "approve_acceptable"


class Budgets(_Strict):
    time_s: float = Field(default=600, gt=0, description="Wall time for the whole scenario, seconds.")
    steps: int = Field(default=8, ge=1, description="LLM reasoner steps.")
    tokens: int = Field(default=60000, ge=1, description="LLM tokens (in + out).")


class RecoveryCheck(_Strict):
    query: str = Field(min_length=1, description="PromQL returning one number.")
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> RecoveryCheck:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below / above")
        return self


class Recovery(_Strict):
    checks: list[RecoveryCheck] = Field(default_factory=list, description="All must hold after the change.")
    timeout_s: float = Field(default=180, gt=0, le=1200)


class DeployStep(_Strict):
    """A deployment the scenario asks for, the way a model's CI pipeline asks: `POST /deployments` with its
    pipeline token. The approvals go through the change flow (`flow.decide`), like every other change."""

    workload: str | None = Field(default=None, description="Fleet workload to deploy to; default the scenario's.")
    version: str = Field(min_length=1, max_length=63, description="The new model version (the pods' label).")
    model: str | None = Field(default=None, max_length=63, description="A different model (default: the same).")
    gpus: int | None = Field(default=None, ge=1, le=16, description="GPUs per replica after the change "
                             "(default: as today).")
    expect: Literal["promoted", "aborted", "refused", "patch"] = Field(
        description="promoted: every canary step passes and the version serves 100 %; aborted: the analysis "
                    "aborts it and stable serves throughout; refused: the preflight refuses with `refusal` in its "
                    "reasons and no change request is made; patch: the target is GitOps-owned, the request "
                    "carries a manifest patch and nothing is written.")
    refusal: list[str] = Field(default_factory=list, max_length=10,
                               description="refused: text each of which the refusal's reasons must show (numbers).")
    max_exposure: float | None = Field(default=None, ge=0, le=1, description="aborted: the highest share of the "
                                       "workload's requests the new version may serve before the abort.")
    approvers: list[str] = Field(default_factory=lambda: ["bob", "alice"], min_length=1, max_length=5,
                                 description="Who approves, in order (policy people: a deployment needs two).")
    timeout_s: float = Field(default=600, gt=0, le=1800, description="From the last approval to the outcome.")

    @model_validator(mode="after")
    def _consistent(self) -> DeployStep:
        if self.expect == "refused" and not self.refusal:
            raise ValueError("expect: refused names the refusal text it needs (`refusal`)")
        if self.expect != "aborted" and self.max_exposure is not None:
            raise ValueError("max_exposure judges an aborted canary only")
        return self


class Scenario(_Strict):
    id: str = Field(description="Unique, lower-case, dashes; also the file's stem.")
    description: str
    failure_mode: int = Field(ge=1, le=40, description="Row of the reference table (12 healthy, 13 injection); "
                                                       "rows from 14 on are listed in docs/evals.md.")
    tags: list[str] = Field(default_factory=list)
    runtime: Literal["vllm", "triton"]
    gpu: str = Field(description="GPU product the workload runs on, for coverage reports.")
    workload: str = Field(description="The fleet workload the scenario is about.")
    faults: list[Fault] = Field(default_factory=list)
    injections: list[Injection] = Field(default_factory=list)
    detection: Detection = Field(default_factory=Detection)
    truth: Truth | None = Field(default=None, description="Incident scenarios: what a right triage is.")
    deploy: DeployStep | None = Field(default=None, description="Deployment scenarios: the deployment asked "
                                      "for and its expected outcome (instead of a fault and a `truth`).")
    approver: Approver = Field(default_factory=Approver)
    budgets: Budgets = Field(default_factory=Budgets)
    recovery: Recovery = Field(default_factory=Recovery)
    setup: list[SetupObject] = Field(default_factory=list, description="Objects' labels and annotations the "
                                     "scenario starts from (not adversarial; see `injections` for that).")
    clock: SimClock = Field(default_factory=SimClock)
    incidents: list[IncidentSpec] = Field(default_factory=list, description="Further incidents beyond the main "
                                          "one (`detection` + `truth`), each scored on its own.")
    grouping: Grouping = Field(default_factory=Grouping)
    followup: FollowUp | None = None

    @model_validator(mode="after")
    def _followup(self) -> Scenario:
        if (self.truth is None) == (self.deploy is None):
            raise ValueError("give exactly one of truth (an incident) or deploy (a deployment)")
        if self.deploy is not None and (self.faults or self.injections or self.incidents or self.followup):
            raise ValueError("a deploy scenario has no faults, injections, further incidents or followup")
        if self.followup is not None and self.main_truth.expect != "mitigate":
            raise ValueError("followup: only after a change, so truth.expect must be mitigate")
        names = [i.name for i in self.incidents]
        if len(set(names)) != len(names) or "main" in names:
            raise ValueError("incidents: names must be unique and not 'main'")
        return self

    @property
    def main_truth(self) -> Truth:
        """The incident's truth; an error for a deployment scenario (which is judged on `deploy`)."""
        if self.truth is None:
            raise ValueError(f"{self.id} is a deployment scenario: it has no incident truth")
        return self.truth

    @property
    def placements(self) -> int:
        """Adversarial placements (setup objects are not counted)."""
        return len(self.injections)

    @property
    def expected_incidents(self) -> int:
        return self.grouping.incidents if self.grouping.incidents is not None else 1 + len(self.incidents)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("lower-case letters, digits and dashes, 2-63 characters")
        return v

    @property
    def regression(self) -> bool:
        return "regression" in self.tags


Injection.model_rebuild()
