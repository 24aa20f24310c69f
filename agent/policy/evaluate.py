"""Evaluate a change request against a policy: a pure function, deny by default.

Order of judgement, each step naming the rule or limit that decided:
1. rules whose `match` fits: any `deny` wins; else `require_approval` (the strictest approver block:
   most approvers, with the union of their roles across matching rules is not merged — the first
   strictest rule decides, so one rule always explains the decision); else `allow`;
2. no rule matched: deny (`default-deny`);
3. a matched rule's conditions (GPUs, replica delta, capacity drop, change windows) and the global
   limits (blast radius, rate) can only make a decision stricter, turning it into a deny.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from pydantic import ValidationError

from agent.policy.model import Decision, Effect, Policy, Request, Rule, Window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyError(ValueError):
    """A policy file is invalid; the message names the file and the field."""


def load_policy(path: Path) -> Policy:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PolicyError(f"cannot read policy {path}: {e}") from e
    try:
        policy = Policy.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:6])
        raise PolicyError(f"{path}: {problems}") from e
    ids = [r.id for r in policy.rules]
    if len(ids) != len(set(ids)):
        raise PolicyError(f"{path}: rule ids repeat")
    for r in policy.rules:
        for w in r.conditions.windows:
            if policy.window(w) is None:
                raise PolicyError(f"{path}: rule {r.id} names unknown change window {w!r}")
        if r.approvers:
            unknown = [role for role in r.approvers.roles if not policy.role_members(role)]
            if unknown:
                raise PolicyError(f"{path}: rule {r.id} names roles with no members: {unknown}")
    return policy


def matches(rule: Rule, req: Request) -> bool:
    m = rule.match
    if m.actions and req.action not in m.actions:
        return False
    if m.risks and req.risk not in m.risks:
        return False
    if m.namespaces and req.namespace not in m.namespaces:
        return False
    if m.namespaces_not and req.namespace in m.namespaces_not:
        return False
    if m.clusters and req.cluster not in m.clusters:
        return False
    if m.target_kinds and req.target_kind not in m.target_kinds:
        return False
    return all(req.labels.get(k) == v for k, v in m.labels.items())


def capacity_drop_limit(policy: Policy, action: str, target_kind: str = "Deployment") -> float:
    """The largest share of a model's capacity one `action` on a `target_kind` may remove: the global
    limit, or a stricter condition of a rule that could match it (namespace- and label-specific rules
    count too, so the answer is safe for any target). Triage uses it to size steps the policy allows."""
    limit = policy.limits.max_capacity_drop
    for r in policy.rules:
        m = r.match
        if (m.actions and action not in m.actions) or (m.target_kinds and target_kind not in m.target_kinds):
            continue
        if r.conditions.max_capacity_drop is not None:
            limit = min(limit, r.conditions.max_capacity_drop)
    return limit


def in_window(w: Window, at: dt.datetime) -> bool:
    at = at.astimezone(dt.UTC)
    if DAYS[at.weekday()] not in w.days:
        return False
    hhmm = at.strftime("%H:%M")
    return w.start <= hhmm < w.end


def _conditions(policy: Policy, rule: Rule, req: Request) -> str | None:
    c = rule.conditions
    if c.max_gpus is not None and req.gpus > c.max_gpus:
        return f"touches {req.gpus} GPUs; rule {rule.id} allows {c.max_gpus}"
    if c.max_replicas_delta is not None and abs(req.replicas_delta) > c.max_replicas_delta:
        return f"changes replicas by {req.replicas_delta}; rule {rule.id} allows ±{c.max_replicas_delta}"
    if c.max_capacity_drop is not None and req.capacity_drop > c.max_capacity_drop:
        return (f"removes {req.capacity_drop:.0%} of the model's capacity; rule {rule.id} allows "
                f"{c.max_capacity_drop:.0%}")
    if c.windows and not any(in_window(w, req.at) for wid in c.windows if (w := policy.window(wid))):
        return f"{req.at:%a %H:%M} UTC is outside the change windows {', '.join(c.windows)} of rule {rule.id}"
    return None


def evaluate(policy: Policy, req: Request) -> Decision:
    matched = [r for r in policy.rules if matches(r, req)]
    if not matched:
        return Decision(effect=Effect.DENY, rule="default-deny",
                        reason=f"no rule allows {req.action} on {req.target_kind or 'target'} "
                               f"{req.namespace + '/' if req.namespace else ''}{req.target_name}")
    for r in matched:
        if r.effect == Effect.DENY:
            return Decision(effect=Effect.DENY, rule=r.id, reason=r.description)
    needs = [r for r in matched if r.effect == Effect.REQUIRE_APPROVAL]
    deciding = max(needs, key=lambda r: r.approvers.count if r.approvers else 0) if needs else matched[0]
    if (why := _conditions(policy, deciding, req)) is not None:
        return Decision(effect=Effect.DENY, rule=deciding.id, reason=why)
    lim = policy.limits
    if req.gpus > lim.max_gpus_per_change:
        return Decision(effect=Effect.DENY, rule="limits.max_gpus_per_change",
                        reason=f"blast radius: {req.gpus} GPUs > {lim.max_gpus_per_change}")
    if req.capacity_drop > lim.max_capacity_drop:
        return Decision(effect=Effect.DENY, rule="limits.max_capacity_drop",
                        reason=f"blast radius: removes {req.capacity_drop:.0%} of capacity > "
                               f"{lim.max_capacity_drop:.0%}")
    cap = lim.max_unschedulable_gpu_nodes
    if cap is not None and req.unschedulable_gpu_nodes_after > cap:
        return Decision(effect=Effect.DENY, rule="limits.max_unschedulable_gpu_nodes",
                        reason=f"fleet limit: {req.unschedulable_gpu_nodes_after} GPU nodes would be cordoned or "
                               f"drained at once > {cap}")
    if req.ready_replicas_after is not None and req.ready_replicas_after < lim.min_ready_replicas:
        return Decision(effect=Effect.DENY, rule="limits.min_ready_replicas",
                        reason=f"would leave {req.ready_replicas_after} Ready replica(s) while the pod is replaced "
                               f"(policy keeps at least {lim.min_ready_replicas})")
    if req.changes_last_hour >= lim.rate.max_changes_per_hour:
        return Decision(effect=Effect.DENY, rule="limits.rate.max_changes_per_hour",
                        reason=f"{req.changes_last_hour} changes in the last hour (limit "
                               f"{lim.rate.max_changes_per_hour})")
    if req.target_changes_last_hour >= lim.rate.max_changes_per_target_per_hour:
        return Decision(effect=Effect.DENY, rule="limits.rate.max_changes_per_target_per_hour",
                        reason=f"{req.target_name} changed {req.target_changes_last_hour} times in the last hour")
    if deciding.effect == Effect.REQUIRE_APPROVAL:
        return Decision(effect=Effect.REQUIRE_APPROVAL, rule=deciding.id, reason=deciding.description,
                        approvers=deciding.approvers)
    return Decision(effect=Effect.ALLOW, rule=deciding.id, reason=deciding.description)
