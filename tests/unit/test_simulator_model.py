"""The fleet simulator's model: traffic and what replicas and GPUs do under it."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator import model
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.synthetic import fleet_snapshot
from tools.rightsize.catalog import PriceCatalog

# A Wednesday and a Sunday, at 15:00 UTC (chat-lite's peak hour).
WEDNESDAY_3PM = dt.datetime(2026, 11, 18, 15, tzinfo=dt.UTC).timestamp()
SUNDAY_3PM = dt.datetime(2026, 11, 22, 15, tzinfo=dt.UTC).timestamp()


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_prices()


def test_demand_is_the_same_for_the_same_instant(fleet: Fleet) -> None:
    traffic = fleet.workload("chat-primary").traffic
    for t in (WEDNESDAY_3PM, WEDNESDAY_3PM + 1234.5, SUNDAY_3PM):
        assert model.demand_rps(traffic, t, "llm-prod/chat-primary") == model.demand_rps(
            traffic, t, "llm-prod/chat-primary"
        )
    # ...but a different workload seed gives different noise and bursts
    assert model.demand_rps(traffic, WEDNESDAY_3PM, "a") != model.demand_rps(
        traffic, WEDNESDAY_3PM, "b"
    )


def test_demand_follows_the_day_and_the_week(fleet: Fleet) -> None:
    w = fleet.workload("chat-lite")
    day = [
        model.demand_rps(w.traffic, WEDNESDAY_3PM - 15 * 3600 + h * 3600, "s") for h in range(24)
    ]
    peak_hour = max(range(24), key=lambda h: day[h])
    assert abs(peak_hour - w.traffic.peak_hour_utc) <= 1
    assert max(day) > 3 * min(day)  # trough_ratio 0.2
    weekday = model.demand_rps(w.traffic, WEDNESDAY_3PM, "s")
    sunday = model.demand_rps(w.traffic, SUNDAY_3PM, "s")
    assert sunday == pytest.approx(weekday * w.traffic.weekend_ratio, rel=0.1)


def test_bursts_multiply_traffic_inside_their_windows(fleet: Fleet) -> None:
    tr = fleet.workload("chat-primary").traffic
    day = int(WEDNESDAY_3PM // 86400)
    windows = model.burst_windows("llm-prod/chat-primary", day, tr.bursts_per_day, tr.burst_minutes)
    assert len(windows) == tr.bursts_per_day
    start, end = windows[0]
    assert end - start == tr.burst_minutes * 60
    assert day * 86400 <= start < end <= (day + 1) * 86400
    inside = model.demand_rps(tr, start + 60, "llm-prod/chat-primary")
    baseline = tr.peak_rps * model.diurnal_level(tr, start + 60)
    assert inside == pytest.approx(baseline * tr.burst, rel=model.NOISE * 1.01)


def test_regressed_version_is_slower_and_fails_more_under_the_same_load(fleet: Fleet) -> None:
    good = fleet.version("llama-3.1-70b-instruct", "2025.06.1")
    bad = fleet.version("llama-3.1-70b-instruct", "2025.07.0")
    assert good is not None and bad is not None
    for rps in (1.0, 4.0, 6.0):
        g, b = model.vllm_signals(good, 1.0, rps), model.vllm_signals(bad, 1.0, rps)
        assert b.ttft.quantile(0.95) > 1.5 > g.ttft.quantile(0.95)
        assert b.error_share > 0.02 > g.error_share
        assert b.itl.median > g.itl.median
        assert b.prefix_hit < g.prefix_hit


def test_a_shrunk_context_refuses_long_prompts_with_4xx_and_leaves_latency_alone(fleet: Fleet) -> None:
    good = fleet.version("llama-3.1-70b-instruct", "2025.06.1")
    short = fleet.version("llama-3.1-70b-instruct", "2025.07.3")
    assert good is not None and short is not None
    g, s = model.vllm_signals(good, 1.0, 6.0), model.vllm_signals(short, 1.0, 6.0)
    assert g.client_error_rps == 0 and s.client_error_rps == pytest.approx(6.0 * 0.12)
    assert s.error_share == g.error_share  # refusals are 4xx, not 5xx
    assert s.success_rps == pytest.approx(g.success_rps - s.client_error_rps)
    assert s.ttft.quantile(0.95) == pytest.approx(g.ttft.quantile(0.95))


def test_tripled_traffic_fills_the_kv_cache_and_queues(fleet: Fleet, catalog: PriceCatalog) -> None:
    calm = Placement(fleet, fleet_snapshot(fleet, catalog))
    surge = Placement(
        fleet, fleet_snapshot(fleet, catalog, faults={"traffic": {"llm-prod/chat-lite": 3.0}})
    )
    c, s = calm.evaluate(WEDNESDAY_3PM), surge.evaluate(WEDNESDAY_3PM)
    lite = [
        r.key for r in calm.serving if r.workload is not None and r.workload.name == "chat-lite"
    ]
    assert lite
    for key in lite:
        before, after = c.replicas[key], s.replicas[key]
        assert isinstance(before, model.VllmSignals) and isinstance(after, model.VllmSignals)
        assert before.kv_usage < 0.8 and before.waiting == 0
        assert after.kv_usage > 0.9 and after.waiting > 5
        assert after.preemptions_per_s > 0 and after.ttft.quantile(
            0.95
        ) > 10 * before.ttft.quantile(0.95)
    # other workloads are untouched
    other = next(
        r.key for r in calm.serving if r.workload is not None and r.workload.name == "chat-primary"
    )
    assert c.replicas[other] == s.replicas[other]


def test_queueing_stays_negligible_below_the_knee_and_preemption_needs_a_full_cache(
    fleet: Fleet,
) -> None:
    mv = fleet.version("llama-3.1-8b-instruct", "2025.05.2")
    assert mv is not None
    for rho in (0.1, 0.5, 0.8):
        s = model.vllm_signals(mv, 1.0, rho * mv.max_rps)
        assert s.waiting == 0 and s.preemptions_per_s == 0
        assert s.kv_usage == pytest.approx(0.1 + 0.75 * rho, abs=1e-3)
    loads = [model.vllm_signals(mv, 1.0, rho * mv.max_rps) for rho in (1.0, 1.2, 1.5, 2.0)]
    assert all(a.waiting < b.waiting for a, b in itertools.pairwise(loads))
    assert all(s.kv_usage < 1.0 for s in loads)
    assert all(s.preemptions_per_s == 0 or s.kv_usage >= 0.95 for s in loads)
    assert loads[-1].served_rps == pytest.approx(mv.max_rps)  # throughput caps at capacity


def test_slower_gpus_saturate_sooner(fleet: Fleet) -> None:
    mv = fleet.version("llama-3.1-8b-instruct", "2025.05.2")
    assert mv is not None
    h100 = model.vllm_signals(mv, fleet.gpu_speed["NVIDIA-H100-80GB-HBM3"], 5.0)
    l4 = model.vllm_signals(mv, fleet.gpu_speed["NVIDIA-L4"], 5.0)
    assert l4.rho > 5 * h100.rho
    assert l4.ttft.median > h100.ttft.median and l4.kv_usage > h100.kv_usage


def test_vllm_memory_is_flat_while_activity_follows_load() -> None:
    spec = model.gpu_spec("NVIDIA-H100-80GB-HBM3")
    low = model.gpu_signals(
        spec, gr_active=0.05, fb_used_fraction=model.VLLM_MEMORY_FRACTION, loaded=True
    )
    high = model.gpu_signals(
        spec, gr_active=0.9, fb_used_fraction=model.VLLM_MEMORY_FRACTION, loaded=True
    )
    assert low.fb_used_mib == high.fb_used_mib == round(0.9 * spec.memory_mib)
    assert low.fb_used_mib + low.fb_free_mib < spec.memory_mib  # the driver reserves a little
    assert high.util_pct > low.util_pct and high.power_w > low.power_w and high.temp_c > low.temp_c
    assert high.tensor_active < high.gr_active
    lost = model.gpu_signals(spec, gr_active=0.9, fb_used_fraction=0.9, loaded=True, xid=79)
    assert lost.xid == 79 and lost.util_pct == 0 and lost.gr_active == 0


def test_triton_batches_more_under_load(fleet: Fleet) -> None:
    mv = fleet.version("bge-large-en-v1.5", "3")
    assert mv is not None
    light, busy = model.triton_signals(mv, 0.5, 10.0), model.triton_signals(mv, 0.5, 150.0)
    assert busy.avg_batch > 4 * light.avg_batch
    assert (
        busy.queue_us_per_request < busy.compute_us_per_request
    )  # healthy: computing, not queueing
    over = model.triton_signals(mv, 0.5, 300.0)
    assert over.queue_us_per_request > over.compute_us_per_request and over.pending > 0


def test_overload_queues_rather_than_failing(fleet: Fleet) -> None:
    mv = fleet.version("llama-3.1-8b-instruct", "2025.05.2")
    assert mv is not None
    surge = model.vllm_signals(mv, 1.0, 1.6 * mv.max_rps)
    assert surge.waiting > 50 and surge.kv_usage > 0.95
    assert surge.error_share < 0.02  # a surge is not an error-rate incident...
    assert (
        model.vllm_signals(mv, 1.0, 3.0 * mv.max_rps).error_share > 0.02
    )  # ...until it is extreme
