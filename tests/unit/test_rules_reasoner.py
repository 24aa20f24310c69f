"""The rules reasoner on the shipped runbooks, from evidence features to ranked hypotheses and proposals."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.audit.events import MemoryAudit
from agent.guard.runner import ToolRunner
from agent.models import ActionKind, Category, Evidence, EvidenceStatus
from agent.triage.features import feature_map
from agent.triage.nodes.propose import proposals_for
from agent.triage.reasoners.rules import RulesReasoner
from agent.triage.runbooks import load_dir
from agent.triage.state import TriageState

BOOKS = {b.id: b for b in load_dir()}
RUNNER = ToolRunner([], {}, MemoryAudit())
CTX = {"namespace": "llm-prod", "model_name": "llama-3.1-70b-instruct", "deployment": "chat-primary"}


def ev(eid: str, status: EvidenceStatus = EvidenceStatus.OK, **features: Any) -> Evidence:
    return Evidence(id=eid, tool="t", title=eid, params={}, status=status, summary="", features=features)


def diagnose(book_ids: list[str], evidence: list[Evidence],
             context: dict[str, str] | None = None) -> tuple[Any, Any]:
    state: TriageState = {"context": context or CTX, "evidence": evidence}
    books = [BOOKS[b] for b in book_ids]
    hyps, _ = asyncio.run(RulesReasoner().diagnose(state, books, RUNNER))
    return hyps, proposals_for(hyps[0] if hyps else None, books, feature_map(state))


ROLLOUT = ev("rollout", revisions=2, current_revision=2, previous_revision=1, current_version="2025.07.0",
             previous_version="2025.06.1", changed_ago_s=300, changed_ago_slack_s=480, changed_ago_min=5)
HEALTHY_FLEET = [ev("fleet_errors", value=0.001), ev("fleet_ttft_ratio", value=1.05), ev("fleet_kv", value=0.5),
                 ev("fleet_xid", value=0), ev("fleet_crashloops", value=0)]


def test_bad_rollout_wins_and_proposes_the_previous_revision() -> None:
    evidence = [ROLLOUT, ev("errors", baseline=0.001, recent=0.07, change_ratio=70, onset_ago_s=240),
                ev("ttft", baseline=0.4, recent=3.9, change_ratio=9.7, onset_ago_s=250, onset_ago_min=4.2),
                ev("traffic", change_ratio=1.02, recent=12), ev("fleet_errors", value=0.07),
                *HEALTHY_FLEET[1:]]
    hyps, props = diagnose(["bad-rollout", "healthy"], evidence)
    assert hyps[0].category == Category.BAD_ROLLOUT and hyps[0].confidence == 1.0
    assert hyps[0].culprit is not None and hyps[0].culprit.name == "chat-primary"
    assert next(h for h in hyps if h.category == Category.HEALTHY).confidence == 0.0
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 1})]


def test_a_traffic_surge_is_not_blamed_on_an_old_rollout() -> None:
    old = ROLLOUT.model_copy(update={"features": {**ROLLOUT.features, "changed_ago_s": 5 * 86400}})
    evidence = [old, ev("errors", change_ratio=1.1, recent=0.001), ev("ttft", change_ratio=4, recent=1.8),
                ev("traffic", change_ratio=3.1, recent=15), ev("kv", recent=0.99, baseline=0.5),
                ev("waiting", recent=40), ev("preemptions", max=2.5), ev("workload", replicas=2)]
    hyps, props = diagnose(["bad-rollout", "kv-cache-saturation"], evidence)
    assert hyps[0].category == Category.KV_CACHE_SATURATION
    # The replicas ran at half their KV cache before: 3.1× the load needs 2 × 3.1 × 1.2 × 0.5/0.8 = 4.65.
    assert props[0].kind == ActionKind.SCALE and props[0].params["replicas"] == 5


def test_a_surge_at_a_quiet_hour_is_sized_by_the_load_it_adds_not_by_its_ratio() -> None:
    """×9 of replicas that were 15 % busy is about twice their capacity, not nine times: the scale fits what
    the surge needs (a policy that refuses 40 GPUs lets 10 through), and a busy baseline still gets the full
    ratio."""
    evidence = [ev("errors", change_ratio=1.0, recent=0.001), ev("ttft", change_ratio=6, recent=2.4),
                ev("traffic", change_ratio=9.0, recent=20), ev("kv", recent=0.99, baseline=0.15),
                ev("waiting", recent=60), ev("preemptions", max=3.0), ev("workload", replicas=2)]
    _, props = diagnose(["kv-cache-saturation"], evidence)
    assert props[0].params["replicas"] == 9  # ceil(2 × 9 × 1.2 × 0.3/0.8): 0.15 counts as 0.3
    busy = [e if e.id != "kv" else ev("kv", recent=0.99, baseline=0.85) for e in evidence]
    _, props = diagnose(["kv-cache-saturation"], busy)
    assert props[0].params["replicas"] == 22  # ceil(2 × 9 × 1.2): replicas already near their limit


def test_nominal_evidence_is_no_anomaly_with_no_action() -> None:
    hyps, props = diagnose(["healthy"], HEALTHY_FLEET)
    assert hyps[0].category == Category.HEALTHY and hyps[0].confidence == 1.0
    assert [p.kind for p in props] == [ActionKind.NONE]


def test_missing_evidence_is_reported_and_nothing_is_guessed() -> None:
    failed = [ev(i, EvidenceStatus.ERROR) for i in ("errors", "ttft", "traffic")]
    hyps, props = diagnose(["bad-rollout"], [ROLLOUT, *failed])
    top = hyps[0]
    assert top.confidence < 0.5 and any("errors" in m for m in top.missing)
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]


def test_xid_blames_the_node_and_proposes_a_cordon() -> None:
    evidence = [ev("xid", value=79, top_Hostname="ip-10-0-130-10.ec2.internal"),
                ev("gpu_nodes", unallocatable=1, unallocatable_nodes="ip-10-0-130-10.ec2.internal"),
                ev("pending", insufficient_gpu=1)]
    ctx = {"node": "ip-10-0-130-10.ec2.internal"}
    hyps, props = diagnose(["gpu-xid"], evidence, ctx)
    assert hyps[0].category == Category.GPU_HARDWARE
    assert hyps[0].culprit is not None and hyps[0].culprit.kind == "Node"
    assert [p.kind for p in props] == [ActionKind.CORDON_NODE]


NODE = {"node": "ip-10-1-45-10.ec2.internal"}


def test_a_hot_node_with_only_temperature_evidence_beats_healthy_on_the_tie() -> None:
    # Temperature alone gives thermal 0.5, capping healthy at 0.5: the fault must not lose the tie to
    # healthy's five routine checks (the alert is about heat, and nothing else explains it).
    evidence = [ev("temp", recent=111, baseline=54), ev("clock", EvidenceStatus.EMPTY), *HEALTHY_FLEET]
    hyps, props = diagnose(["thermal-throttling", "healthy"], evidence, NODE)
    assert [h.category for h in hyps[:2]] == [Category.THERMAL_THROTTLING, Category.HEALTHY]
    assert hyps[0].confidence == hyps[1].confidence == 0.5
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]


def test_temperature_and_throttled_clocks_make_thermal_certain() -> None:
    evidence = [ev("temp", recent=111, baseline=54), ev("clock", recent=705, baseline=1410, change_ratio=0.5),
                *HEALTHY_FLEET]
    hyps, _ = diagnose(["thermal-throttling", "healthy"], evidence, NODE)
    assert hyps[0].category == Category.THERMAL_THROTTLING and hyps[0].confidence == 1.0
    assert hyps[0].culprit is not None and hyps[0].culprit.name == NODE["node"]


def test_a_weak_specific_hypothesis_does_not_beat_healthy() -> None:
    # Below the actionable confidence the tie-break is unchanged: healthy's supporting facts count.
    evidence = [ev("temp", recent=60, baseline=54), ev("clock", recent=1400, baseline=1410, change_ratio=0.99),
                *HEALTHY_FLEET]
    hyps, props = diagnose(["thermal-throttling", "healthy"], evidence, NODE)
    assert hyps[0].category == Category.HEALTHY and hyps[0].confidence == 1.0
    assert [p.kind for p in props] == [ActionKind.NONE]


def _idle(replicas: int, busy_max: float, limit: float | None) -> list[Any]:
    evidence = [ev("busy", recent=0.01, mean=0.3), ev("busy_sum", max=busy_max),
                ev("workload", replicas=replicas, gpus_per_replica=2, gpus_total=2 * replicas), *HEALTHY_FLEET]
    state: TriageState = {"context": {**CTX, "deployment": "completion"}, "evidence": evidence}
    books = [BOOKS["idle-gpus"], BOOKS["healthy"]]
    hyps, _ = asyncio.run(RulesReasoner().diagnose(state, books, RUNNER))
    feats = feature_map(state) | ({} if limit is None else {"policy.max_capacity_drop": limit})
    return proposals_for(hyps[0], books, feats)


def test_idle_gpus_scale_down_in_steps_the_policy_allows() -> None:
    # Right-sized would be 2 replicas (1.55 busy GPUs under 50 %), but 6 → 2 removes 67 % of the
    # capacity; with the policy's 50 % limit the step is 6 → 3, and the reason says more may follow.
    (p,) = _idle(6, 1.55, 0.5)
    assert p.kind == ActionKind.SCALE and p.params == {"replicas": 3}
    assert "more steps down may follow" in p.reason and "0.5" in p.reason
    assert _idle(6, 1.55, 0.25)[0].params == {"replicas": 5}  # ceil(6 × 0.75): removes 17 %, not 33 %
    assert _idle(3, 1.55, 0.5)[0].params == {"replicas": 2}  # the last step: the right size itself


def test_idle_gpus_never_scale_up_nor_guess_the_limit() -> None:
    assert [p.kind for p in _idle(2, 1.55, 0.5)] == [ActionKind.PAGE_HUMAN]  # already right-sized
    assert [p.kind for p in _idle(6, 1.55, None)] == [ActionKind.PAGE_HUMAN]  # no policy limit known: no guess


def test_a_recent_rollout_without_a_regression_is_not_blamed() -> None:
    # A flaky latency alert 15 minutes after a rollout (itself the recovery from an earlier fault): the
    # series shifted after the rollout, traffic is steady, but nothing regressed. No rollback.
    recent = ROLLOUT.model_copy(update={"features": {**ROLLOUT.features, "changed_ago_s": 925,
                                                     "changed_ago_slack_s": 1105}})
    evidence = [recent, ev("errors", baseline=0.0013, recent=0.001, change_ratio=0.76),
                ev("ttft", baseline=0.86, recent=0.87, change_ratio=1.006, onset_ago_s=930),
                ev("traffic", change_ratio=1.04, recent=15.6), *HEALTHY_FLEET]
    hyps, props = diagnose(["bad-rollout", "healthy"], evidence)
    assert hyps[0].category == Category.HEALTHY
    assert [p.kind for p in props] == [ActionKind.NONE]


def test_refusals_after_a_rollout_are_a_configuration_regression_not_a_slow_server() -> None:
    evidence = [ROLLOUT, ev("client_errors", baseline=0.0, recent=0.12, change_ratio=1000, onset_ago_s=240),
                ev("errors", baseline=0.001, recent=0.001, change_ratio=1.0),
                ev("ttft", baseline=0.4, recent=0.41, change_ratio=1.02), ev("refusals", matches=40, last_ago_s=20),
                ev("traffic", change_ratio=1.0, recent=12), *HEALTHY_FLEET]
    hyps, props = diagnose(["config-regression", "bad-rollout", "healthy"], evidence)
    assert hyps[0].category == Category.CONFIG_REGRESSION and hyps[0].confidence == 1.0
    assert any("4xx" in s for s in hyps[0].supporting)
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 1})]


def test_refusals_logged_before_the_rollout_do_not_speak_for_the_new_revision() -> None:
    # Prometheus down; the logs still hold refusals from the revision the rollout replaced (a fault just
    # rolled back): they must not count for the revision that is running now.
    down = [ev(e, EvidenceStatus.ERROR) for e in ("client_errors", "errors", "ttft")]
    evidence = [ROLLOUT, *down, ev("refusals", matches=40, last_ago_s=600)]
    hyps, _ = diagnose(["config-regression", "healthy"], evidence)
    regression = next(h for h in hyps if h.category == Category.CONFIG_REGRESSION)
    assert not any("logs why it refuses" in s for s in regression.supporting), regression.supporting
    evidence[-1] = ev("refusals", matches=40, last_ago_s=60)  # written after the rollout: it does count
    hyps, _ = diagnose(["config-regression", "healthy"], evidence)
    regression = next(h for h in hyps if h.category == Category.CONFIG_REGRESSION)
    assert any("logs why it refuses" in s for s in regression.supporting), regression.supporting


def test_server_errors_after_a_rollout_are_not_read_as_refusals() -> None:
    evidence = [ROLLOUT, ev("client_errors", baseline=0.0, recent=0.0, change_ratio=1.0),
                ev("errors", baseline=0.001, recent=0.07, change_ratio=70, onset_ago_s=240),
                ev("ttft", baseline=0.4, recent=3.9, change_ratio=9.7, onset_ago_s=250, onset_ago_min=4.2),
                ev("refusals", matches=0), ev("traffic", change_ratio=1.02, recent=12), ev("fleet_errors", value=0.07),
                *HEALTHY_FLEET[1:]]
    hyps, _ = diagnose(["config-regression", "bad-rollout", "healthy"], evidence)
    assert hyps[0].category == Category.BAD_ROLLOUT
    conf = next(h for h in hyps if h.category == Category.CONFIG_REGRESSION).confidence
    assert conf < 0.35


def test_pods_that_cannot_pull_their_image_are_a_start_up_failure_of_the_rollout() -> None:
    stuck = ROLLOUT.model_copy(update={"features": {**ROLLOUT.features, "rollout_complete": False}})
    evidence = [stuck, ev("pods", total=3, ready=2, image_pull_errors=1, crashloop=0),
                ev("workload", replicas=3, ready_replicas=2), *HEALTHY_FLEET]
    hyps, props = diagnose(["image-startup", "healthy"], evidence)
    assert hyps[0].category == Category.IMAGE_STARTUP and hyps[0].confidence == 1.0
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 1})]


def test_containers_killed_by_the_kernel_are_host_memory_not_gpu_memory() -> None:
    evidence = [ROLLOUT, ev("pods", total=3, ready=2, crashloop=1, oom_killed=1, gpu_oom=0, error_exit=0,
                            restarts_max=4), ev("oom_logs", matches=0), *HEALTHY_FLEET]
    hyps, props = diagnose(["host-memory", "gpu-oom", "healthy"], evidence)
    assert hyps[0].category == Category.HOST_MEMORY and hyps[0].confidence == 1.0
    gpu = next(h for h in hyps if h.category == Category.GPU_OOM)
    assert gpu.confidence < 0.35
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 1})]


def test_pods_pending_for_gpus_with_no_gpu_lost_are_a_capacity_limit_paged_to_a_human() -> None:
    evidence = [ev("xid", EvidenceStatus.EMPTY, count=0), ev("gpu_nodes", unallocatable=0, not_ready=0, gpu_nodes=8),
                ev("pending", insufficient_gpu=2, pending=2), ev("lost_nodes", nodes_removed=0, nodes_interrupted=0)]
    hyps, props = diagnose(["gpu-capacity", "gpu-xid"], evidence, {"namespace": "llm-prod"})
    assert hyps[0].category == Category.CAPACITY and hyps[0].id == "gpu-capacity" and hyps[0].confidence == 1.0
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]


def test_pods_pending_after_gpus_were_lost_are_not_a_capacity_limit() -> None:
    evidence = [ev("xid", value=79, top_Hostname="gpu-h100-0", count=1),
                ev("gpu_nodes", unallocatable=1, not_ready=0, unallocatable_nodes="gpu-h100-0"),
                ev("pending", insufficient_gpu=2, pending=2)]
    hyps, _ = diagnose(["gpu-capacity", "gpu-xid"], evidence, {"namespace": "llm-prod", "node": "gpu-h100-0"})
    assert hyps[0].category == Category.GPU_HARDWARE


def test_an_earlier_incidents_cuda_lines_do_not_outweigh_the_pods_own_oomkilled() -> None:
    evidence = [ROLLOUT, ev("pods", total=3, ready=2, crashloop=1, oom_killed=1, gpu_oom=0, error_exit=0,
                            restarts_max=4), ev("oom_logs", matches=4), *HEALTHY_FLEET]
    hyps, _ = diagnose(["host-memory", "gpu-oom", "healthy"], evidence)
    assert hyps[0].category == Category.HOST_MEMORY and hyps[0].confidence >= 0.35


def test_pods_that_run_but_never_turn_ready_past_the_deadline_are_a_start_up_failure_rolled_back() -> None:
    stuck = ROLLOUT.model_copy(update={"features": {**ROLLOUT.features, "rollout_complete": False,
                                                     "deadline_exceeded": True}})
    evidence = [stuck, ev("pods", total=3, ready=2, starting=1, image_pull_errors=0, crashloop=0),
                ev("workload", replicas=3, ready_replicas=2), *HEALTHY_FLEET]
    hyps, props = diagnose(["image-startup", "healthy"], evidence)
    assert hyps[0].category == Category.IMAGE_STARTUP and hyps[0].confidence >= 0.9
    assert any("never became ready" in s for s in hyps[0].supporting)
    assert any("ProgressDeadlineExceeded" in s for s in hyps[0].supporting)
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 1})]


def test_pods_pending_after_spot_nodes_were_reclaimed_are_lost_capacity_paged_to_a_human() -> None:
    evidence = [ev("xid", EvidenceStatus.EMPTY, count=0), ev("gpu_nodes", unallocatable=0, not_ready=0, gpu_nodes=5),
                ev("pending", insufficient_gpu=1, pending=1), ev("lost_nodes", nodes_removed=3, nodes_interrupted=3)]
    hyps, props = diagnose(["gpu-capacity", "gpu-xid"], evidence, {"namespace": "llm-prod"})
    assert hyps[0].category == Category.CAPACITY and hyps[0].id == "capacity-lost", hyps[0]
    assert any("3 node(s) were taken away" in s for s in hyps[0].supporting)
    outgrown = next(h for h in hyps if h.id == "gpu-capacity")
    assert outgrown.confidence < hyps[0].confidence, "lost nodes are not read as demand outgrowing the pool"
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]


HUNG_POD = "chat-primary-7d9f8b6c5d-x2x9q"


def _stalled(gpu_util: float, peers: float, hung: tuple[str, ...] = (HUNG_POD,)) -> list[Evidence]:
    # `stalled`: the model's pods holding requests with no tokens, as the instant query answers (top = first).
    stalled = ev("stalled", value=1.0, count=len(hung), sum=float(len(hung)), top_pod=hung[0]) if hung \
        else ev("stalled", EvidenceStatus.EMPTY)
    return [ev("pod_tokens", value=0.0), ev("pod_running", value=256), ev("pod_gpu", value=gpu_util),
            ev("peer_tokens", value=peers), ev("pods", total=3, ready=3, not_ready=0, crashloop=0), stalled,
            *HEALTHY_FLEET]


def test_one_hung_replica_among_working_ones_gets_a_restart_of_that_pod_proposed() -> None:
    ctx = {**CTX, "pod": "chat-primary-7d9f8b6c5d-x2x9q"}
    hyps, props = diagnose(["hung-worker", "healthy"], _stalled(100.0, 1900.0), ctx)
    assert hyps[0].category == Category.HUNG_WORKER and hyps[0].confidence == 1.0
    assert hyps[0].culprit is not None and (hyps[0].culprit.kind, hyps[0].culprit.name) == ("Pod", ctx["pod"])
    assert [p.kind for p in props] == [ActionKind.RESTART_POD]
    assert props[0].target is not None and (props[0].target.kind, props[0].target.name, props[0].target.namespace) \
        == ("Pod", ctx["pod"], "llm-prod")
    assert "restart" in props[0].reason


def test_several_hung_replicas_or_none_generating_page_a_human_instead_of_restarting_pods() -> None:
    ctx = {**CTX, "pod": "chat-primary-7d9f8b6c5d-x2x9q"}
    _, props = diagnose(["hung-worker", "healthy"], _stalled(100.0, 1900.0, (ctx["pod"], "chat-primary-7d9f8b6c5d-b")),
                        ctx)
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    _, props = diagnose(["hung-worker", "healthy"], _stalled(100.0, 0.0), ctx)
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]


def test_an_alert_naming_another_pod_than_the_hung_one_restarts_nothing() -> None:
    """The alert's pod label is untrusted: the pod restarted is the one Prometheus shows hung."""
    ctx = {**CTX, "pod": "chat-primary-7d9f8b6c5d-healthy"}
    state: TriageState = {"context": ctx, "evidence": _stalled(100.0, 1900.0)}
    books = [BOOKS["hung-worker"], BOOKS["healthy"]]
    hyps, _ = asyncio.run(RulesReasoner().diagnose(state, books, RUNNER))
    props = proposals_for(hyps[0], books, feature_map(state), read=set())  # as the propose node calls it
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert "x2x9q" in props[0].reason, "the page says which pod the evidence shows hung"


