"""Right-sizing at scale: N workloads × D days of history in a real Prometheus, then one fleet read.

Not a test: prints wall time, Prometheus queries issued, and Prometheus' peak memory (VmHWM).

    uv run python tests/benchmarks/bench_rightsize_scale.py --workloads 1000 --days 14 --port 21190

It writes the families the right-sizing queries read (vLLM, DCGM, cAdvisor, kube-state-metrics, one
replica and one GPU per workload, diurnal traffic) as OpenMetrics, imports them with the Debian
`promtool`, starts a Debian `prometheus` on 127.0.0.1:PORT over that data (stopped by PID at the end;
`--keep` leaves it running for a peer tool such as KRR and prints its PID), and times
`rightsize_fleet_history` through the guarded runner plus the recommendations and the cost model.
The samples are 10 minutes apart (so 14 days × 1,000 workloads import in minutes on two cores);
the rate window is 20 minutes and Prometheus' lookback 15 minutes accordingly.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.audit import AuditEvent
from agent.config import RightsizeConfig
from agent.rightsize.cost import cost_report
from agent.rightsize.engine import recommend_all
from agent.rightsize.service import ttft_thresholds
from agent.runner import ToolRunner
from tools.base import Risk
from tools.prometheus.client import PrometheusClient
from tools.prometheus.settings import PrometheusSettings
from tools.rightsize.catalog import PriceCatalog
from tools.rightsize.history import TOOLS, FleetHistory

STEP = 600
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
INSTANCE = "p4d.24xlarge"


class _NoAudit:
    def append(self, event: AuditEvent) -> None:
        pass


def _lbl(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def generate(path: Path, n: int, t0: int, t1: int) -> int:
    """One OpenMetrics file covering [t0, t1) for `n` workloads; returns the sample count."""
    stamps = list(range(t0, t1, STEP))
    written = 0
    with path.open("w", buffering=1 << 22) as out:
        def fam(name: str, kind: str) -> None:
            out.write(f"# TYPE {name} {kind}\n")

        def series(name: str, labels: str, values: list[float]) -> None:
            nonlocal written
            out.write("".join(f"{name}{labels} {v:.6g} {t}\n" for v, t in zip(values, stamps, strict=True)))
            written += len(values)

        def demand(i: int) -> list[float]:
            peak = 2.0 + (i % 17)
            return [peak * (0.3 + 0.7 * 0.5 * (1 + math.cos(2 * math.pi * ((t % 86400) / 3600 - 15 - i % 5) / 24)))
                    for t in stamps]

        dem = [demand(i) for i in range(n)]
        ids = [(f"ns-{i % 50}", f"wl-{i:04d}", f"wl-{i:04d}-7d9f-{i:05x}") for i in range(n)]
        node = [f"node-{i // 8:04d}" for i in range(n)]
        cap = [4.0 + (i % 13) * 0.5 for i in range(n)]  # req/s per replica at saturation

        def pod(i: int, **extra: str) -> str:
            ns, _, p = ids[i]
            return _lbl(namespace=ns, pod=p, **extra)

        fam("vllm:request_success", "counter")
        for i in range(n):
            acc, vals = float(t0), []
            for d in dem[i]:
                acc += d * STEP
                vals.append(acc)
            series("vllm:request_success_total", pod(i, container="server", model_name=f"m-{i % 40}-7b"), vals)
        for name, f in (("vllm:num_requests_running", lambda r: 40 * r), ("vllm:num_requests_waiting",
                         lambda r: max(0.0, (r - 0.9) * 50)), ("vllm:kv_cache_usage_perc", lambda r: 0.1 + 0.75 * r)):
            fam(name, "gauge")
            for i in range(n):
                series(name, pod(i, container="server"), [f(d / cap[i]) for d in dem[i]])
        fam("vllm:time_to_first_token_seconds", "histogram")
        for i in range(n):
            for le in BUCKETS:
                acc, vals = 0.0, []
                for d in dem[i]:
                    median = 0.08 * (1 + (d / cap[i]) ** 8)
                    share = 1.0 if math.isinf(le) else 0.5 * math.erfc(-math.log(le / median) / (0.4 * math.sqrt(2)))
                    acc += d * STEP * share
                    vals.append(acc)
                le_s = "+Inf" if math.isinf(le) else repr(le)
                series("vllm:time_to_first_token_seconds_bucket", pod(i, container="server", le=le_s), vals)
        for name, per in (("vllm:prompt_tokens", 700.0), ("vllm:generation_tokens", 180.0)):
            fam(name, "counter")
            for i in range(n):
                acc, vals = 0.0, []
                for d in dem[i]:
                    acc += d * per * STEP
                    vals.append(acc)
                series(name + "_total", pod(i, container="server"), vals)
        for name, f in (("DCGM_FI_PROF_GR_ENGINE_ACTIVE", lambda r: min(1.0, 0.004 + 0.93 * r)),
                        ("DCGM_FI_DEV_FB_USED", lambda r: 36000.0)):
            fam(name, "gauge")
            for i in range(n):
                series(name, pod(i, container="server", gpu="0", Hostname=node[i]), [f(d / cap[i]) for d in dem[i]])
        fam("container_cpu_usage_seconds", "counter")
        for i in range(n):
            acc, vals = 0.0, []
            for d in dem[i]:
                acc += (0.5 + 0.3 * d / cap[i]) * STEP
                vals.append(acc)
            series("container_cpu_usage_seconds_total", pod(i, container="server"), vals)
        fam("container_memory_working_set_bytes", "gauge")
        for i in range(n):
            series("container_memory_working_set_bytes", pod(i, container="server"),
                   [6e9 + 2e9 * d / cap[i] for d in dem[i]])
        const = [1.0] * len(stamps)
        fam("kube_pod_labels", "gauge")
        for i in range(n):
            ns, wl, p = ids[i]
            series("kube_pod_labels", _lbl(namespace=ns, pod=p, label_app_kubernetes_io_name=wl,
                                           label_model=f"m-{i % 40}-7b", label_team=f"team-{i % 12}"), const)
        fam("kube_pod_container_resource_requests", "gauge")
        for i in range(n):
            ns, _, p = ids[i]
            for res, v in (("cpu", 4.0), ("memory", 32e9), ("nvidia_com_gpu", 1.0)):
                series("kube_pod_container_resource_requests",
                       _lbl(namespace=ns, pod=p, container="server", node=node[i], resource=res), [v] * len(stamps))
        fam("kube_deployment_spec_replicas", "gauge")
        for i in range(n):
            ns, wl, _ = ids[i]
            series("kube_deployment_spec_replicas", _lbl(namespace=ns, deployment=wl), const)
        fam("kube_node_labels", "gauge")
        for k in range(math.ceil(n / 8)):
            series("kube_node_labels", _lbl(node=f"node-{k:04d}", label_node_kubernetes_io_instance_type=INSTANCE),
                   const)
        out.write("# EOF\n")
    return written


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", type=int, default=1000)
    p.add_argument("--days", type=float, default=14)
    p.add_argument("--port", type=int, default=21190)
    p.add_argument("--dir", type=Path, default=None, help="Keep the TSDB here (reused if it exists).")
    p.add_argument("--keep", action="store_true", help="Leave Prometheus running afterwards (prints its PID).")
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="rightsize-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    end_file = work / "end.txt"
    end = int(end_file.read_text()) if end_file.exists() else int(time.time()) // STEP * STEP
    start = end - int(args.days * 86400)
    if not data.exists():
        end_file.write_text(str(end))
        t0 = time.monotonic()
        chunk = 2 * 86400
        pieces = [(start + k, min(end, start + k + chunk)) for k in range(0, end - start, chunk)]
        samples = 0
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        with ThreadPoolExecutor(max_workers=1) as pool:
            futures = []
            for j, (a, b) in enumerate(pieces):
                f = work / f"piece-{j}.om"
                samples += generate(f, args.workloads, a, b)
                futures.append((f, pool.submit(subprocess.run, [promtool, "tsdb", "create-blocks-from", "openmetrics",
                                                                 str(f), str(data)], capture_output=True, check=True)))
            for f, fut in futures:
                fut.result()
                f.unlink()
        print(f"history: {args.workloads} workloads × {args.days:g} days, {samples / 1e6:.1f}M samples at {STEP}s, "
              f"generated and imported in {time.monotonic() - t0:.0f}s")
    prom = subprocess.Popen([shutil.which("prometheus") or "/usr/bin/prometheus",
                             f"--config.file={_config(work)}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{args.port}", "--storage.tsdb.retention.time=60d",
                             "--query.lookback-delta=15m", "--query.max-samples=200000000", "--query.timeout=5m"],
                            stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        # promtool leaves 2-hour blocks; the first start compacts them (minutes of CPU), which would
        # otherwise be timed as query latency. Wait until the block count stops changing.
        blocks = -1
        while blocks != (now := sum(1 for d in data.iterdir() if (d / "meta.json").exists())):
            blocks = now
            time.sleep(10)
        rss0 = peak_rss_mib(prom.pid)
        cfg = RightsizeConfig()
        client = PrometheusClient(PrometheusSettings(url=url, timeout_s=300, scrape_interval_s=STEP, gzip=False))
        runner = ToolRunner(TOOLS, {"prometheus": client}, _NoAudit(), max_risk=Risk.READ, timeout_s=900)
        t0 = time.monotonic()
        out = asyncio.run(runner.call("rightsize_fleet_history", {"window_s": args.days * 86400, "end": end - STEP,
                                                                  "rate_window": "20m",
                                                                  "ttft_slo_s": ttft_thresholds(cfg)},
                                      actor="bench"))
        t_read = time.monotonic() - t0
        assert out.ok and isinstance(out.result, FleetHistory), out.error
        h = out.result
        catalog = PriceCatalog.load(cfg.price_catalog)
        recs = recommend_all(h.workloads, times=h.times, step_s=h.step_s, catalog=catalog, cfg=cfg)
        cost = cost_report(h, catalog)
        total = time.monotonic() - t0
        sized = sum(1 for r in recs if r.recommended is not None)
        print(f"rightsize: {len(h.workloads)} workloads, {h.queries} Prometheus queries, read {t_read:.1f}s "
              f"(queries {h.query_seconds:.1f}s), total with recommendations and costs {total:.1f}s; "
              f"{sized} sized, savings {sum(r.monthly_savings for r in recs if r.monthly_savings > 0):,.0f} USD/mo; "
              f"node cost {cost.node_cost:,.0f}, reconciliation error {cost.reconciliation_error:,.2f}")
        print(f"prometheus: peak RSS {peak_rss_mib(prom.pid):.0f} MiB (after start-up {rss0:.0f} MiB)")
    finally:
        if args.keep:
            print(f"prometheus left running: pid {prom.pid}, {url}, data {data}")
        else:
            prom.send_signal(signal.SIGTERM)
            prom.wait(timeout=60)


def _config(work: Path) -> Path:
    cfg = work / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    return cfg


if __name__ == "__main__":
    main()
