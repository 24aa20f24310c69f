"""Right-sizing engine, cost model and change specs on histories from the simulator's own model."""

from __future__ import annotations

import math

import pytest

from agent.config import RightsizeConfig
from agent.models import ActionKind
from agent.rightsize.changes import button_value, change_specs, predicted_cost_delta, spec_from_button
from agent.rightsize.cost import cost_report
from agent.rightsize.engine import TREND_MIN_R2, Confidence, SloRisk, _fit, quantile, recommend
from deploy.sandbox import rollouts
from deploy.sandbox.fleet import Fleet
from tests.rightsize_synth import fleet_history, workload_history
from tools.rightsize.catalog import HOURS_PER_MONTH, PriceCatalog
from tools.rightsize.queries import WorkloadLabels, families

START = 1_780_012_800.0  # a UTC midnight
CFG = RightsizeConfig()
CATALOG = PriceCatalog.load(CFG.price_catalog)
FLEET = Fleet.load()


def _rec(name: str, cfg: RightsizeConfig = CFG, **kw: object):  # type: ignore[no-untyped-def]
    times, h = workload_history(FLEET, FLEET.workload(name), start=START, days=kw.pop("days", 14), **kw)  # type: ignore[arg-type]
    return h, recommend(h, times=times, step_s=1800.0, catalog=CATALOG, cfg=cfg)


def test_overprovisioned_workload_gets_fewer_replicas_and_savings_match_the_catalog() -> None:
    cfg = CFG.model_copy(update={"consider_gpu_types": False})
    _, rec = _rec("completion", cfg, replicas=lambda t: 6, traffic=0.05)
    assert rec.current is not None and rec.recommended is not None
    assert rec.current.replicas == 6 and rec.recommended.replicas == 1
    per_gpu = CATALOG.instance_types["p4d.24xlarge"].price_per_hour / 8
    shape_saving = (6 - 1) * 2 * per_gpu * HOURS_PER_MONTH
    assert rec.monthly_cost_current == pytest.approx(6 * 2 * per_gpu * HOURS_PER_MONTH, abs=0.01)
    windows = sum(w.monthly_savings for w in rec.scale_windows)
    assert rec.monthly_savings == pytest.approx(shape_saving + windows, abs=0.02)
    # Six replicas at 5 % traffic never ran hot: the capacity comes from the KV-cache / busy trend.
    assert rec.evidence["capacity_extrapolated_from"] and rec.slo_risk == SloRisk.MEDIUM
    assert rec.confidence == Confidence.MEDIUM


def test_workload_that_never_breached_is_not_scaled_up() -> None:
    _, rec = _rec("summarizer", CFG.model_copy(update={"consider_gpu_types": False}))
    assert rec.recommended is not None and rec.recommended.replicas == 1


def test_saturated_workload_is_scaled_up_and_flagged() -> None:
    # chat-lite at twice its traffic on its two L4s breaks its TTFT SLO at the daily peak.
    _, rec = _rec("chat-lite", CFG.model_copy(update={"consider_gpu_types": False}), traffic=2.0)
    assert rec.current is not None and rec.recommended is not None
    assert rec.evidence["steps_breaching_slo"] > 0  # type: ignore[operator]
    assert rec.recommended.replicas > rec.current.replicas
    assert rec.monthly_savings < 0


def test_insufficient_data_gives_no_recommendation_and_says_so() -> None:
    _, rec = _rec("completion", days=2 / 24)
    assert rec.confidence == Confidence.INSUFFICIENT
    assert rec.recommended is None and "insufficient data" in rec.reason
    assert not change_specs(rec, "c").specs