def test_a_replica_with_idle_gpus_and_no_tokens_is_not_called_hung() -> None:
    hyps, _ = diagnose(["hung-worker", "healthy"], _stalled(0.0, 1900.0), {**CTX, "pod": "chat-primary-a-b"})
    hung = next(h for h in hyps if h.category == Category.HUNG_WORKER)
    assert hung.confidence < 0.5


def _regressed(previous_errors: float | None, older_errors: float | None) -> list[Evidence]:
    rollout = ev("rollout", revisions=3, current_revision=7, previous_revision=6, current_version="2025.07.2",
                 previous_version="2025.07.0", older_revision=5, older_version="2025.06.1", changed_ago_s=120,
                 changed_ago_slack_s=300, changed_ago_min=2)
    out = [rollout, ev("errors", baseline=0.001, recent=0.07, change_ratio=70, onset_ago_s=240),
           ev("ttft", baseline=0.4, recent=2.3, change_ratio=5.7, onset_ago_s=240), ev("traffic", change_ratio=1.0),
           ev("prefix_hit", change_ratio=0.3)]
    out.append(ev("previous_errors", value=previous_errors) if previous_errors is not None
               else ev("previous_errors", EvidenceStatus.EMPTY))
    out.append(ev("older_errors", value=older_errors) if older_errors is not None
               else ev("older_errors", EvidenceStatus.EMPTY))
    return out


