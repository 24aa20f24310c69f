"""Deployment requests, pure parts: the new template's parameters, the preflight on a pool, the write call
for a Rollout, its inverse, the GitOps refusal and the merge patch the executor sends."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.change.deploy import DeployRefused, DeployRequest, checks, deploy_params, parse_target
from agent.change.executor.inverse import inverse
from agent.change.executor.owned import gitops_patch
from agent.change.executor.requests import tool_call
from agent.change.models import BlastRadius, ChangeRequest, ChangeSpec, ChangeStatus, TargetFingerprint
from agent.models import ActionKind, ObjectRef
from tools.k8s_write.ops import SetTemplateInput, changed_template, merge_patch
from tools.rightsize.catalog import PriceCatalog

CATALOG = PriceCatalog.load(Path(__file__).resolve().parents[2] / "tools" / "rightsize" / "price-catalog.yaml")
POOL = "opsagent.dev/node-pool"
ARGS = ["--model", "/models/llama-3.1-8b-instruct/2025.05.2", "--served-model-name", "llama-3.1-8b-instruct",
        "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.90", "--max-model-len", "16384"]


def workload(kind: str = "Rollout", replicas: int = 10, args: list[str] | None = None) -> dict[str, Any]:
    strategy = ({"canary": {"maxSurge": 1, "maxUnavailable": 0, "steps": [{"setWeight": 10}, {"pause": {}}]}}
                if kind == "Rollout" else {})
    return {"kind": kind, "metadata": {"name": "assist-mini", "namespace": "llm-prod", "uid": "u1",
                                       "resourceVersion": "7", "labels": {}},
            "spec": {"replicas": replicas, "strategy": strategy, "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "assist-mini", "model": "llama-3.1-8b-instruct",
                                        "model-version": "2025.05.2"}},
                "spec": {"nodeSelector": {POOL: "l4"},
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                         "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.10.1",
                                         "args": list(args if args is not None else ARGS),
                                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def node(name: str, pool: str = "l4", gpus: int = 1, instance: str = "g6.2xlarge", mib: int = 23034) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {POOL: pool, "node.kubernetes.io/instance-type": instance,
                                                  "nvidia.com/gpu.memory": str(mib)}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, on: str, gpus: int = 1, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "llm-prod"},
            "spec": {"nodeName": on, "containers": [{"name": "s", "resources": {
                "limits": {"nvidia.com/gpu": str(gpus)}}}]}, "status": {"phase": phase}}


def pool(total: int, busy: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [node(f"l4-{i}") for i in range(total)]
    return nodes, [pod(f"p{i}", f"l4-{i}") for i in range(busy)]


def test_a_version_changes_the_label_and_the_model_path_and_nothing_else() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", version="2025.09.0")
    params, summary = deploy_params(req, "Rollout", workload())
    assert params["labels"] == {"model-version": "2025.09.0"}
    assert params["args"][1] == "/models/llama-3.1-8b-instruct/2025.09.0"
    assert params["args"][2:] == ARGS[2:]
    assert "image" not in params and params["strategy"] == "canary"
    assert summary == "version 2025.05.2 → 2025.09.0 (canary)"


def test_the_wrong_strategy_for_the_target_is_refused_with_why() -> None:
    with pytest.raises(DeployRefused, match="plain Deployment"):
        deploy_params(DeployRequest(namespace="a", name="b", image="x", strategy="canary"), "Deployment",
                      workload("Deployment"))
    with pytest.raises(DeployRefused, match="no container 'sidecar'"):
        deploy_params(DeployRequest(namespace="a", name="b", image="x", container="sidecar"), "Rollout", workload())


@pytest.mark.parametrize("bad", [
    {},  # nothing to deploy
    {"version": "2025 09"},  # not a label value
    {"version": "1", "strategy": "blue-green"},
    {"version": "1", "namespace": "Bad_NS"},
    {"version": "1", "gpus": 0},
])
def test_bad_requests_are_refused_by_the_model(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DeployRequest(**{"namespace": "llm-prod", "name": "assist-mini", **bad})


def test_parse_target_wants_namespace_slash_name() -> None:
    assert parse_target("llm-prod/assist-mini") == ("llm-prod", "assist-mini")
    for bad in ("assist-mini", "llm-prod/", "/x", "a/b/c", "LLM/x"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_target(bad)


def test_a_good_version_on_a_pool_with_room_passes_every_check() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", version="2025.09.0")
    params, _ = deploy_params(req, "Rollout", workload())
    nodes, pods = pool(12, 10)
    found, surge = checks(req, "Rollout", workload(), params, nodes, pods, CATALOG)
    assert surge is None  # a Rollout's canary sets its own surge
    assert [c.name for c in found] == ["GPU memory", "GPU capacity", "cost"]
    assert all(c.ok for c in found), found
    assert "22.5 GiB per GPU" in found[0].details[0]  # 23034 MiB from the node label
    assert found[2].summary.startswith("+$0/month")


def test_a_model_that_does_not_fit_the_gpu_is_refused_with_the_arithmetic() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", version="2025.09.0", model="llama-3.1-70b-instruct")
    params, _ = deploy_params(req, "Rollout", workload())
    nodes, pods = pool(12, 10)
    found, _ = checks(req, "Rollout", workload(), params, nodes, pods, CATALOG)
    mem = found[0]
    assert not mem.ok
    assert "does not fit 22.5 GiB GPUs" in mem.summary and "131.5 GiB of weights" in mem.summary
    assert any("70.6 B params × 2 B ÷ TP 1 = 131.5 GiB" in d for d in mem.details)


def test_a_surge_that_does_not_fit_the_free_gpus_is_refused_with_the_numbers() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", version="2025.09.0")
    params, _ = deploy_params(req, "Rollout", workload())
    nodes, pods = pool(10, 10)  # every L4 busy; a pending GPU pod waits too
    pods.append(pod("waiting", "", phase="Pending"))
    found, _ = checks(req, "Rollout", workload(), params, nodes, pods, CATALOG)
    cap = found[1]
    assert not cap.ok
    assert cap.summary == ("1 new pod(s) of 1 GPU need 1 GPUs on opsagent.dev/node-pool=l4; room for 0 pod(s) "
                           "(0 free GPUs); 1 GPU pod(s) already Pending")


def test_a_deployment_gets_the_largest_surge_the_free_gpus_hold() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", image="vllm/vllm-openai:v0.10.2")
    dep = workload("Deployment")
    params, _ = deploy_params(req, "Deployment", dep)
    nodes, pods = pool(12, 10)  # two free L4s; the default cap is 25 % of 10 = 3
    found, surge = checks(req, "Deployment", dep, params, nodes, pods, CATALOG)
    assert surge == 2 and found[1].ok and "maxSurge 2" in found[1].summary
    nodes, pods = pool(10, 10)
    found, surge = checks(req, "Deployment", dep, params, nodes, pods, CATALOG)
    assert surge == 0 and not found[1].ok


def test_a_gpu_class_move_is_priced_and_checked_on_the_new_pool() -> None:
    req = DeployRequest(namespace="llm-prod", name="assist-mini", node_selector={POOL: "l40s"})
    params, summary = deploy_params(req, "Rollout", workload())
    assert "GPU-class move" in summary
    l40s = [node(f"l40s-{i}", pool="l40s", gpus=4, instance="g6e.12xlarge", mib=46068) for i in range(3)]
    # Every replica ends up on the new class: one node of 4 GPUs holds the first canary pod, not the move.
    found, _ = checks(req, "Rollout", workload(), params, [*pool(10, 10)[0], l40s[0]], pool(10, 10)[1], CATALOG)
    assert not found[1].ok and "need 10 GPUs" in found[1].summary and "room for 4 pod(s)" in found[1].summary
    nodes = [*pool(10, 10)[0], *l40s]
    found, _ = checks(req, "Rollout", workload(), params, nodes, pool(10, 10)[1], CATALOG)
    assert found[1].ok, found[1]
    b, a = CATALOG.instance_types["g6.2xlarge"], CATALOG.instance_types["g6e.12xlarge"]
    delta = 10 * (a.price_per_gpu_hour - b.price_per_gpu_hour) * 730
    assert f"{abs(delta):,.0f}/month" in found[2].summary


def rollout_spec(**params: Any) -> ChangeSpec:
    return ChangeSpec(action=ActionKind.DEPLOY, cluster="sandbox",
                      target=ObjectRef(kind="Rollout", name="assist-mini", namespace="llm-prod"), params=params)


def test_a_rollout_deploy_writes_the_rollout_template_and_never_a_surge() -> None:
    s = rollout_spec(container="server", labels={"model-version": "2025.09.0"}, strategy="canary", max_surge=3)
    name, params = tool_call(s, dry_run=True, expected_rv="7")
    assert name == "k8s_set_rollout_template"
    assert "max_surge" not in params and "strategy" not in params
    assert params["labels"] == {"model-version": "2025.09.0"} and params["expected_resource_version"] == "7"
    dep = s.model_copy(update={"target": ObjectRef(kind="Deployment", name="d", namespace="n")})
    assert tool_call(dep, dry_run=True, expected_rv=None)[0] == "k8s_set_pod_template"
    assert tool_call(dep, dry_run=True, expected_rv=None)[1]["max_surge"] == 3


def test_the_inverse_of_a_rollout_deploy_writes_back_the_template_it_replaced() -> None:
    s = rollout_spec(container="server", labels={"model-version": "2025.09.0"})
    prev = {"container": "server", "image": "vllm:1", "args": ["--a"], "labels": {"model-version": "2025.05.2"},
            "gpus": 1, "node_selector": {POOL: "l4"}, "tolerations": []}
    ch = ChangeRequest(id="chg-1", spec=s, spec_digest=s.digest(), risk="mutate",
                       fingerprint=TargetFingerprint(kind="Rollout", name="assist-mini", spec_hash="h"),
                       blast_radius=BlastRadius(gpus=0, replicas=0, capacity_drop=0), reason="r", requester="me",
                       created_at=dt.datetime.now(dt.UTC), status=ChangeStatus.APPLIED,
                       result={"detail": {"previous": prev}})
    undo = inverse(ch)
    assert undo is not None and undo.action == ActionKind.DEPLOY and undo.target == s.target
    assert undo.params["labels"] == {"model-version": "2025.05.2"} and undo.params["image"] == "vllm:1"
    assert inverse(ch.model_copy(update={"result": {}})) is None  # nothing recorded: no guess


def test_a_gitops_owned_target_gets_a_manifest_patch_and_an_unowned_one_none() -> None:
    s = rollout_spec(container="server", labels={"model-version": "2025.09.0"})
    obj = workload()
    assert gitops_patch(s, obj) is None
    owned = copy.deepcopy(obj)
    owned["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "assist:argoproj.io/Rollout:llm-prod/x"}
    patch = gitops_patch(s, owned)
    assert patch is not None and "reverted" in patch.explanation
    assert "-        model-version: 2025.05.2" in patch.diff and "+        model-version: 2025.09.0" in patch.diff


def test_the_merge_patch_nulls_what_the_new_template_drops() -> None:
    before = workload()["spec"]["template"]
    p = SetTemplateInput(namespace="llm-prod", name="assist-mini", container="server", labels={"x": "1"},
                         node_selector={})
    after = changed_template(before, p, "rollout")
    patch = merge_patch(before, after)
    assert patch == {"metadata": {"labels": {"x": "1"}}, "spec": {"nodeSelector": {POOL: None}}}
    # Putting the old template back removes the label the deploy added.
    assert merge_patch(after, before)["metadata"]["labels"] == {"x": None}


def test_slack_reads_a_deployment_from_flags_or_a_sentence_and_says_how_when_it_cannot() -> None:
    from agent.entry.slack.chat import Intent, classify
    from agent.entry.slack.deploys import parse_deploy

    r = parse_deploy('deploy llm-prod/assist-mini --version 2025.09.0 --args "--max-model-len 8192" --strategy canary')
    assert (r.namespace, r.name, r.version, r.args, r.strategy) == (
        "llm-prod", "assist-mini", "2025.09.0", ["--max-model-len", "8192"], "canary")
    assert parse_deploy("deploy llm-prod/assist-mini --image=vllm/vllm-openai:v0.10.2").image == \
        "vllm/vllm-openai:v0.10.2"
    r = parse_deploy("deploy version `2025.09.0` to `llm-prod/assist-mini`")
    assert (r.namespace, r.name, r.version) == ("llm-prod", "assist-mini", "2025.09.0")
    for bad, why in (("deploy", "Usage"), ("deploy assist-mini --version 1", "NAMESPACE/NAME"),
                     ("deploy a/b --version", "needs a value"), ("deploy a/b --force", "unknown option"),
                     ("deploy a/b", "say what to deploy"), ("deploy a/b --strategy blue", "strategy")):
        with pytest.raises(ValueError, match=why):
            parse_deploy(bad)
    # In a thread, "deploy …" is a deployment request now, not a forbidden action; deleting still is.
    assert classify("deploy 2025.09.0 to llm-prod/assist-mini") == Intent.DEPLOY
    assert classify("opsagent deploy llm-prod/x --version 2") == Intent.DEPLOY
    assert classify("delete the namespace") == Intent.FORBIDDEN


def test_an_abort_names_the_failed_metric_its_value_and_its_limit() -> None:
    from agent.change.rollout_watch import failed_metrics

    run = {"spec": {"args": [{"name": "error-share-max", "value": "0.01"}, {"name": "ttft-p95-max", "value": "0.5"}],
                    "metrics": [{"name": "error-share", "failureCondition":
                                 "len(result) > 0 && !isNaN(result[0]) && result[0] > {{args.error-share-max}}"},
                                {"name": "ttft-p95", "failureCondition":
                                 "len(result) > 0 && !isNaN(result[0]) && result[0] > {{args.ttft-p95-max}}"},
                                {"name": "queue"}]},
           "status": {"metricResults": [
               {"name": "error-share", "phase": "Failed", "measurements": [{"value": "[0.08]"}]},
               {"name": "ttft-p95", "phase": "Successful", "measurements": [{"value": "[0.1]"}]},
               {"name": "queue", "phase": "Error", "message": "no data"}]}}
    assert failed_metrics(run) == ["error-share = 0.08 > 0.01", "queue = no value (error: no data)"]


def test_promote_and_abort_are_rollout_changes_with_their_own_approval_rule() -> None:
    from agent.policy.evaluate import evaluate, load_policy
    from agent.policy.model import Effect, Request

    promote = rollout_spec().model_copy(update={"action": ActionKind.PROMOTE_ROLLOUT})
    assert tool_call(promote, dry_run=True, expected_rv="9") == ("k8s_rollout_promote_abort", {
        "dry_run": True, "expected_resource_version": "9", "namespace": "llm-prod", "name": "assist-mini",
        "promote": True})
    abort = promote.model_copy(update={"action": ActionKind.ABORT_ROLLOUT})
    assert tool_call(abort, dry_run=False, expected_rv=None)[1]["promote"] is False
    with pytest.raises(ValueError, match="for Argo Rollouts"):
        tool_call(abort.model_copy(update={"target": ObjectRef(kind="Deployment", name="d", namespace="llm-prod")}),
                  dry_run=True, expected_rv=None)
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")
    at = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)  # a Sunday night: no window applies to these

    def ask(action: str, ns: str = "llm-prod") -> Any:
        return evaluate(policy, Request(action=action, risk="mutate", cluster="c", namespace=ns, target_kind="Rollout",
                                        target_name="assist-mini", labels={}, requester="dana", gpus=0,
                                        replicas_delta=0, capacity_drop=0, at=at, changes_last_hour=0,
                                        target_changes_last_hour=0))

    for action in ("promote_rollout", "abort_rollout"):
        d = ask(action)
        assert d.effect == Effect.REQUIRE_APPROVAL and d.rule == "promote-abort" and d.approvers is not None
        assert d.approvers.count == 1
    outside = ask("deploy", ns="platform")  # a Rollout outside the serving namespaces
    assert outside.effect == Effect.DENY and outside.rule == "outside-serving-namespaces"


def test_a_rollout_watch_knows_when_a_later_change_replaced_its_template() -> None:
    """A watch resumed late (or outliving its canary) must not take a later deployment's canary for its own."""
    from agent.change.rollout_watch import superseded

    s = rollout_spec(container="server", labels={"model-version": "2025.09.0"}, image="vllm/vllm-openai:v0.10.2")
    ch = ChangeRequest(id="chg-1", spec=s, spec_digest=s.digest(), risk="mutate",
                       fingerprint=TargetFingerprint(kind="Rollout", name="assist-mini", spec_hash="h"),
                       blast_radius=BlastRadius(gpus=0, replicas=0, capacity_drop=0), reason="r", requester="me",
                       created_at=dt.datetime.now(dt.UTC), status=ChangeStatus.APPLIED)
    ours = workload()
    ours["spec"]["template"]["metadata"]["labels"]["model-version"] = "2025.09.0"
    ours["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.10.2"
    assert superseded(ours, ch) is None  # its own canary: watched to the end
    ours["spec"]["paused"] = True  # a person pausing it changes the spec, not what it runs
    assert superseded(ours, ch) is None
    later = copy.deepcopy(ours)
    later["spec"]["template"]["metadata"]["labels"]["model-version"] = "2025.10.1"
    assert "2025.10.1" in str(superseded(later, ch))
    back = workload()  # a rollback put the previous image and version back
    assert superseded(back, ch) is not None
    abort = ChangeRequest(**{**ch.model_dump(), "spec": ChangeSpec(
        action=ActionKind.ABORT_ROLLOUT, cluster="c", target=s.target)})
    assert superseded(later, abort) is None  # an abort writes no template: nothing of its own to lose


def test_a_deploy_writes_one_mig_slice_in_place_of_whole_gpus_and_its_inverse_puts_them_back() -> None:
    before = workload()["spec"]["template"]
    before["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "4", "nvidia.com/gpu": "1"},
                                                    "limits": {"nvidia.com/gpu": "1", "memory": "24Gi"}}
    name, params = tool_call(rollout_spec(container="server", mig_profile="3g.40gb"), dry_run=True, expected_rv="7")
    assert name == "k8s_set_rollout_template" and params["mig_profile"] == "3g.40gb"
    p = SetTemplateInput(**params)
    after = changed_template(before, p, "rollout")
    res = after["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "4", "nvidia.com/mig-3g.40gb": "1"},
                   "limits": {"memory": "24Gi", "nvidia.com/mig-3g.40gb": "1"}}  # cpu and memory untouched
    back = changed_template(after, SetTemplateInput(**{**params, "mig_profile": None, "gpus": 1}), "rollout")
    assert back["spec"]["containers"][0]["resources"] == before["spec"]["containers"][0]["resources"]
    # The executor's record of the template it replaced names the slice, so the undo restores it.
    prev = {"container": "server", "labels": {}, "node_selector": {}, "tolerations": [], "gpus": None,
            "mig_profile": "3g.40gb"}
    s = rollout_spec(container="server", gpus=2)
    ch = ChangeRequest(id="chg-2", spec=s, spec_digest=s.digest(), risk="mutate",
                       fingerprint=TargetFingerprint(kind="Rollout", name="assist-mini", spec_hash="h"),
                       blast_radius=BlastRadius(gpus=0, replicas=0, capacity_drop=0), reason="r", requester="me",
                       created_at=dt.datetime.now(dt.UTC), status=ChangeStatus.APPLIED,
                       result={"detail": {"previous": prev}})
    undo = inverse(ch)
    assert undo is not None and undo.params["mig_profile"] == "3g.40gb" and "gpus" not in undo.params


@pytest.mark.parametrize("sneaked", [
    {"resources": {"limits": {"nvidia.com/mig-7g.80gb": "1", "cpu": "64"}}},
    {"cpu": "64"},
    {"privileged": True},
    {"security_context": {"privileged": True}},
    {"host_network": True},
    {"service_account": "cluster-admin"},
])
def test_a_deploy_plan_sneaking_another_field_is_refused_not_dropped(sneaked: dict[str, Any]) -> None:
    """A forged or garbled plan (a Slack button value, a stored spec) gets no write that it did not name."""
    s = rollout_spec(container="server", mig_profile="3g.40gb", **sneaked)
    with pytest.raises(ValueError, match=f"not {next(iter(sneaked))}"):
        tool_call(s, dry_run=True, expected_rv=None)


@pytest.mark.parametrize("params", [
    {"mig_profile": "7g.80gb\",\"cpu\":\"64"},  # an injected resource in the profile name
    {"mig_profile": "8g.80gb"},  # no GPU has eight sevenths
    {"mig_profile": "../gpu"},
    {"mig_profile": "3g.40gb", "gpus": 1},  # whole GPUs and a slice at once
])
def test_the_write_tool_takes_only_a_real_mig_profile_and_never_with_whole_gpus(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SetTemplateInput(namespace="llm-prod", name="assist-mini", container="server", **params)


def test_a_workload_on_mig_slices_has_a_gpu_blast_radius_so_the_policys_gpu_limit_still_bites() -> None:
    from agent.change.executor.blast_radius import blast_radius

    obj = workload(replicas=40)
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-3g.20gb": "1"}}
    scale = ChangeSpec(action=ActionKind.SCALE, cluster="sandbox", target=ObjectRef(
        kind="Deployment", name="assist-mini", namespace="llm-prod"), params={"replicas": 0})
    assert blast_radius(scale, obj).gpus == 40  # one GPU touched per slice, not none
    assert blast_radius(rollout_spec(container="server", gpus=1), obj).gpus == 40
