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
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.audit.events import AuditEvent
from agent.config import RightsizeConfig
from agent.guard.runner import ToolRunner
from agent.rightsize.cost import cost_report
from agent.rightsize.engine import recommend_all
from agent.rightsize.service import ttft_thresholds
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


def generate(path: Path, n: int, t0: int, t1: int, carry: dict[tuple[str, int, float], float]) -> int:
    """One OpenMetrics file covering [t0, t1) for `n` workloads; returns the sample count.

    `carry` holds every counter's value at the end of the previous piece, so counters run on across
    the pieces of one history (no jump or reset at piece boundaries).
    """
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
        names = [ids(i) for i in range(n)]
        node = [f"node-{i // 8:04d}" for i in range(n)]
        cap = [4.0 + (i % 13) * 0.5 for i in range(n)]  # req/s per replica at saturation

        def pod(i: int, **extra: str) -> str:
            ns, _, _, p = names[i]
            return _lbl(namespace=ns, pod=p, **extra)

        fam("vllm:request_success", "counter")
        for i in range(n):
            acc, vals = carry.get(("requests", i, 0.0), 0.0), []
            for d in dem[i]:
                acc += d * STEP
                vals.append(acc)
            carry[("requests", i, 0.0)] = acc
            series("vllm:request_success_total", pod(i, container="server", model_name=f"m-{i % 40}-7b"), vals)
        for name, f in (("vllm:num_requests_running", lambda r: 40 * r), ("vllm:num_requests_waiting",
                         lambda r: max(0.0, (r - 0.9) * 50)), ("vllm:kv_cache_usage_perc", lambda r: 0.1 + 0.75 * r)):
            fam(name, "gauge")
            for i in range(n):
                series(name, pod(i, container="server"), [f(d / cap[i]) for d in dem[i]])
        fam("vllm:time_to_first_token_seconds", "histogram")
        for i in range(n):
            for le in BUCKETS:
                acc, vals = carry.get(("ttft", i, le), 0.0), []
                for d in dem[i]:
                    median = 0.08 * (1 + (d / cap[i]) ** 8)
                    share = 1.0 if math.isinf(le) else 0.5 * math.erfc(-math.log(le / median) / (0.4 * math.sqrt(2)))
                    acc += d * STEP * share
                    vals.append(acc)
                carry[("ttft", i, le)] = acc
                le_s = "+Inf" if math.isinf(le) else repr(le)
                series("vllm:time_to_first_token_seconds_bucket", pod(i, container="server", le=le_s), vals)
        for name, per in (("vllm:prompt_tokens", 700.0), ("vllm:generation_tokens", 180.0)):
            fam(name, "counter")
            for i in range(n):
                acc, vals = carry.get((name, i, 0.0), 0.0), []
                for d in dem[i]:
                    acc += d * per * STEP
                    vals.append(acc)
                carry[(name, i, 0.0)] = acc
                series(name + "_total", pod(i, container="server"), vals)
        for name, f in (("DCGM_FI_PROF_GR_ENGINE_ACTIVE", lambda r: min(1.0, 0.004 + 0.93 * r)),
                        ("DCGM_FI_DEV_FB_USED", lambda r: 36000.0)):
            fam(name, "gauge")
            for i in range(n):
                series(name, pod(i, container="server", gpu="0", Hostname=node[i]), [f(d / cap[i]) for d in dem[i]])
        fam("container_cpu_usage_seconds", "counter")
        for i in range(n):
            acc, vals = carry.get(("cpu", i, 0.0), 0.0), []
            for d in dem[i]:
                acc += (0.5 + 0.3 * d / cap[i]) * STEP
                vals.append(acc)
            carry[("cpu", i, 0.0)] = acc
            series("container_cpu_usage_seconds_total", pod(i, container="server"), vals)
        fam("container_memory_working_set_bytes", "gauge")
        for i in range(n):
            series("container_memory_working_set_bytes", pod(i, container="server"),
                   [6e9 + 2e9 * d / cap[i] for d in dem[i]])
        const = [1.0] * len(stamps)
        fam("kube_pod_labels", "gauge")
        for i in range(n):
            ns, wl, _, p = names[i]
            series("kube_pod_labels", _lbl(namespace=ns, pod=p, label_app_kubernetes_io_name=wl,
                                           label_model=f"m-{i % 40}-7b", label_team=f"team-{i % 12}"), const)
        fam("kube_pod_container_resource_requests", "gauge")
        for i in range(n):
            ns, _, _, p = names[i]
            for res, v in (("cpu", 4.0), ("memory", 32e9), ("nvidia_com_gpu", 1.0)):
                series("kube_pod_container_resource_requests",
                       _lbl(namespace=ns, pod=p, container="server", node=node[i], resource=res), [v] * len(stamps))
        fam("kube_deployment_spec_replicas", "gauge")
        for i in range(n):
            ns, wl, _, _ = names[i]
            series("kube_deployment_spec_replicas", _lbl(namespace=ns, deployment=wl), const)
        fam("kube_node_labels", "gauge")
        for k in range(math.ceil(n / 8)):
            series("kube_node_labels", _lbl(node=f"node-{k:04d}", label_node_kubernetes_io_instance_type=INSTANCE),
                   const)
        out.write("# EOF\n")
    return written