def test_a_rollback_never_returns_to_a_previous_revision_that_failed_the_same_way() -> None:
    hyps, props = diagnose(["bad-rollout"], _regressed(0.07, 0.001))
    assert hyps[0].category == Category.BAD_ROLLOUT
    assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 5})]
    assert "2025.07.0" in props[0].reason and "2025.06.1" in props[0].reason


def test_with_no_known_good_revision_behind_a_bad_previous_one_a_human_is_paged() -> None:
    _, props = diagnose(["bad-rollout"], _regressed(0.07, None))
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert "same defect" in props[0].reason


def test_a_previous_revision_that_served_within_slo_or_left_no_record_is_the_rollback_target() -> None:
    for previous in (0.001, None):
        _, props = diagnose(["bad-rollout"], _regressed(previous, 0.001))
        assert [(p.kind, p.params) for p in props] == [(ActionKind.ROLLBACK, {"to_revision": 6})], previous


LB_CTX = {"cluster": "sandbox", "load_balancer": "app/k8s-sandbox-inference/0123456789abcdef"}


def _balancer(elb: float, target: float, unhealthy: float, pods_5xx: float) -> list[Evidence]:
    return [ev("elb_5xx", recent=elb, baseline=0.0, change_ratio=1000.0 if elb else None),
            ev("target_5xx", recent=target, baseline=target), ev("requests", recent=60000.0),
            ev("unhealthy", max_all=unhealthy, last_sum=unhealthy, series=4),
            ev("healthy", max_all=7.0, last_sum=7.0 - unhealthy, series=4), ev("pods_5xx", value=pods_5xx),
            *HEALTHY_FLEET]


