"""The shipped policy, table-style: what is allowed, what needs whom, what is refused and why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.policy.evaluate import PolicyError, evaluate, load_policy
from agent.policy.model import Effect, Limits, Request

POLICY = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")
MONDAY_10 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
SATURDAY_10 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def req(action: str, risk: str = "mutate", ns: str | None = "llm-prod", kind: str = "Deployment",
        **kw: object) -> Request:
    base: dict[str, object] = {"action": action, "risk": risk, "namespace": ns, "target_kind": kind,
                               "target_name": "chat-primary", "requester": "agent:rules", "at": MONDAY_10}
    return Request.model_validate(base | kw)


@pytest.mark.parametrize(("request_", "effect", "rule", "count"), [
    (req("prometheus_query_range", risk="read", ns=None, kind=""), Effect.ALLOW, "reads", None),
    (req("rollback"), Effect.REQUIRE_APPROVAL, "rollback", 1),
    (req("scale", replicas_delta=2, gpus=8), Effect.REQUIRE_APPROVAL, "scale", 1),
    (req("deploy"), Effect.REQUIRE_APPROVAL, "deploy", 2),
    (req("drain_node", ns=None, kind="Node"), Effect.REQUIRE_APPROVAL, "drain", 2),
    (req("cordon_node", ns=None, kind="Node"), Effect.REQUIRE_APPROVAL, "cordon", 1),
    (req("rollback", ns="platform"), Effect.DENY, "outside-serving-namespaces", None),
    (req("delete_namespace", risk="destructive", kind="Namespace"), Effect.DENY, "destructive", None),
    (req("patch_rbac", kind="ClusterRole", ns=None), Effect.DENY, "default-deny", None),
    (req("scale", capacity_drop=1.0, replicas_delta=-3), Effect.DENY, "scale", None),  # scale to zero
    (req("deploy", at=SATURDAY_10), Effect.DENY, "deploy", None),  # outside the change window
    (req("scale", gpus=64), Effect.DENY, "scale", None),  # blast radius of the rule
    (req("rollback", gpus=40), Effect.DENY, "limits.max_gpus_per_change", None),
    (req("rollback", changes_last_hour=20), Effect.DENY, "limits.rate.max_changes_per_hour", None),
    (req("rollback", target_changes_last_hour=3), Effect.DENY, "limits.rate.max_changes_per_target_per_hour", None),
    # Node changes: the capacity drop of the pods on the node, and one GPU node out of service at a time.
    (req("drain_node", ns=None, kind="Node", capacity_drop=1.0, gpus=8, unschedulable_gpu_nodes_after=1),
     Effect.DENY, "limits.max_capacity_drop", None),
    (req("drain_node", ns=None, kind="Node", capacity_drop=0.25, gpus=8, unschedulable_gpu_nodes_after=1),
     Effect.REQUIRE_APPROVAL, "drain", 2),
    (req("drain_node", ns=None, kind="Node", capacity_drop=0.25, gpus=8, unschedulable_gpu_nodes_after=2),
     Effect.DENY, "limits.max_unschedulable_gpu_nodes", None),
    (req("cordon_node", ns=None, kind="Node", gpus=8, unschedulable_gpu_nodes_after=2),
     Effect.DENY, "limits.max_unschedulable_gpu_nodes", None),
    # Pod restarts: one approval; never the last Ready replica; never outside the serving namespaces.
    (req("restart_pod", kind="Pod", gpus=4, ready_replicas_after=2), Effect.REQUIRE_APPROVAL, "restart-pod", 1),
    (req("restart_pod", kind="Pod", gpus=4, ready_replicas_after=0), Effect.DENY, "limits.min_ready_replicas", None),
    (req("restart_pod", kind="Pod", ns="kube-system", ready_replicas_after=2), Effect.DENY,
     "outside-serving-namespaces", None),
    (req("restart_pod", kind="Pod", capacity_drop=1.0, ready_replicas_after=1), Effect.DENY, "restart-pod", None),
    (req("restart_pod", kind="Deployment", ready_replicas_after=2), Effect.DENY, "default-deny", None),
])
def test_default_policy(request_: Request, effect: Effect, rule: str, count: int | None) -> None:
    d = evaluate(POLICY, request_)
    assert (d.effect, d.rule) == (effect, rule), d.reason
    assert d.reason
    if count is not None:
        assert d.approvers is not None and d.approvers.count == count and not d.approvers.allow_self_approval


@pytest.mark.parametrize(("text", "words"), [
    ("version: 1\nrules:\n  - {id: a, description: x, effect: allow, mach: {}}\n", "mach"),
    ("version: 1\nrules:\n  - {id: a, description: x, effect: require_approval}\n", "approvers"),
    ("version: 2\nrules: []\n", "version"),
    ("version: 1\nrules:\n  - {id: a, description: x, effect: maybe}\n", "effect"),
    ("version: 1\npeople: {}\nrules:\n  - id: a\n    description: x\n    effect: require_approval\n"
     "    approvers: {roles: [sre]}\n", "no members"),
    ("version: 1\nrules: [\n", "cannot read"),
])
def test_bad_policy_files_fail_with_the_reason(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=words):
        load_policy(path)


def test_the_capacity_drop_limit_triage_sizes_steps_with_is_the_strictest_that_could_apply() -> None:
    from agent.policy.evaluate import capacity_drop_limit
    from agent.policy.model import Conditions, Match, Rule

    assert capacity_drop_limit(POLICY, "scale") == 0.5  # the scale rule and the global limit agree
    strict = POLICY.model_copy(update={"rules": [*POLICY.rules, Rule(
        id="gpu-pool-scale", description="t", effect=Effect.REQUIRE_APPROVAL, approvers=POLICY.rules[-1].approvers
        or next(r.approvers for r in POLICY.rules if r.approvers),
        match=Match(actions=["scale"], namespaces=["research"], target_kinds=["Deployment"]),
        conditions=Conditions(max_capacity_drop=0.2))]})
    assert capacity_drop_limit(strict, "scale") == 0.2  # a namespace-specific rule counts: safe for any target
    assert capacity_drop_limit(strict, "scale", "StatefulSet") == 0.5
    assert capacity_drop_limit(strict, "rollback") == 0.5


def test_the_policy_names_exactly_the_risks_tools_declare() -> None:
    # The policy evaluator imports nothing from tools (it works on plain data), so its vocabulary is
    # spelled out; it must stay the labels of the one Risk enum, or a rule could never match a risk.
    from typing import get_args

    from agent.policy.model import RiskName
    from tools.base import Risk

    assert get_args(RiskName) == tuple(r.label for r in Risk)


def test_the_default_policy_lets_drains_evict_only_from_the_serving_namespaces() -> None:
    assert POLICY.limits.max_unschedulable_gpu_nodes == 1
    assert set(POLICY.limits.drain_namespaces) == {"llm-prod", "search", "code", "research"}
    assert "kube-system" not in POLICY.limits.drain_namespaces and "monitoring" not in POLICY.limits.drain_namespaces


def test_a_policy_may_allow_restarting_the_last_ready_replica_but_the_default_is_to_keep_it() -> None:
    last = req("restart_pod", kind="Pod", ready_replicas_after=0)
    assert Limits().min_ready_replicas == 1, "a policy file that says nothing keeps the last Ready replica"
    allows = POLICY.model_copy(update={"limits": POLICY.limits.model_copy(update={"min_ready_replicas": 0})})
    assert evaluate(allows, last).effect == Effect.REQUIRE_APPROVAL
    assert evaluate(POLICY, last).effect == Effect.DENY