def test_cheaper_gpu_type_is_recommended_with_extrapolation_risk() -> None:
    _, rec = _rec("summarizer", traffic=0.3)  # a 7B model using a third of an A100: a MIG slice will do
    assert rec.recommended is not None and rec.current is not None
    assert rec.recommended.monthly_cost < rec.current.monthly_cost * 0.9
    new = rec.recommended
    assert new.mig_profile is not None and new.instance_type is not None and new.gpu_product is not None
    # Priced per slice: its compute sevenths of the GPU's hourly price.
    prof = CATALOG.product(new.gpu_product).mig_profiles[new.mig_profile]
    it = CATALOG.instance_types[new.instance_type]
    assert new.price_per_replica_hour == pytest.approx(it.price_per_gpu_hour * prof.slices / 7)
    # The slice holds the model: 7.25 B params × 2 bytes × 1.2 within vLLM's 90 % of the slice's memory.
    assert prof.memory_gib * 0.9 >= rec.evidence["model_memory_gib"] > 15  # type: ignore[operator]
    assert rec.slo_risk in (SloRisk.MEDIUM, SloRisk.HIGH)
    planned = change_specs(rec, "sandbox")
    assert [s.action for s in planned.specs] == [ActionKind.DEPLOY]
    assert planned.specs[0].params["mig_profile"] == new.mig_profile and "gpus" not in planned.specs[0].params
    assert f"one MIG {new.mig_profile} slice" in planned.note


def test_one_step_off_the_trend_does_not_void_the_capacity_the_trend_shows() -> None:
    """One step in 144 off the GPU-activity line (a missed scrape, a pod restarting, the first step after a
    gap) sank r² of a narrow load range below 0.9, and the report fell back to the highest load observed: a
    7B model using a third of two A100s (the sandbox's digest-assist) got no MIG slice. The steps furthest
    off the line are left out of the fit now."""
    fleet = rollouts.merged_fleet(FLEET)[0]
    times, h = workload_history(fleet, fleet.workload("digest-assist"), start=START, days=0.5, step=300.0)
    clean = recommend(h, times=times, step_s=300.0, catalog=CATALOG, cfg=CFG)
    assert clean.evidence["capacity_extrapolated_from"] == "GPU engine activity", clean.evidence
    assert clean.recommended is not None and clean.recommended.mig_profile == "3g.20gb", clean.reason
    busy = list(h.gpu_busy)
    busy[-2] *= 1.6  # one step whose engine activity read well above the line
    load = [d / r for d, r in zip(h.demand_rps, h.replicas, strict=True)]
    plain = _fit(load, busy, trim=0.0)
    assert plain is not None and plain.r2 < TREND_MIN_R2, "one step must sink an untrimmed fit, or this proves nothing"
    rec = recommend(h.model_copy(update={"gpu_busy": busy}), times=times, step_s=300.0, catalog=CATALOG, cfg=CFG)
    assert rec.evidence["capacity_extrapolated_from"] == "GPU engine activity", rec.evidence["capacity_trends"]
    assert rec.evidence["capacity_per_replica_rps"] == pytest.approx(clean.evidence["capacity_per_replica_rps"],
                                                                     rel=0.02)
    assert rec.recommended == clean.recommended
    assert "(7 furthest off left out)" in str(rec.evidence["capacity_trends"]), rec.evidence["capacity_trends"]


def test_engine_activity_unrelated_to_load_is_not_extrapolated_and_the_report_says_why() -> None:
    times, h = workload_history(FLEET, FLEET.workload("summarizer"), start=START, days=3, step=300.0,
                                traffic=0.3)
    noise = [0.2 + 0.6 * ((i * 7919) % 101) / 100 for i in range(len(h.gpu_busy))]  # no relation to load
    rec = recommend(h.model_copy(update={"gpu_busy": noise}), times=times, step_s=300.0, catalog=CATALOG, cfg=CFG)
    trends = str(rec.evidence["capacity_trends"])
    assert rec.evidence.get("capacity_extrapolated_from") != "GPU engine activity", trends
    assert "GPU engine activity: r²" in trends and "not used" in trends.split("GPU engine activity")[1], trends


def test_scale_to_zero_window_for_an_idle_night() -> None:
    fleet = FLEET
    w = fleet.workload("completion")
    traffic = w.traffic.model_copy(update={"trough_ratio": 0.0})
    w0 = w.model_copy(update={"traffic": traffic})
    times, h = workload_history(fleet, w0, start=START, days=14)
    # Zero the nights outright (a batch workload that only runs in office hours): every step that lies
    # in 00:00–06:00 (a point is the step ending at its time).
    for i, t in enumerate(times):
        if 0 < t % 86400 <= 6 * 3600:
            h.demand_peak_rps[i] = 0.0
            h.demand_rps[i] = 0.0
    rec = recommend(h, times=times, step_s=1800, catalog=CATALOG, cfg=CFG.model_copy(
        update={"consider_gpu_types": False}))
    zero = [x for x in rec.scale_windows if x.replicas == 0]
    assert zero and zero[0].start_hour_utc == 0 and zero[0].end_hour_utc >= 6