def test_balancer_5xx_with_healthy_targets_is_the_load_balancer_paged_never_rolled_back() -> None:
    hyps, props = diagnose(["load-balancer", "healthy"], _balancer(5000.0, 3.0, 0.0, 0.0005), LB_CTX)
    assert hyps[0].category == Category.UPSTREAM_LB and hyps[0].confidence >= 0.9
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert LB_CTX["load_balancer"] in props[0].reason and "rollback" in props[0].reason
    said = " ".join(hyps[0].supporting)
    assert "its own 5xx" in said and "only 3 5xx" in said and "none unhealthy" in said


def test_balancer_5xx_while_targets_fail_their_checks_or_pods_fail_is_not_blamed_on_the_balancer() -> None:
    for unhealthy, pods_5xx in ((3.0, 0.0005), (0.0, 0.07)):
        hyps, _ = diagnose(["load-balancer", "healthy"], _balancer(5000.0, 3.0, unhealthy, pods_5xx), LB_CTX)
        lb = next(h for h in hyps if h.category == Category.UPSTREAM_LB)
        assert lb.confidence < 0.7, (unhealthy, pods_5xx)


def test_no_balancer_5xx_rules_the_balancer_out() -> None:
    hyps, _ = diagnose(["load-balancer", "healthy"], _balancer(0.0, 3.0, 0.0, 0.0005), LB_CTX)
    assert hyps[0].category != Category.UPSTREAM_LB
