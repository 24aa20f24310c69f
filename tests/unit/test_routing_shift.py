"""A route's weights: the sandbox's fleet and simulator follow them, the read tool says what changed, and the
rules reasoner tells a route that moved traffic from a surge, a rollout or a lack of capacity."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from agent.models import ActionKind, Category, EvidenceStatus
from agent.triage.features import extract
from deploy.sandbox import faults
from deploy.sandbox.fleet import Fleet, load_prices, route_manifest
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.placement import Placement, route_shift
from deploy.sandbox.simulator.synthetic import fleet_objects
from tests.unit.test_rules_reasoner import CTX, HEALTHY_FLEET, diagnose, ev
from tools.k8s_read.routes import LAST_APPLIED, reduce_route
from tools.k8s_read.tools import K8sRoutesResult

NOW = dt.datetime(2026, 12, 7, 15, 0, tzinfo=dt.UTC)
T = NOW.timestamp()


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


# ---- the simulator --------------------------------------------------------------------------------------

def _placement(fleet: Fleet, weights: dict[str, int] | None) -> Placement:
    objs = fleet_objects(fleet, load_prices())
    routes = [route_manifest(fleet.route("chat"), weights)] if weights is not None else []
    return Placement(fleet, ClusterSnapshot.from_dicts(objs["pods"], objs["nodes"], objs["deployments"],
                                                       routes=routes))


def _by_workload(pl: Placement) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in pl.serving:
        assert r.workload is not None
        out[r.workload.name] = out.get(r.workload.name, 0.0) + pl.pod_rps(T)[r.key]
    return out


def test_at_its_declared_weights_a_route_changes_no_workloads_traffic(fleet: Fleet) -> None:
    without = _by_workload(_placement(fleet, None))
    assert _by_workload(_placement(fleet, {})) == without  # the declared weights
    assert _by_workload(_placement(fleet, {"chat-primary": 150, "chat-lite": 50})) == without  # same shares


def test_moved_weight_moves_the_routes_traffic_and_keeps_its_total(fleet: Fleet) -> None:
    base = _by_workload(_placement(fleet, None))
    shifted = _by_workload(_placement(fleet, {"chat-primary": 10, "chat-lite": 90}))
    total = base["chat-primary"] + base["chat-lite"]
    assert shifted["chat-primary"] + shifted["chat-lite"] == pytest.approx(total)
    assert shifted["chat-lite"] == pytest.approx(base["chat-lite"] + 0.65 * total)  # 25 → 90 points
    assert shifted["chat-primary"] < 0.2 * base["chat-primary"]
    for other in ("embed-api", "completion", "summarizer"):  # not on the route: untouched
        assert shifted[other] == base[other]
    sig = _placement(fleet, {"chat-primary": 10, "chat-lite": 90}).evaluate(T)
    lite = [s for k, s in sig.replicas.items() if k[1].startswith("chat-lite")]
    assert lite and all(s.kv_usage > 0.9 and s.waiting > 5 for s in lite)  # type: ignore[union-attr]


def test_a_backend_at_weight_zero_gets_nothing_and_all_zero_sends_nothing(fleet: Fleet) -> None:
    demand = {("llm-prod", "chat-primary"): 17.0, ("llm-prod", "chat-lite"): 5.5}
    moved = route_shift(fleet.route("chat"), {"chat-primary": 0, "chat-lite": 3}, demand)
    assert moved == {("llm-prod", "chat-primary"): 0.0, ("llm-prod", "chat-lite"): pytest.approx(22.5)}
    assert set(route_shift(fleet.route("chat"), {"chat-primary": 0, "chat-lite": 0}, demand).values()) == {0.0}


def test_a_route_to_a_workload_the_fleet_does_not_have_is_refused(fleet: Fleet) -> None:
    raw = fleet.model_dump()
    raw["routes"][0]["backends"].append({"workload": "embed-api", "weight": 5})  # another namespace
    with pytest.raises(ValueError, match="no workload 'embed-api' in llm-prod"):
        Fleet.model_validate(raw)


def test_traffic_shift_says_which_routes_and_backends_exist_before_touching_the_api(fleet: Fleet) -> None:
    with pytest.raises(faults.FaultError, match=r"neither a route .*chat"):
        faults.inject(None, fleet, "traffic-shift", "nope")  # type: ignore[arg-type]
    with pytest.raises(faults.FaultError, match="backend of no route"):
        faults.inject(None, fleet, "traffic-shift", "summarizer")  # type: ignore[arg-type]
    with pytest.raises(faults.FaultError, match="weight must be in"):
        faults.inject(None, fleet, "traffic-shift", "chat", {"weight": 0})  # type: ignore[arg-type]


# ---- the read tool ------------------------------------------------------------------------------------

def _route(weights: dict[str, int], applied: dict[str, int] | None, *, generation: int,
           managed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def spec(w: dict[str, int]) -> dict[str, Any]:
        return {"parentRefs": [{"name": "inference-gateway", "namespace": "platform"}],
                "hostnames": ["chat.inference.internal"],
                "rules": [{"backendRefs": [{"name": n, "port": 8000, "weight": v} for n, v in w.items()]}]}
    meta: dict[str, Any] = {"name": "chat", "namespace": "llm-prod", "generation": generation,
                            "creationTimestamp": "2026-12-01T00:00:00Z", "managedFields": managed or []}
    if applied is not None:
        meta["annotations"] = {LAST_APPLIED: json.dumps({"metadata": {"name": "chat"}, "spec": spec(applied)})}
    return {"metadata": meta, "spec": spec(weights)}


def _write(manager: str, at: str, fields: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    entry = {"manager": manager, "operation": "Update", "time": at, "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


APPLY = _write("kubectl-client-side-apply", "2026-12-01T00:00:00Z",
               {"f:metadata": {"f:annotations": {}}, "f:spec": {"f:hostnames": {}, "f:parentRefs": {},
                                                                 "f:rules": {}}})
EDIT = _write("kubectl-edit", "2026-12-07T14:56:00Z", {"f:spec": {"f:rules": {}}})
STATUS = _write("gateway-controller", "2026-12-07T14:59:00Z", {"f:status": {"f:parents": {}}}, "status")


def test_a_route_edited_after_its_apply_shows_the_old_weights_the_writer_and_when() -> None:
    obj = _route({"chat-primary": 10, "chat-lite": 90}, {"chat-primary": 75, "chat-lite": 25}, generation=2,
                 managed=[APPLY, EDIT, STATUS])
    r = reduce_route(obj, now=NOW, limit=200)
    lite = next(b for b in r.backends if b.name == "chat-lite")
    assert (lite.weight, lite.share, lite.applied_weight, lite.applied_share) == (90, 0.9, 25, 0.25)
    assert r.differs_from_applied and r.applied_known
    # The newest *spec* write: a gateway controller's later status write changes no weight.
    assert r.last_write is not None and r.last_write.manager == "kubectl-edit" and r.last_write.owns_backends
    assert r.changed_ago_s == 240.0
    assert r.parents == ["platform/inference-gateway"]


def test_a_route_never_changed_since_created_has_no_last_write_and_a_broken_annotation_is_ignored() -> None:
    r = reduce_route(_route({"chat-primary": 75, "chat-lite": 25}, {"chat-primary": 75, "chat-lite": 25},
                            generation=1, managed=[APPLY]), now=NOW, limit=200)
    assert r.last_write is None and r.changed_ago_s is None and not r.differs_from_applied
    obj = _route({"chat-primary": 10, "chat-lite": 90}, None, generation=2, managed=[APPLY, EDIT])
    obj["metadata"]["annotations"] = {LAST_APPLIED: '{"spec": {"rules": [{"backendRefs": [{"name": "x", '
                                                    '"weight": "ninety"}]}]}}'}
    r = reduce_route(obj, now=NOW, limit=200)
    assert r.applied_known and all(b.applied_weight == 0 for b in r.backends)  # "ninety" is no weight
    obj["metadata"]["annotations"] = {LAST_APPLIED: "not json"}
    r = reduce_route(obj, now=NOW, limit=200)
    assert not r.applied_known and not r.differs_from_applied and r.backends[1].applied_share is None


def test_route_features_are_the_alerting_deployments_share_now_and_as_applied() -> None:
    info = reduce_route(_route({"chat-primary": 10, "chat-lite": 90}, {"chat-primary": 75, "chat-lite": 25},
                               generation=2, managed=[APPLY, EDIT]), now=NOW, limit=200)
    result = K8sRoutesResult(routes=[info], total=1, dropped=0)
    f = extract(result, {"deployment": "chat-lite"})
    assert f["route"] == "chat" and f["share"] == 0.9 and f["applied_share"] == 0.25
    assert f["share_change"] == 0.65 and f["changed_by"] == "kubectl-edit" and f["changed_ago_min"] == 4.0
    assert f["applied_weights"] == "chat-primary 75, chat-lite 25"
    assert extract(result, {"deployment": "summarizer"}) == {"routes": 1}  # not a backend of it


# ---- the rules reasoner -------------------------------------------------------------------------------

LITE = {"namespace": "llm-prod", "model_name": "llama-3.1-8b-instruct", "deployment": "chat-lite", "route": "chat"}
SATURATED = [ev("kv", recent=0.94, baseline=0.31), ev("waiting", recent=114), ev("preemptions", max=0),
             ev("workload", replicas=2)]


def _routes(share: float, applied: float, changed_ago_s: float | None) -> Any:
    f: dict[str, Any] = {"routes": 1, "route": "chat", "share": share, "share_pct": round(share * 100),
                         "applied_share": applied, "applied_share_pct": round(applied * 100),
                         "share_change": round(share - applied, 4), "weights": "chat-primary 10, chat-lite 90",
                         "applied_weights": "chat-primary 75, chat-lite 25", "generation": 2,
                         "applied_known": True, "differs": share != applied}
    if changed_ago_s is not None:
        f |= {"changed_ago_s": changed_ago_s, "changed_ago_min": round(changed_ago_s / 60, 1),
              "changed_by": "kubectl-edit", "changed_backends": True}
    return ev("routes", **f)


def _traffic(mine: float, peers: float, total: float) -> list[Any]:
    return [ev("traffic", change_ratio=mine, recent=9.6), ev("peers_traffic", change_ratio=peers),
            ev("namespace_traffic", change_ratio=total)]


def test_a_route_that_moved_traffic_is_the_culprit_paged_with_the_weights_to_restore() -> None:
    hyps, props = diagnose(["routing-shift", "kv-cache-saturation", "healthy"],
                           [_routes(0.9, 0.25, 140), *_traffic(3.4, 0.22, 1.01), *SATURATED, *HEALTHY_FLEET], LITE)
    top = hyps[0]
    assert top.category == Category.ROUTING_SHIFT and top.confidence == 1.0
    assert top.culprit is not None and (top.culprit.kind, top.culprit.namespace, top.culprit.name) == (
        "HTTPRoute", "llm-prod", "chat")
    kv = next(h for h in hyps if h.category == Category.KV_CACHE_SATURATION)
    assert kv.confidence <= 0.5 and any("route chat moved traffic onto it" in s for s in kv.against)
    assert [p.kind for p in props] == [ActionKind.PAGE_HUMAN]
    assert props[0].target is not None and props[0].target.kind == "HTTPRoute"
    assert "chat-primary 75, chat-lite 25" in props[0].reason and "scaling chat-lite out" in props[0].reason


def test_without_the_last_applied_weights_time_writer_and_traffic_still_name_the_route() -> None:
    routes = _routes(0.9, 0.25, 140)
    for k in ("applied_share", "applied_share_pct", "share_change", "applied_weights"):
        routes.features.pop(k)
    routes.features |= {"applied_known": False, "differs": False}  # a server-side apply keeps no annotation
    hyps, _ = diagnose(["routing-shift", "kv-cache-saturation", "healthy"],
                       [routes, *_traffic(3.4, 0.22, 1.01), *SATURATED, *HEALTHY_FLEET], LITE)
    assert hyps[0].category == Category.ROUTING_SHIFT and hyps[0].confidence >= 0.6


def test_a_surge_behind_an_unchanged_route_is_still_kv_cache_saturation_scaled_out() -> None:
    # The route's weights are as applied and were last written days ago; the other models serve as usual.
    hyps, props = diagnose(["routing-shift", "kv-cache-saturation", "healthy"],
                           [_routes(0.25, 0.25, 5 * 86400), *_traffic(3.1, 1.0, 1.4), *SATURATED, *HEALTHY_FLEET],
                           LITE)
    assert hyps[0].category == Category.KV_CACHE_SATURATION
    assert next(h for h in hyps if h.category == Category.ROUTING_SHIFT).confidence == 0.0
    assert props[0].kind == ActionKind.SCALE


def test_a_backend_on_no_route_rules_the_routing_shift_out() -> None:
    hyps, _ = diagnose(["routing-shift", "kv-cache-saturation"],
                       [ev("routes", routes=0), *_traffic(3.1, 1.0, 1.4), *SATURATED], {**CTX})
    assert all(h.category != Category.ROUTING_SHIFT for h in hyps)
    failed = ev("routes", EvidenceStatus.ERROR)
    hyps, _ = diagnose(["routing-shift", "kv-cache-saturation"], [failed, *_traffic(3.1, 1.0, 1.4), *SATURATED],
                       {**CTX})
    assert hyps[0].category == Category.KV_CACHE_SATURATION  # a failed read is no evidence of a route change


def test_a_receiver_capped_at_its_capacity_still_shows_the_move_through_the_backends_that_lost_it() -> None:
    # Seen live: chat-lite's served requests only x1.26 (capped at capacity; an earlier surge in its baseline)
    # while the big model's fell to x0.25 and the namespace's total to x0.77.
    hyps, _ = diagnose(["routing-shift", "kv-cache-saturation", "healthy"],
                       [_routes(0.9, 0.25, 25), *_traffic(1.26, 0.25, 0.77), *SATURATED, *HEALTHY_FLEET], LITE)
    assert hyps[0].category == Category.ROUTING_SHIFT and hyps[0].confidence == 1.0
    assert any("serve x0.25 of theirs" in s for s in hyps[0].supporting)


def test_weight_given_to_a_backend_the_fleet_does_not_serve_leaves_the_fleet(fleet: Fleet) -> None:
    demand = {("llm-prod", "chat-primary"): 17.0, ("llm-prod", "chat-lite"): 5.5}
    moved = route_shift(fleet.route("chat"), {"chat-primary": 75, "chat-lite": 25, "elsewhere": 100}, demand)
    assert sum(moved.values()) == pytest.approx(22.5 / 2)  # half the weight now points outside the fleet
