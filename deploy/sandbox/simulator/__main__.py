"""`python -m deploy.sandbox.simulator`: backfill history, then serve live fleet metrics.

Start-up order: wait until every fleet workload has a Ready pod; write the Prometheus history
(promtool blocks into `--backfill-data-dir`) and the CloudWatch history; then serve `/metrics` and
`/healthz`, re-reading the cluster and advancing the series every `--tick` seconds and publishing
CloudWatch every minute. `STATE_DIR/simulator-ready.json` appears once metrics are served.
SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator import cluster
from deploy.sandbox.simulator.alarms import AlarmBridge, AlarmEvaluator, alb_5xx_alarm
from deploy.sandbox.simulator.backfill import (
    MAX_SAMPLES,
    BackfillCancelled,
    BackfillError,
    backfill,
)
from deploy.sandbox.simulator.cloudwatch import CloudWatchPublisher
from deploy.sandbox.simulator.exporter import LiveFleet, MetricsServer
from deploy.sandbox.simulator.ksm import DEFAULT_ALLOWLIST
from deploy.sandbox.simulator.placement import Placement

LOG_FLUSH_S = 5.0  # how often live log lines are shipped to CloudWatch Logs (Fluent Bit's default flush is 1-5 s)

log = logging.getLogger("deploy.sandbox.simulator")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deploy.sandbox.simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kubeconfig", type=Path, required=True, help="Kubeconfig of the sandbox cluster."
    )
    p.add_argument("--fleet", type=Path, required=True, help="fleet.yaml")
    p.add_argument("--prices", type=Path, required=True, help="price-catalog.yaml")
    p.add_argument(
        "--listen", default="127.0.0.1:9400", help="HOST:PORT to serve on (loopback only)."
    )
    p.add_argument(
        "--ksm-instance",
        default=None,
        help="HOST:PORT of kube-state-metrics: its series are backfilled with this instance.",
    )
    p.add_argument(
        "--ksm-allowlist",
        default=DEFAULT_ALLOWLIST,
        help="kube-state-metrics' --metric-labels-allowlist, to label backfilled series alike.",
    )
    p.add_argument("--backfill-days", type=float, default=14.0, help="Days of Prometheus history.")
    p.add_argument(
        "--backfill-step", type=float, default=120.0, help="Seconds between history samples."
    )
    p.add_argument(
        "--backfill-data-dir",
        type=Path,
        default=None,
        help="Prometheus TSDB directory to write history blocks into (no history if unset).",
    )
    p.add_argument(
        "--backfill-max-samples",
        type=int,
        default=MAX_SAMPLES,
        help="Coarsen the step (never the days) when a large fleet's history would exceed this.",
    )
    p.add_argument("--promtool", type=Path, default=Path("/usr/bin/promtool"))
    p.add_argument(
        "--cloudwatch-endpoint", default=None, help="CloudWatch/Logs endpoint URL (moto)."
    )
    p.add_argument(
        "--cloudwatch-backfill-days",
        type=float,
        default=1.0,
        help="Days of 5-minute CloudWatch history (moto's ListMetrics slows down with more).",
    )
    p.add_argument(
        "--alertmanager",
        default=None,
        help="Alertmanager URL the CloudWatch alarm bridge posts alarms in ALARM to (no bridge if unset).",
    )
    p.add_argument(
        "--state-dir", type=Path, default=None, help="Where simulator-ready.json is written."
    )
    p.add_argument("--tick", type=float, default=2.0, help="Seconds between live updates.")
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="Seconds to wait for every workload to have a Ready pod.",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _wait_for_workloads(
    api: Any,
    fleet: Fleet,
    timeout: float,
    stop: threading.Event,
) -> cluster.ClusterSnapshot:
    deadline = time.monotonic() + timeout
    wanted = {(w.namespace, w.name) for w in fleet.workloads if w.replicas > 0}
    missing: set[tuple[str, str]] = wanted
    last_error: Exception | None = None
    while not stop.is_set():
        try:
            snap = cluster.read_snapshot(api)
            missing = wanted - Placement(fleet, snap).ready_workloads()
            if not missing:
                return snap
        except Exception as e:  # the API may still be warming up
            last_error = e
        if time.monotonic() > deadline:
            names = ", ".join(f"{ns}/{n}" for ns, n in sorted(missing))
            raise TimeoutError(
                f"no Ready pod after {timeout:.0f}s for: {names}"
                + (f" (last API error: {last_error})" if last_error else "")
            )
        stop.wait(1.0)
    raise InterruptedError("stopped while waiting for workloads")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)  # atomic: the sandbox polls for this file's existence


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    host, _, port = args.listen.rpartition(":")
    if host != "127.0.0.1":
        raise SystemExit(f"--listen {args.listen}: the simulator binds 127.0.0.1 only")
    t_start = time.monotonic()
    timings: dict[str, Any] = {}
    fleet = Fleet.load(args.fleet)
    load_prices(args.prices)  # validated so a broken catalog fails here, not in a report
    api = cluster.api_client(args.kubeconfig)

    t0 = time.monotonic()
    log.info("waiting for a Ready pod of each of %d workloads", len(fleet.workloads))
    snapshot = _wait_for_workloads(api, fleet, args.ready_timeout, stop)
    timings["wait_for_pods_s"] = round(time.monotonic() - t0, 2)
    placement = Placement(fleet, snapshot)
    now = time.time()

    state: dict[Any, float] = {}
    live_from = now
    backfill_end: float | None = None
    if args.backfill_data_dir is not None and args.backfill_days > 0:
        work = (args.state_dir or args.backfill_data_dir.parent) / "backfill-work"
        result = backfill(
            placement,
            snapshot,
            end=now,
            days=args.backfill_days,
            step=args.backfill_step,
            work_dir=work,
            data_dir=args.backfill_data_dir,
            promtool=args.promtool,
            ksm_instance=args.ksm_instance,
            ksm_allowlist=args.ksm_allowlist,
            max_samples=args.backfill_max_samples,
            stop=stop,
        )
        state, live_from, backfill_end = result.state, result.end, result.end
        timings["prometheus_backfill"] = {
            **result.timings,
            "series": result.series,
            "samples": result.samples,
            "step_s": result.step,
            "blocks": result.blocks,
        }
        with contextlib.suppress(OSError):
            work.rmdir()  # only if empty: pieces promtool refused stay for inspection

    publisher = None
    if args.cloudwatch_endpoint:
        publisher = CloudWatchPublisher(fleet, args.cloudwatch_endpoint)
        if args.cloudwatch_backfill_days > 0:
            timings.update(
                publisher.backfill(placement, end=now, days=args.cloudwatch_backfill_days)
            )

    evaluator = bridge = None
    if publisher is not None:
        evaluator = AlarmEvaluator(publisher.cw)
        evaluator.ensure(alb_5xx_alarm(fleet.cluster))
        if args.alertmanager:
            bridge = AlarmBridge(publisher.cw, args.alertmanager)

    live = LiveFleet(fleet, snapshot, t=live_from, state=state)
    live.tick(time.time())
    server = MetricsServer(host, int(port), live)
    server.start()
    timings["startup_s"] = round(time.monotonic() - t_start, 2)
    log.info("serving metrics on http://%s/metrics (%d series)", args.listen, len(live.series))

    cw_thread = None
    if publisher is not None:

        def publish_loop() -> None:
            # Datums once a minute (just after the minute closes); log lines every few seconds, as
            # Fluent Bit ships them.
            next_minute = math.floor(time.time() / 60) * 60 + 61.0
            while not stop.wait(LOG_FLUSH_S):
                now = time.time()
                try:
                    if now >= next_minute:
                        publisher.publish(live.placement, now)
                        next_minute = math.floor(now / 60) * 60 + 61.0
                        # CloudWatch evaluates an alarm once its period's datapoint is in; moto does not.
                        if evaluator is not None and publisher.next_minute is not None:
                            evaluator.evaluate(publisher.next_minute)
                        if bridge is not None:
                            bridge.poll()
                    else:
                        publisher.publish_logs(live.placement, now)
                except Exception:
                    log.exception("CloudWatch publish failed; retrying at the next flush")

        cw_thread = threading.Thread(target=publish_loop, name="cloudwatch", daemon=True)
        cw_thread.start()

    if args.state_dir is not None:
        _write_json(
            args.state_dir / "simulator-ready.json",
            {
                "ready": True,
                "backfill_end": backfill_end,
                "series": len(live.series),
                "listen": args.listen,
                "timings": timings,
            },
        )
    try:
        while not stop.wait(args.tick):
            try:
                live.update(cluster.read_snapshot(api))
            except Exception as e:  # keep serving the last known cluster
                log.warning("reading the cluster failed (%s); keeping the last snapshot", e)
            live.tick(time.time())
    finally:
        server.shutdown()
        server.server_close()
        if cw_thread is not None:
            cw_thread.join(timeout=5)
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(args, stop)
    except (TimeoutError, BackfillError) as e:
        log.error("%s", e)
        return 1
    except (InterruptedError, BackfillCancelled):
        log.info("stopped before serving")
        return 0


if __name__ == "__main__":
    sys.exit(main())