def ids(i: int) -> tuple[str, str, str, str]:
    """Namespace, Deployment, ReplicaSet and pod of synthetic workload `i` (the same names in the TSDB
    and, for KRR, as Deployments in the sandbox's API server)."""
    rs = f"wl-{i:04d}-7d9f"
    return f"ns-{i % 50}", f"wl-{i:04d}", rs, f"{rs}-{i:05x}"


def write_owner_series(out: Any, n: int, stamps: list[int], series: Callable[[str, str, list[float]], None]) -> None:
    """kube-state-metrics' owner chain and pod phase, which KRR joins on to find a Deployment's pods."""
    const = [1.0] * len(stamps)
    for name in ("kube_replicaset_owner", "kube_pod_owner", "kube_pod_status_phase"):
        out.write(f"# TYPE {name} gauge\n")
        for i in range(n):
            ns, wl, rs, pod = ids(i)
            labels = {"kube_replicaset_owner": _lbl(namespace=ns, replicaset=rs, owner_kind="Deployment",
                                                    owner_name=wl, owner_is_controller="true"),
                      "kube_pod_owner": _lbl(namespace=ns, pod=pod, owner_kind="ReplicaSet", owner_name=rs,
                                             owner_is_controller="true"),
                      "kube_pod_status_phase": _lbl(namespace=ns, pod=pod, phase="Running")}[name]
            series(name, labels, const)


def generate_owner_series(path: Path, n: int, t0: int, t1: int) -> int:
    """Only the owner/phase series over [t0, t1): tops up a TSDB imported before they were part of it."""
    stamps = list(range(t0, t1, STEP))
    written = 0
    with path.open("w", buffering=1 << 22) as out:
        def series(name: str, labels: str, values: list[float]) -> None:
            nonlocal written
            out.write("".join(f"{name}{labels} {v:.6g} {t}\n" for v, t in zip(values, stamps, strict=True)))
            written += len(values)

        write_owner_series(out, n, stamps, series)
        out.write("# EOF\n")
    return written


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


class CountingProxy(ThreadingHTTPServer):
    """A loopback HTTP proxy in front of Prometheus that counts the API requests each tool sends."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self) -> Counter[str]:
        with self.lock:
            out, self.counts = self.counts, Counter()
        return out


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.counts[urlsplit(self.path).path] += 1
        conn = getattr(self, "_conn", None)
        if conn is None:
            up = self.server.upstream
            conn = self._conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=900)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward


def prometheus_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM afresh (Linux ≥ 4.0), so each tool's run reports its own peak."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def create_deployments(kubeconfig: Path, n: int) -> None:
    """The synthetic workloads as Deployments (1 replica, paused: no ReplicaSet or pod is created,
    which KRR does not need: it finds a Deployment's pods in Prometheus)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = config.new_client_from_config(str(kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    t0 = time.monotonic()
    made = 0
    for k in range(50):
        try:
            core.create_namespace({"metadata": {"name": f"ns-{k}"}})
        except ApiException as e:
            if e.status != 409:
                raise
    for i in range(n):
        ns, wl, _, _ = ids(i)
        body = {"metadata": {"name": wl, "labels": {"app.kubernetes.io/name": wl}},
                "spec": {"replicas": 1, "paused": True, "selector": {"matchLabels": {"app.kubernetes.io/name": wl}},
                         "template": {"metadata": {"labels": {"app.kubernetes.io/name": wl, "model": f"m-{i % 40}-7b",
                                                              "team": f"team-{i % 12}"}},
                                      "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3",
                                                               "resources": {"requests": {"cpu": "4", "memory": "32G"},
                                                                             "limits": {"nvidia.com/gpu": "1"}}}]}}}}
        try:
            apps.create_namespaced_deployment(ns, body)
            made += 1
        except ApiException as e:
            if e.status != 409:
                raise
    print(f"cluster: {made} Deployments created ({n - made} already there) in {time.monotonic() - t0:.0f}s")


