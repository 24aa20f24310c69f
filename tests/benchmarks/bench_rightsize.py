"""Backtest the right-sizing engine: recommend on days 1–7, replay days 8–14 through the simulator's model.

Not a test (nothing is asserted): prints, per workload and in total, the SLO breach hours the
recommendation would have caused (against the same replay of the current shape) and the savings.

    uv run python tests/benchmarks/bench_rightsize.py [--days 14] [--scenario shipped|idle-overprovision]

History comes from `deploy/sandbox/simulator/model.py` (traffic curves, vLLM and Triton saturation),
stepped the way `rightsize_fleet_history` aggregates Prometheus. The replay evaluates every 5
minutes: demand at that time, the replicas in effect (scale-down windows applied), each replica's
TTFT p95 on the recommended GPU (the simulator's relative speed; a MIG slice gets its share of
compute), a breach when it exceeds the fleet's SLO (or when a scaled-to-zero window sees traffic).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.config import RightsizeConfig, SloConfig
from agent.rightsize.engine import Confidence, Recommendation, Shape, recommend
from deploy.sandbox.fleet import Fleet, Workload
from deploy.sandbox.simulator import model
from tests.rightsize_synth import workload_history
from tools.rightsize.catalog import HOURS_PER_MONTH, PriceCatalog

START = 1_780_012_800.0  # a UTC midnight (a Monday)


def replicas_at(shape: Shape, rec: Recommendation | None, t: float) -> int:
    if rec is None:
        return shape.replicas
    hour = int(t % 86400 // 3600)
    weekday = (int(t // 86400) + 3) % 7 < 5
    for w in rec.scale_windows:
        if (w.days == "weekdays") == weekday and w.start_hour_utc <= hour < w.end_hour_utc:
            return w.replicas
    return shape.replicas


def replay(fleet: Fleet, w: Workload, shape: Shape, rec: Recommendation | None, start: float, days: float,
           traffic: float) -> tuple[float, float]:
    """(breach hours, cost USD) of running `shape` (with `rec`'s windows) from `start` for `days`."""
    mv = fleet.version(w.model, w.version)
    assert mv is not None
    speed = fleet.gpu_speed.get(shape.gpu_product or "", 1.0)
    if shape.mig_profile:
        speed *= int(shape.mig_profile[0]) / 7.0
    breach_s = cost = 0.0
    seed = f"{w.namespace}/{w.name}"
    for k in range(int(days * 86400 // 300)):
        t = start + 300 * k
        demand = sum(model.demand_rps(w.traffic, t + 60 * j + 30, seed) for j in range(5)) / 5 * traffic
        n = replicas_at(shape, rec, t)
        cost += n * shape.price_per_replica_hour * 300 / 3600
        if n == 0:
            breach_s += 300 if demand > 0.01 else 0
            continue
        if w.runtime == "vllm":
            s = model.vllm_signals(mv, speed, demand / n)
            latency, errors = s.ttft.quantile(0.95), s.error_share
        else:
            ts = model.triton_signals(mv, speed, demand / n)
            latency, errors = ts.request_us_per_request / 1e6, ts.failure_rps / max(ts.success_rps + ts.failure_rps,
                                                                                    1e-9)
        if latency > w.slo.ttft_p95_s or errors > w.slo.error_rate:
            breach_s += 300
    return breach_s / 3600, cost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=float, default=14)
    p.add_argument("--scenario", choices=["shipped", "idle-overprovision"], default="shipped")
    p.add_argument("--no-windows", action="store_true", help="Recommend shapes only, no scale-down windows.")
    p.add_argument("--shape-headroom", type=float, default=None,
                   help="rightsize.shape_headroom (default: the setting's default).")
    args = p.parse_args()
    fleet = Fleet.load()
    cfg = RightsizeConfig(slo={w.model: SloConfig(ttft_p95_s=w.slo.ttft_p95_s) for w in fleet.workloads},
                          **({"window_min_hours": 24, "scale_to_zero": False} if args.no_windows else {}),
                          **({"shape_headroom": args.shape_headroom} if args.shape_headroom else {}))
    catalog = PriceCatalog.load(cfg.price_catalog)
    half = args.days / 2
    t0 = time.monotonic()
    total_now = total_new = 0.0
    breach_base = breach_new = 0.0
    print(f"backtest: recommend on days 1–{half:g}, replay days {half + 1:g}–{args.days:g} ({args.scenario})")
    print(f"{'workload':24} {'current':34} {'recommended':40} {'breach h base':>13} {'breach h rec':>12} "
          f"{'saves $/mo':>10}")
    for w in fleet.workloads:
        over = {}
        traffic = 1.0
        if args.scenario == "idle-overprovision" and w.name == fleet.faults["idle-overprovision"]["workload"]:
            f = fleet.faults["idle-overprovision"]
            over = {"replicas": lambda _t, n=int(f["replicas"]): n}
            traffic = float(f["traffic_multiplier"])
        times, h = workload_history(fleet, w, start=START, days=half, traffic=traffic, **over)  # type: ignore[arg-type]
        rec = recommend(h, times=times, step_s=1800, catalog=catalog, cfg=cfg)
        if rec.current is None or rec.recommended is None or rec.confidence == Confidence.INSUFFICIENT:
            print(f"{w.namespace}/{w.name:24} no recommendation: {rec.reason}")
            continue
        replay_start = START + half * 86400
        b0, c0 = replay(fleet, w, rec.current, None, replay_start, half, traffic)
        b1, c1 = replay(fleet, w, rec.recommended, rec, replay_start, half, traffic)
        month = HOURS_PER_MONTH / (half * 24)
        total_now += c0 * month
        total_new += c1 * month
        breach_base += b0
        breach_new += b1
        print(f"{w.namespace + '/' + w.name:24} {rec.current.describe():34} {rec.recommended.describe():40} "
              f"{b0:13.2f} {b1:12.2f} {(c0 - c1) * month:10,.0f}  ({len(rec.scale_windows)} windows, "
              f"risk {rec.slo_risk.value})")
    print(f"total: replayed cost {total_now:,.0f} → {total_new:,.0f} USD/month (saves {total_now - total_new:,.0f}, "
          f"{(total_now - total_new) / total_now:.0%}); SLO breach hours {breach_base:.2f} at the current shape, "
          f"{breach_new:.2f} if applied (beyond baseline: {max(0.0, breach_new - breach_base):.2f}); "
          f"{time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
