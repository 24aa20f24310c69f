"""Benchmark the simulator's start-up work and print the figures (not a test: nothing is asserted).

`python -m deploy.sandbox.simulator.bench [--days 14] [--step 120] [--cloudwatch-days 1]` runs the
Prometheus backfill of the shipped fleet (as the sandbox deploys it, without a cluster) through
the real promtool into a temporary directory, then the CloudWatch backfill into a moto server on
127.0.0.1 that it starts and stops itself, and times moto's ListMetrics on the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator.backfill import backfill
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.synthetic import fleet_snapshot
from tools.rightsize.catalog import PriceCatalog


def _prometheus(args: argparse.Namespace, fleet: Fleet, catalog: PriceCatalog) -> None:
    snap = fleet_snapshot(fleet, catalog)
    placement = Placement(fleet, snap)
    with tempfile.TemporaryDirectory(prefix="simulator-bench-") as tmp:
        result = backfill(
            placement,
            snap,
            end=time.time(),
            days=args.days,
            step=args.step,
            work_dir=Path(tmp) / "work",
            data_dir=Path(tmp) / "data",
            promtool=Path(args.promtool),
            ksm_instance="127.0.0.1:8080",
            progress=lambda m: print(f"  {m}", flush=True),
        )
        size = sum(f.stat().st_size for f in (Path(tmp) / "data").rglob("*") if f.is_file())
    print(
        f"prometheus backfill: {len(snap.pods)} pods, {len(placement.gpus)} GPUs, "
        f"{result.series} series, {result.samples / 1e6:.2f}M samples, {result.blocks} blocks "
        f"({size / 1e6:.0f} MB); generation {result.timings['generate_s']}s, promtool tail "
        f"{result.timings['promtool_tail_s']}s, total {result.timings['total_s']}s "
        f"on {os.cpu_count()} CPUs"
    )


def _cloudwatch(args: argparse.Namespace, fleet: Fleet, catalog: PriceCatalog) -> None:
    from moto.server import ThreadedMotoServer

    from deploy.sandbox.simulator.cloudwatch import ALB_NAMESPACE, CI_NAMESPACE, CloudWatchPublisher

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        placement = Placement(fleet, fleet_snapshot(fleet, catalog))
        publisher = CloudWatchPublisher(fleet, url)
        stats = publisher.backfill(
            placement, end=time.time(), days=args.cloudwatch_days, progress=lambda _m: None
        )
        print(
            f"cloudwatch backfill: {args.cloudwatch_days:g} days, "
            f"{stats['cloudwatch_datums']} datums, {stats['cloudwatch_log_events']} log events "
            f"in {stats['cloudwatch_backfill_s']}s"
        )
        cw = publisher.cw
        for kwargs in (
            {"Namespace": ALB_NAMESPACE, "MetricName": "RequestCount"},
            {"Namespace": CI_NAMESPACE, "MetricName": "node_gpu_utilization"},
            {"Namespace": CI_NAMESPACE},
            {},
        ):
            t0 = time.monotonic()
            cw.list_metrics(**kwargs)
            print(f"  moto ListMetrics {kwargs or '(no filter)'}: {time.monotonic() - t0:.2f}s")
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--days", type=float, default=14.0)
    p.add_argument("--step", type=float, default=120.0)
    p.add_argument(
        "--cloudwatch-days", type=float, default=1.0, help="0 skips the CloudWatch part."
    )
    p.add_argument("--promtool", default=shutil.which("promtool") or "/usr/bin/promtool")
    args = p.parse_args()
    fleet, catalog = Fleet.load(), load_prices()
    _prometheus(args, fleet, catalog)
    if args.cloudwatch_days > 0:
        _cloudwatch(args, fleet, catalog)


if __name__ == "__main__":
    main()
