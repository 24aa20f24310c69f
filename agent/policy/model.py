"""The policy file's schema (what users edit in `policies/*.yaml`) and the request/decision types."""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Effect(enum.StrEnum):
    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"


# The policy file names risks by label. The policy works on plain data and imports nothing from tools,
# so the vocabulary is spelled here; tests/unit/test_policy.py checks it equals tools.base.Risk's labels.
RiskName = Literal["read", "propose", "mutate", "destructive"]
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")


def parse_duration(text: str) -> dt.timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"duration {text!r} must look like 90s, 15m, 4h or 1d")
    n, unit = int(m.group(1)), m.group(2)
    return dt.timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Every listed field must match (lists mean any of). An empty match matches everything."""

    actions: list[str] = Field(default_factory=list, description="rollback, scale, deploy, cordon_node, ...")
    risks: list[RiskName] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    namespaces_not: list[str] = Field(default_factory=list, description="Matches when the namespace is NOT listed.")
    clusters: list[str] = Field(default_factory=list)
    target_kinds: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict, description="Target labels that must all be equal.")


class Approvers(_Strict):
    roles: list[str] = Field(min_length=1, description="Any of these roles may approve.")
    count: int = Field(default=1, ge=1, le=5, description="Distinct approvers needed.")
    allow_self_approval: bool = Field(default=False, description="Never true in shipped policies.")
    ttl: str = Field(default="15m", description="How long an approval stays valid.")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        parse_duration(v)
        return v


class Conditions(_Strict):
    max_gpus: int | None = Field(default=None, ge=0, description="Most GPUs the change may touch.")
    max_replicas_delta: int | None = Field(default=None, ge=0)
    max_capacity_drop: float | None = Field(default=None, ge=0, le=1,
                                            description="Largest share of a model's serving capacity it may remove.")
    windows: list[str] = Field(default_factory=list, description="Change windows (ids) the change must fall in.")


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    match: Match = Field(default_factory=Match)
    effect: Effect
    conditions: Conditions = Field(default_factory=Conditions)
    approvers: Approvers | None = None

    @model_validator(mode="after")
    def _approvers_when_needed(self) -> Rule:
        if self.effect == Effect.REQUIRE_APPROVAL and self.approvers is None:
            raise ValueError(f"rule {self.id}: effect require_approval needs an approvers block")
        return self


class Window(_Strict):
    id: str
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]]
    start: str = Field(pattern=r"^\d\d:\d\d$", description="UTC, HH:MM")
    end: str = Field(pattern=r"^\d\d:\d\d$", description="UTC, HH:MM (exclusive)")


class RateLimit(_Strict):
    max_changes_per_hour: int = Field(default=20, ge=0)
    max_changes_per_target_per_hour: int = Field(default=3, ge=0)


class Limits(_Strict):
    max_gpus_per_change: int = Field(default=64, ge=0, description="Blast radius: GPUs any one change may touch.")
    max_capacity_drop: float = Field(default=0.5, ge=0, le=1,
                                     description="Blast radius: share of a model's capacity one change may remove.")
    max_unschedulable_gpu_nodes: int | None = Field(
        default=None, ge=0, description="Fleet limit: GPU nodes that may be cordoned or drained at once, counting "
                                        "those already unschedulable and the change's own node. None: no limit.")
    drain_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces a drain may evict pods from; pods elsewhere (kube-system, "
                                          "monitoring) stay on the cordoned node. Empty: a drain evicts nothing.")
    min_ready_replicas: int = Field(
        default=1, ge=0, description="Pod restarts: Ready replicas of the pod's Deployment that must stay while it "
                                     "is replaced. 1 (the default) refuses restarting the last Ready replica, hung "
                                     "or not: until its replacement is Ready nothing answers at all. 0 allows it.")
    rate: RateLimit = Field(default_factory=RateLimit)


PERSON_NAME = r"^[a-z0-9][a-z0-9._-]*$"


class Person(_Strict):
    """One human approver and every identity that is theirs. Roles attach to the person, so an approval
    counts once per person whichever channel (CLI, Slack) it came through."""

    kubernetes: list[str] = Field(default_factory=list, description="Kubernetes usernames the API server "
                                  "reports for this person (SelfSubjectReview userInfo.username: a client "
                                  "certificate's CN, an OIDC username claim). How `opsagent changes approve` "
                                  "knows who runs it.")
    slack: list[str] = Field(default_factory=list, description="Slack user ids (U0…), as Slack signs them into "
                             "button clicks; never display names, which anyone can change.")
    roles: list[str] = Field(default_factory=list, description="Approval roles this person holds.")


class Policy(_Strict):
    version: Literal[1]
    description: str = ""
    people: dict[str, Person] = Field(default_factory=dict, description="person name → their identities and "
                                      "roles. An identity that is nobody's here may not approve anything.")
    windows: list[Window] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    rules: list[Rule]

    def window(self, wid: str) -> Window | None:
        return next((w for w in self.windows if w.id == wid), None)

    @model_validator(mode="before")
    @classmethod
    def _roles_moved_to_people(cls, data: object) -> object:
        if isinstance(data, dict) and "roles" in data:
            raise ValueError("`roles:` (role → identities) is replaced by `people:` (person → kubernetes "
                             "usernames, slack ids, roles): one person approving through two channels must "
                             "count once; see docs/policies.md")
        return data

    @model_validator(mode="after")
    def _identities_name_one_person(self) -> Policy:
        seen: dict[tuple[str, str], str] = {}
        for name, person in self.people.items():
            if not re.match(PERSON_NAME, name):
                raise ValueError(f"people: {name!r} must be lower-case letters, digits, '.', '_' or '-'")
            for channel, ids in (("kubernetes", person.kubernetes), ("slack", person.slack)):
                for ident in ids:
                    other = seen.setdefault((channel, ident), name)
                    if other != name:
                        raise ValueError(f"people: {channel} identity {ident!r} belongs to both {other} and {name}")
        return self

    def role_members(self, role: str) -> list[str]:
        """The people holding `role`."""
        return [name for name, p in self.people.items() if role in p.roles]


class Request(_Strict):
    """What a change asks to do, as plain data."""

    action: str
    risk: RiskName
    cluster: str = "default"
    namespace: str | None = None
    target_kind: str = ""
    target_name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    requester: str = Field(description="Who asked: 'agent:rules', 'user:alice'.")
    gpus: int = Field(default=0, ge=0, description="GPUs the change touches (blast radius).")
    replicas_delta: int = 0
    capacity_drop: float = Field(default=0.0, ge=0, le=1, description="Share of the model's capacity removed.")
    unschedulable_gpu_nodes_after: int = Field(
        default=0, ge=0, description="Node changes: GPU nodes unschedulable if this change is applied (those already "
                                     "cordoned plus the target, when it has GPUs).")
    ready_replicas_after: int | None = Field(
        default=None, ge=0, description="Pod restarts: Ready replicas of the pod's Deployment left while it is "
                                        "replaced. None for other changes.")
    at: dt.datetime
    changes_last_hour: int = 0
    target_changes_last_hour: int = 0


class Decision(_Strict):
    effect: Effect
    rule: str = Field(description="The rule that decided, or 'default-deny' / a limit's name.")
    reason: str
    approvers: Approvers | None = None