def test_a_ramp_inside_a_step_keeps_its_hour_out_of_the_window() -> None:
    """Traffic that starts at 05:30 is in the step ending 06:00: hour 5 must not be scaled to zero."""
    w = FLEET.workload("completion")
    w0 = w.model_copy(update={"traffic": w.traffic.model_copy(update={"trough_ratio": 0.0})})
    times, h = workload_history(FLEET, w0, start=START, days=14)
    busy = max(x for x in h.demand_peak_rps if not math.isnan(x))
    for i, t in enumerate(times):
        if 0 < t % 86400 <= 6 * 3600:
            early = t % 86400 == 6 * 3600  # the step 05:30–06:00
            h.demand_peak_rps[i] = h.demand_rps[i] = busy if early else 0.0
    rec = recommend(h, times=times, step_s=1800, catalog=CATALOG, cfg=CFG.model_copy(
        update={"consider_gpu_types": False}))
    zero = [x for x in rec.scale_windows if x.replicas == 0]
    assert zero and all(x.start_hour_utc == 0 and x.end_hour_utc <= 5 for x in zero), zero


def test_cpu_and_memory_are_sized_the_vpa_way() -> None:
    times, h = workload_history(FLEET, FLEET.workload("summarizer"), start=START, days=7)
    h.cpu_usage_cores[:] = [1.0 + (i % 10) / 10 for i in range(len(times))]  # 1.0 .. 1.9 cores
    h.memory_usage_bytes[:] = [8e9] * len(times)
    h.memory_usage_bytes[5] = 10e9
    h.oom_kills = 1
    rec = recommend(h, times=times, step_s=1800, catalog=CATALOG, cfg=CFG)
    assert rec.cpu is not None and rec.memory is not None
    assert rec.cpu.target == pytest.approx(quantile(h.cpu_usage_cores, 0.9) * 1.15, rel=1e-3)
    assert rec.cpu.lower < rec.cpu.target < rec.cpu.upper
    assert rec.memory.target == pytest.approx(10e9 * 1.2, rel=1e-6)  # OOM bump beats peak × 1.15
    assert "OOM" in rec.memory.note


def test_cost_reconciles_to_node_pools_and_splits_idle() -> None:
    fh = fleet_history(FLEET, start=START, days=3)
    rep = cost_report(fh, CATALOG)
    hours = 3 * 24
    expected_nodes = sum(p.nodes * CATALOG.instance_types[p.instance_type].price_per_hour * hours for p in FLEET.pools)
    assert rep.node_cost == pytest.approx(expected_nodes, rel=1e-6)
    assert rep.workload_cost + rep.unallocated_cost == pytest.approx(rep.node_cost, abs=0.05)
    assert abs(rep.reconciliation_error) < 0.05
    cp = next(w for w in rep.workloads if w.name == "chat-primary")
    assert cp.gpu_hours == pytest.approx(3 * 4 * hours)
    assert cp.cost == pytest.approx(12 * 55.04 / 8 * hours, rel=1e-6)
    assert 0 < cp.idle_cost < cp.cost
    assert cp.cost_per_million_tokens and cp.cost_per_million_tokens > 0
    assert {r.key for r in rep.by_team} == {w.team for w in FLEET.workloads}
    assert sum(sum(v) for v in rep.daily_by_model.values()) == pytest.approx(rep.workload_cost, abs=0.5)


def test_reconciliation_error_shows_allocations_without_nodes() -> None:
    fh = fleet_history(FLEET, start=START, days=1)
    fh.nodes_by_instance["p5.48xlarge"] = [1.0] * len(fh.times)  # 8 GPUs, but chat-primary holds 12
    rep = cost_report(fh, CATALOG)
    assert rep.reconciliation_error == pytest.approx(0.0, abs=0.05)
    assert rep.unallocated_cost < 0  # over-allocation shows as negative unallocated, not silently dropped