def run_krr(args: argparse.Namespace, proxy: CountingProxy, prom_pid: int, work: Path) -> None:
    reset_peak_rss(prom_pid)
    proxy.take()
    out = work / "krr.json"
    cmd = [str(args.krr), str(args.krr_src / "krr.py"), "simple", "--prometheus-url", proxy.url,
           "--kubeconfig", str(args.kubeconfig), "-n", "ns-.*", "-r", "Deployment",
           "--history_duration", str(int(args.days * 24)), "--timeframe_duration", str(args.krr_step_min),
           "-f", "json", "--fileoutput", str(out), "--logtostderr"]
    print("krr:", " ".join(cmd))
    cpu0, t0 = prometheus_cpu_s(prom_pid), time.monotonic()
    done = subprocess.run(cmd, cwd=args.krr_src, stdout=subprocess.DEVNULL, stderr=(work / "krr.log").open("w"),
                          check=False)
    wall, cpu = time.monotonic() - t0, prometheus_cpu_s(prom_pid) - cpu0
    counts = proxy.take()
    queries = sum(v for k, v in counts.items() if k.startswith("/api/v1/query"))
    print(f"krr: exit {done.returncode}, wall {wall:.1f}s, {queries} Prometheus queries "
          f"({', '.join(f'{k} {v}' for k, v in counts.most_common())}), Prometheus CPU {cpu:.1f}s, "
          f"Prometheus peak RSS {peak_rss_mib(prom_pid):.0f} MiB; log {work / 'krr.log'}")
    if not out.exists():
        return
    scans = json.loads(out.read_text()).get("scans") or []

    def value(scan: dict[str, Any], kind: str, res: str) -> float | None:
        v = ((scan.get(kind) or {}).get("requests") or {}).get(res)
        v = v.get("value") if isinstance(v, dict) else v
        return float(v) if isinstance(v, int | float) else None

    cpu_rec = [x for sc in scans if (x := value(sc, "recommended", "cpu")) is not None]
    mem_rec = [x for sc in scans if (x := value(sc, "recommended", "memory")) is not None]
    print(f"krr: {len(scans)} containers scanned, {len(cpu_rec)} CPU and {len(mem_rec)} memory recommendations; "
          f"CPU request median {statistics.median(cpu_rec) if cpu_rec else math.nan:.3f} cores, memory request "
          f"median {statistics.median(mem_rec) / 2**30 if mem_rec else math.nan:.2f} GiB (now 4 cores, 29.8 GiB); "
          "no GPU, no replica recommendations")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", type=int, default=1000)
    p.add_argument("--days", type=float, default=14)
    p.add_argument("--port", type=int, default=21190)
    p.add_argument("--dir", type=Path, default=None, help="Keep the TSDB here (reused if it exists).")
    p.add_argument("--keep", action="store_true", help="Leave Prometheus running afterwards (prints its PID).")
    p.add_argument("--runs", type=int, default=1, help="Time our read this many times (the first warms caches).")
    p.add_argument("--krr", type=Path, default=None, help="A Python with KRR's requirements: run KRR too.")
    p.add_argument("--krr-src", type=Path, default=None, help="KRR's checkout (krr.py), with --krr.")
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="With --krr: a cluster (the sandbox's admin kubeconfig) to create the Deployments in.")
    p.add_argument("--krr-step-min", type=float, default=20,
                   help="KRR's --timeframe_duration: its rate window and subquery step (the samples are 10 min apart, "
                        "so KRR's default 1.25 min finds no rate).")
    args = p.parse_args()
    if args.krr and not (args.krr_src and args.kubeconfig):
        p.error("--krr needs --krr-src and --kubeconfig")
    work = args.dir or Path(tempfile.mkdtemp(prefix="rightsize-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    end_file = work / "end.txt"
    end = int(end_file.read_text()) if end_file.exists() else int(time.time()) // STEP * STEP
    start = end - int(args.days * 86400)
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not data.exists():
        end_file.write_text(str(end))
        t0 = time.monotonic()
        chunk = 2 * 86400
        pieces = [(start + k, min(end, start + k + chunk)) for k in range(0, end - start, chunk)]
        samples = 0
        carry: dict[tuple[str, int, float], float] = {}
        with ThreadPoolExecutor(max_workers=1) as pool:
            futures = []
            for j, (a, b) in enumerate(pieces):
                f = work / f"piece-{j}.om"
                samples += generate(f, args.workloads, a, b, carry)
                futures.append((f, pool.submit(subprocess.run, [promtool, "tsdb", "create-blocks-from", "openmetrics",
                                                                 str(f), str(data)], capture_output=True, check=True)))
            for f, fut in futures:
                fut.result()
                f.unlink()
        print(f"history: {args.workloads} workloads × {args.days:g} days, {samples / 1e6:.1f}M samples at {STEP}s, "
              f"generated and imported in {time.monotonic() - t0:.0f}s")
    owners_done = work / "owner-series.done"
    if not owners_done.exists():
        # KRR reads up to the present: the owner chain and pod phases run two days past the history's end
        # so that a later KRR run still finds its pods "now".
        t0 = time.monotonic()
        f = work / "owners.om"
        samples = generate_owner_series(f, args.workloads, start, end + 2 * 86400)
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=400h",
                        str(f), str(data)], capture_output=True, check=True)
        f.unlink()
        owners_done.write_text(str(samples))
        print(f"history: owner and phase series for KRR, {samples / 1e6:.1f}M samples, imported in "
              f"{time.monotonic() - t0:.0f}s")
    prom = subprocess.Popen([shutil.which("prometheus") or "/usr/bin/prometheus",
                             f"--config.file={_config(work)}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{args.port}", "--storage.tsdb.retention.time=60d",
                             "--query.lookback-delta=15m", "--query.max-samples=200000000", "--query.timeout=5m"],
                            stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{args.port}"
    proxy = CountingProxy(url)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        # promtool leaves 2-hour blocks; the first start compacts them (minutes of CPU), which would
        # otherwise be timed as query latency. Wait until the block count holds and Prometheus idles.
        blocks, cpu = -1, prometheus_cpu_s(prom.pid)
        while True:
            time.sleep(10)
            now, cpu_now = sum(1 for d in data.iterdir() if (d / "meta.json").exists()), prometheus_cpu_s(prom.pid)
            if now == blocks and cpu_now - cpu < 1.0:
                break
            blocks, cpu = now, cpu_now
        rss0 = peak_rss_mib(prom.pid)
        cfg = RightsizeConfig()
        catalog = PriceCatalog.load(cfg.price_catalog)
        for run in range(1, args.runs + 2):
            # The timed runs talk to Prometheus directly; one more goes through the counting proxy.
            counted = run > args.runs
            reset_peak_rss(prom.pid)
            proxy.take()
            load = os.getloadavg()
            client = PrometheusClient(PrometheusSettings(url=proxy.url if counted else url, timeout_s=300,
                                                         scrape_interval_s=STEP, gzip=False))
            runner = ToolRunner(TOOLS, {"prometheus": client}, _NoAudit(), max_risk=Risk.READ, timeout_s=900)
            cpu0, own0, t0 = prometheus_cpu_s(prom.pid), time.process_time(), time.monotonic()
            out = asyncio.run(runner.call("rightsize_fleet_history", {"window_s": args.days * 86400,
                                                                      "end": end - STEP, "rate_window": "20m",
                                                                      "ttft_slo_s": ttft_thresholds(cfg)},
                                          actor="bench"))
            t_read = time.monotonic() - t0
            cpu_read, own_read = prometheus_cpu_s(prom.pid) - cpu0, time.process_time() - own0
            assert out.ok and isinstance(out.result, FleetHistory), out.error
            h = out.result
            recs = recommend_all(h.workloads, times=h.times, step_s=h.step_s, catalog=catalog, cfg=cfg)
            cost = cost_report(h, catalog)
            total = time.monotonic() - t0
            counts = proxy.take()
            sized = sum(1 for r in recs if r.recommended is not None)
            print(f"rightsize run {run}{' (through the counting proxy)' if counted else ''}: {len(h.workloads)} "
                  f"workloads, {h.queries} Prometheus queries"
                  f"{f' (proxy counted {sum(counts.values())})' if counted else ''}, "
                  f"read {t_read:.1f}s (queries {h.query_seconds:.1f}s), total with "
                  f"recommendations and costs {total:.1f}s; CPU during the read: Prometheus {cpu_read:.1f}s, "
                  f"ours {own_read:.1f}s; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
                  f"{sized} sized, savings {sum(max(r.monthly_savings, 0) for r in recs):,.0f} USD/mo; "
                  f"node cost {cost.node_cost:,.0f}, reconciliation error {cost.reconciliation_error:,.2f}; "
                  f"Prometheus peak RSS {peak_rss_mib(prom.pid):.0f} MiB")
            unsized = Counter(r.reason.split(":")[0][:60] for r in recs if r.recommended is None)
            if unsized:
                print(f"rightsize run {run}: no replica/GPU recommendation for {sum(unsized.values())}: "
                      + "; ".join(f"{n} × {why}" for why, n in unsized.most_common(5)))
            cpus = [r.cpu.target for r in recs if r.cpu is not None]
            mems = [r.memory.target for r in recs if r.memory is not None]
            print(f"rightsize run {run}: {len(cpus)} CPU and {len(mems)} memory recommendations; CPU target median "
                  f"{statistics.median(cpus) if cpus else math.nan:.3f} cores, memory target median "
                  f"{statistics.median(mems) / 2**30 if mems else math.nan:.2f} GiB; replicas/GPU shape for {sized}")
        print(f"prometheus: after start-up {rss0:.0f} MiB")
        if args.krr:
            create_deployments(args.kubeconfig, args.workloads)
            run_krr(args, proxy, prom.pid, work)
    finally:
        proxy.shutdown()
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