def test_change_specs_and_predicted_cost_delta() -> None:
    _, rec = _rec("completion", CFG.model_copy(update={"consider_gpu_types": False}), replicas=lambda t: 6,
                  traffic=0.05)
    planned = change_specs(rec, "sandbox-gpu-1")
    assert [s.action for s in planned.specs] == [ActionKind.SCALE]
    spec = planned.specs[0]
    assert spec.params["replicas"] == 1 and spec.target.name == "completion"
    live = {"kind": "Deployment", "spec": {"replicas": 6, "template": {"spec": {
        "nodeSelector": {"opsagent.dev/node-pool": "a100"},
        "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}}
    delta = predicted_cost_delta(spec, live, CATALOG)
    assert delta == pytest.approx(-(6 - 1) * 2 * 21.96 / 8 * HOURS_PER_MONTH, abs=0.01)
    assert delta == pytest.approx(-(rec.monthly_cost_current - rec.monthly_cost_recommended), abs=0.02)
    rid, back = spec_from_button(button_value(rec, spec))
    assert rid == rec.id and back == spec
    with pytest.raises(ValueError, match="not a right-sizing button"):
        spec_from_button('{"spec": 1}')
    assert predicted_cost_delta(spec.model_copy(update={"action": ActionKind.ROLLBACK}), live, CATALOG) is None
    unknown = {"spec": {"replicas": 6, "template": {"spec": {"containers": []}}}}
    assert predicted_cost_delta(spec.model_copy(update={"params": {"replicas": 1}}), unknown, CATALOG) is None


def test_a_scale_down_larger_than_the_policy_allows_is_proposed_as_its_first_step() -> None:
    _, rec = _rec("completion", CFG.model_copy(update={"consider_gpu_types": False}), replicas=lambda t: 6,
                  traffic=0.05)
    planned = change_specs(rec, "sandbox-gpu-1", max_capacity_drop=0.5)
    assert [s.params["replicas"] for s in planned.specs] == [3]  # 6 → 3 removes exactly half
    assert "at most 50% of capacity" in planned.note and "3 → 1" in planned.note
    assert change_specs(rec, "sandbox-gpu-1", max_capacity_drop=0.9).specs[0].params["replicas"] == 1


def test_query_count_does_not_depend_on_the_fleet() -> None:
    fams = families(WorkloadLabels(), step="30m", rate_window="5m", window="14d")
    assert len(fams) <= 20
    assert all("by (namespace, pod" in f.expr.text or f.name in ("nodes", "node_types", "spec_replicas")
               for f in fams)
    scoped = families(WorkloadLabels(), step="30m", rate_window="5m", window="14d", namespaces=('we"ird',))
    assert 'namespace=~"we\\"ird"' in scoped[0].expr.text


def test_quantile_ignores_missing() -> None:
    assert quantile([math.nan, 1.0, 3.0], 0.5) == 2.0
    assert math.isnan(quantile([math.nan], 0.5))


def test_the_report_shows_a_mig_moves_cost_capacity_and_memory_arithmetic() -> None:
    _, rec = _rec("summarizer", traffic=0.3)
    new = rec.recommended
    assert new is not None and new.mig_profile is not None and new.gpu_product is not None
    line = new.cost_arithmetic()
    prof = CATALOG.product(new.gpu_product).mig_profiles[new.mig_profile]
    per_gpu = new.price_per_replica_hour * 7 / prof.slices
    assert f"({prof.slices}/7 of a ${per_gpu:.3f}/GPU-h GPU)" in line
    assert line.endswith(f"× 730 h = ${new.monthly_cost:,.0f}/month")
    fit = str(rec.evidence["memory_fit"])
    assert f"≤ {prof.memory_gib:g} GiB × 0.9" in fit and f"MIG {new.mig_profile} slice" in fit
    assert float(rec.evidence["capacity_per_replica_after_rps"]) > 0  # type: ignore[arg-type]


def test_a_workload_on_mig_slices_is_priced_per_slice_and_read_from_its_mig_resource() -> None:
    from tools.rightsize.history import mig_profile, mig_sevenths

    assert mig_profile("nvidia_com_mig_3g_20gb") == "3g.20gb" and mig_sevenths("nvidia_com_mig_3g_20gb") == 3
    assert mig_profile("nvidia_com_mig_1g_10gb_me") == "1g.10gb+me"
    assert mig_profile("nvidia_com_gpu") is None and mig_sevenths("cpu") is None
    times, h = workload_history(FLEET, FLEET.workload("summarizer"), start=START, days=14)
    # The same history as if each replica held one 3g.20gb slice of its A100 (3/7 of a GPU allocated).
    on_slice = h.model_copy(update={"mig_profile": "3g.20gb", "gpus_per_replica": 1.0, "gpus_by_instance": {
        it: [x * 3 / 7 for x in xs] for it, xs in h.gpus_by_instance.items()}})
    rec = recommend(on_slice, times=times, step_s=1800.0, catalog=CATALOG, cfg=CFG)
    assert rec.current is not None and rec.current.mig_profile == "3g.20gb"
    per_gpu = CATALOG.instance_types["p4d.24xlarge"].price_per_gpu_hour
    assert rec.current.price_per_replica_hour == pytest.approx(per_gpu * 3 / 7)
    assert rec.monthly_cost_current == pytest.approx(rec.current.replicas * per_gpu * 3 / 7 * HOURS_PER_MONTH, abs=0.01)
    assert "MIG 3g.20gb" in rec.current.describe()
    # The cost model sums GPU-equivalents: a slice's 3/7 costs 3/7 of the GPU's hour.
    from agent.rightsize.cost import workload_cost

    row, _, _, _ = workload_cost(on_slice, CATALOG, 0.5)
    full, _, _, _ = workload_cost(h, CATALOG, 0.5)
    assert row.cost == pytest.approx(full.cost * 3 / 7)


def test_after_a_move_to_slices_the_capacity_seen_on_whole_gpus_is_scaled_to_the_slice() -> None:
    """The next report after a move reads history from both shapes: a load a whole A100 held is not one
    a 3/7 slice holds, so it must not advise fewer slices than the load needs."""
    times, h = workload_history(FLEET, FLEET.workload("summarizer"), start=START, days=14)
    whole = recommend(h, times=times, step_s=1800.0, catalog=CATALOG, cfg=CFG)
    half = len(times) // 2
    moved = h.model_copy(update={"mig_profile": "3g.20gb", "gpus_per_replica": 1.0, "gpus_by_instance": {
        it: [x * 3 / 7 if i >= half else x for i, x in enumerate(xs)] for it, xs in h.gpus_by_instance.items()}})
    rec = recommend(moved, times=times, step_s=1800.0, catalog=CATALOG, cfg=CFG)
    cap_whole = float(whole.evidence["capacity_per_replica_rps"])  # type: ignore[arg-type]
    cap_slice = float(rec.evidence["capacity_per_replica_rps"])  # type: ignore[arg-type]
    assert cap_slice == pytest.approx(cap_whole * 3 / 7, rel=0.05), (cap_whole, cap_slice)


def test_the_step_of_the_move_itself_is_left_out_of_the_capacity() -> None:
    """Read one step after the promotion: that step's GPU activity still comes from the old whole GPUs while its
    load is on the slices, a point on neither shape's line."""
    # Half a day of 5-minute steps, as the sandbox keeps; the move in its last step.
    times, h = workload_history(FLEET, FLEET.workload("summarizer"), start=START, days=0.5, step=300.0)
    whole = recommend(h, times=times, step_s=300.0, catalog=CATALOG, cfg=CFG)
    last = len(times) - 1
    moved = h.model_copy(update={
        "mig_profile": "3g.20gb", "gpus_per_replica": 1.0,
        "gpus_by_instance": {it: [x * 3 / 7 if i == last else x for i, x in enumerate(xs)]
                             for it, xs in h.gpus_by_instance.items()},
        # the slices' load is what the whole GPU carried: their engines would be 7/3 as busy, but DCGM still
        # reports the old GPUs' activity for that step
        "demand_rps": [d * 2 if i == last else d for i, d in enumerate(h.demand_rps)],
        "demand_peak_rps": [d * 2 if i == last else d for i, d in enumerate(h.demand_peak_rps)]})
    rec = recommend(moved, times=times, step_s=300.0, catalog=CATALOG, cfg=CFG)
    cap_whole = float(whole.evidence["capacity_per_replica_rps"])  # type: ignore[arg-type]
    assert float(rec.evidence["capacity_per_replica_rps"]) == pytest.approx(  # type: ignore[arg-type]
        cap_whole * 3 / 7, rel=0.05)
