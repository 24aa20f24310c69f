"""CloudWatch series and logs that match the Prometheus ones, published with boto3.

ALB target groups, Container Insights GPU metrics and application logs go to an endpoint
(moto's server in the sandbox).

Values come from the same `Placement.evaluate` as the Prometheus series, so a bad rollout shows up
in both (5xx counts here, 5xx rates there). This module only writes to CloudWatch; it never reads
the cluster and never decides what the fleet does.

Moto's ListMetrics compares every stored datum with every metric found so far, and its dimension
comparison never matches metrics with two or more dimensions, so it is quadratic in the datums of
a namespace: with one day of 5-minute history (~12k datums) a name-filtered ListMetrics takes about
a second, a namespace-wide one 5-7 s, an unfiltered one ~14 s; with 14 days a name-filtered one
takes over a minute. Hence one day of CloudWatch history by default.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3

from deploy.sandbox.fleet import Fleet
from deploy.sandbox.simulator import model
from deploy.sandbox.simulator.placement import FleetSignals, Placement, PodRole

log = logging.getLogger(__name__)

ALB_NAMESPACE = "AWS/ApplicationELB"
CI_NAMESPACE = "ContainerInsights"
POD_GPU_UTILIZATION = "pod_gpu_utilization"
MAX_DATUMS = 1000  # PutMetricData limit per call
MAX_LOG_EVENTS = 10000  # PutLogEvents limit per call
CRASH_CYCLE_S = 15.0  # a crash-looping server's start → crash cycle in the logs
LOG_BACKFILL_HOURS = 2.0


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _ts(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def load_balancer(cluster: str) -> str:
    """The `LoadBalancer` dimension of the cluster's shared inference ALB."""
    return f"app/k8s-{cluster}-inference/{_hex(cluster + '/alb', 16)}"


def target_group(namespace: str, workload: str) -> str:
    """The `TargetGroup` dimension of a workload: `targetgroup/<namespace-workload>/<id>`."""
    name = f"{namespace}-{workload}"[:32].rstrip("-")
    return f"targetgroup/{name}/{_hex(namespace + '/' + workload + '/tg', 16)}"


def log_group(cluster: str) -> str:
    return f"/aws/containerinsights/{cluster}/application"


def log_stream(r: PodRole) -> str:
    """Fluent Bit's stream name for a container log under Container Insights."""
    cid = _hex(r.pod.uid + r.pod.container, 64)
    return (
        f"{r.pod.node_name}-application.var.log.containers."
        f"{r.pod.name}_{r.pod.namespace}_{r.pod.container}-{cid}.log"
    )


def _dims(**kv: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kv.items()]


def metric_data(
    placement: Placement,
    sig: FleetSignals,
    t: float,
    period: float,
) -> dict[str, list[dict[str, Any]]]:
    """Datums for the period starting at `t`, `sig` being the fleet's signals during it."""
    fleet = placement.fleet
    stamp = _ts(t)
    lb = load_balancer(fleet.cluster)
    alb: list[dict[str, Any]] = []
    lb_requests = lb_target_5xx = 0.0
    for w in fleet.workloads:
        pods = [
            r
            for r in placement.serving
            if r.workload is not None
            and r.workload.name == w.name
            and r.pod.namespace == w.namespace
        ]
        requests = errors = latency_weighted = 0.0
        for r in pods:
            s = sig.replicas.get(r.key)
            if isinstance(s, model.VllmSignals):
                n = s.served_rps * period
                requests += n
                errors += n * s.error_share
                latency_weighted += n * s.ttft.mean
            elif isinstance(s, model.TritonSignals):
                n = (s.success_rps + s.failure_rps) * period
                requests += n
                errors += s.failure_rps * period
                latency_weighted += n * s.request_us_per_request / 1e6
        members = [r for r in placement.roles if r.workload is not None and r.workload.name == w.name
                   and r.pod.namespace == w.namespace and r.pod.phase == "Running"]
        healthy = sum(1 for r in members if r.serving)
        lb_requests += requests
        lb_target_5xx += errors
        dims = _dims(LoadBalancer=lb, TargetGroup=target_group(w.namespace, w.name))
        for name, value in (("HealthyHostCount", healthy), ("UnHealthyHostCount", len(members) - healthy)):
            alb.append({"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": value,
                        "Unit": "Count"})
        alb.append(
            {
                "MetricName": "RequestCount",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": round(requests),
                "Unit": "Count",
            }
        )
        alb.append(
            {
                "MetricName": "HTTPCode_Target_5XX_Count",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": round(errors),
                "Unit": "Count",
            }
        )
        if requests > 0:
            alb.append(
                {
                    "MetricName": "TargetResponseTime",
                    "Dimensions": dims,
                    "Timestamp": stamp,
                    "Value": round(latency_weighted / requests, 4),
                    "Unit": "Seconds",
                }
            )

    # The balancer's own view (LoadBalancer dimension only): every request, the targets' 5xx, and the 5xx
    # it generated itself. An `alb-5xx` fault answers a share of requests at the balancer, before any
    # target sees them (ELB 5xx rises, target 5xx and healthy hosts do not move).
    elb_5xx = lb_requests * placement.snapshot.faults.elb_5xx_share
    lb_dims = _dims(LoadBalancer=lb)
    for metric, total in (("RequestCount", lb_requests + elb_5xx), ("HTTPCode_Target_5XX_Count", lb_target_5xx),
                          ("HTTPCode_ELB_5XX_Count", elb_5xx)):
        alb.append({"MetricName": metric, "Dimensions": lb_dims, "Timestamp": stamp, "Value": round(total),
                    "Unit": "Count"})

    ci: list[dict[str, Any]] = []
    per_node: dict[str, list[model.GpuSignals]] = {}
    per_pod: dict[tuple[str, str], list[model.GpuSignals]] = {}
    for slot, g in zip(placement.gpus, sig.gpus, strict=True):
        per_node.setdefault(slot.node.name, []).append(g)
        if slot.holder is not None:
            per_pod.setdefault(slot.holder.key, []).append(g)
    for slot_node in {s.node.name: s.node for s in placement.gpus}.values():
        gs = per_node[slot_node.name]
        dims = _dims(
            ClusterName=fleet.cluster, InstanceId=slot_node.instance_id, NodeName=slot_node.name
        )
        util = sum(g.util_pct for g in gs) / len(gs)
        mem = sum(100.0 * g.fb_used_mib / g.fb_total_mib for g in gs) / len(gs)
        ci.append(
            {
                "MetricName": "node_gpu_utilization",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": round(util, 2),
                "Unit": "Percent",
            }
        )
        ci.append(
            {
                "MetricName": "node_gpu_memory_utilization",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": round(mem, 2),
                "Unit": "Percent",
            }
        )
    # Container Insights also aggregates pods by their owner: `PodName` is then the workload's name
    # (`FullPodName` would name one pod), which is what a workload's history reads.
    per_workload: dict[tuple[str, str], list[model.GpuSignals]] = {}
    for r in placement.roles:
        held = per_pod.get(r.key)
        if held and r.workload is not None:
            per_workload.setdefault((r.pod.namespace, r.workload.name), []).extend(held)
    for (namespace, workload), gs in sorted(per_workload.items()):
        ci.append(
            {
                "MetricName": POD_GPU_UTILIZATION,
                "Dimensions": _dims(ClusterName=fleet.cluster, Namespace=namespace, PodName=workload),
                "Timestamp": stamp,
                "Value": round(sum(g.util_pct for g in gs) / len(gs), 2),
                "Unit": "Percent",
            }
        )
    for r in placement.roles:
        held = per_pod.get(r.key)
        if not held:
            continue
        dims = _dims(
            ClusterName=fleet.cluster,
            Namespace=r.pod.namespace,
            PodName=r.pod.name,
            ContainerName=r.pod.container,
        )
        ci.append(
            {
                "MetricName": "container_gpu_utilization",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": round(sum(g.util_pct for g in held) / len(held), 2),
                "Unit": "Percent",
            }
        )
    return {ALB_NAMESPACE: alb, CI_NAMESPACE: ci}


# ---- logs ---------------------------------------------------------------------------------------
def _vllm_time(t: float) -> str:
    return _ts(t).strftime("%m-%d %H:%M:%S")


def log_lines(
    r: PodRole, s: model.VllmSignals | model.TritonSignals | None, t: float, period: float
) -> list[tuple[float, str, str]]:
    """(time, stream, line) a pod's container writes during the period starting at `t`."""
    out: list[tuple[float, str, str]] = []
    mv = r.version
    if mv is not None and mv.crash:
        # A crash-looping server starts, loads for a few seconds and dies: one cycle every
        # CRASH_CYCLE_S, as fast as the kubelet restarts it, so each restart leaves its lines.
        for k in range(max(1, int(period // CRASH_CYCLE_S))):
            c = t + k * CRASH_CYCLE_S
            if mv.crash_reason == "OOMKilled":
                # The kernel kills the process: no error of its own, the log just stops after its last line.
                out += [(c + 1, "stdout", f"INFO {_vllm_time(c + 1)} [api_server.py:1805] vLLM API server version "
                                          f"{r.pod.image.rsplit(':v', 1)[-1]}"),
                        (c + 3, "stdout", mv.crash)]
                continue
            out += [
                (
                    c + 1,
                    "stdout",
                    f"INFO {_vllm_time(c + 1)} [api_server.py:1805] vLLM API server version "
                    f"{r.pod.image.rsplit(':v', 1)[-1]}",
                ),
                (c + 2, "stdout", f"INFO {_vllm_time(c + 2)} [model.py:1650] Using max model len {mv.max_model_len}"),
                (c + 8, "stderr", f"ERROR {_vllm_time(c + 8)} [core.py:700] EngineCore failed to start."),
                (c + 8.5, "stderr", mv.crash),
                (
                    c + 9,
                    "stderr",
                    "RuntimeError: Engine core initialization failed. "
                    "See root cause above. Failed core proc(s): {}",
                ),
            ]
        return out
    if mv is not None and mv.startup_log and not r.pod.ready and r.pod.phase == "Running":
        # Still fetching or loading weights: the same progress line, nothing served.
        return [(t + period / 2, "stdout", mv.startup_log)]
    if isinstance(s, model.VllmSignals):
        n_ok = s.success_rps * period
        n_err = s.served_rps * s.error_share * period
        out.append(
            (
                t + period / 2,
                "stdout",
                f"INFO {_vllm_time(t + period / 2)} [loggers.py:123] Engine 000: "
                f"Avg prompt throughput: {s.prompt_tps:.1f} tokens/s, "
                f"Avg generation throughput: {s.generation_tps:.1f} tokens/s, "
                f"Running: {s.running:.0f} reqs, Waiting: {s.waiting:.0f} reqs, "
                f"GPU KV cache usage: {100 * s.kv_usage:.1f}%, "
                f"Prefix cache hit rate: {100 * s.prefix_hit:.1f}%",
            )
        )
        for k in range(min(3, int(n_ok))):
            client = f"10.0.{k + 1}.{int(model.stable_unit(r.pod.name, t, k) * 200) + 20}"
            out.append(
                (
                    t + 5 + 17 * k,
                    "stdout",
                    f"INFO:     {client}:{40000 + k * 1171} - "
                    + '"POST /v1/chat/completions HTTP/1.1" 200 OK',
                )
            )
        if n_err >= 0.5 and s.error_share >= 0.005:
            out.append(
                (
                    t + 21,
                    "stderr",
                    f"ERROR {_vllm_time(t + 21)} [serving_chat.py:1012] Error in chat completion "
                    f"stream generator: {round(n_err)} requests failed in the last "
                    f"{period:.0f}s (engine returned an internal error)",
                )
            )
            out.append(
                (
                    t + 22,
                    "stdout",
                    'INFO:     10.0.1.31:40999 - "POST /v1/chat/completions HTTP/1.1" '
                    "500 Internal Server Error",
                )
            )
        n_refused = s.client_error_rps * period
        if n_refused >= 0.5 and mv is not None and mv.client_error:
            for k in range(min(3, max(1, round(n_refused)))):
                out.append((t + 30 + 7 * k, "stderr",
                             f"ERROR {_vllm_time(t + 30 + 7 * k)} [serving_chat.py:222] Error in preprocessing "
                             f"prompt inputs: {mv.client_error}"))
                out.append((t + 30.1 + 7 * k, "stdout",
                            f'INFO:     10.0.2.{40 + k}:{41000 + k * 977} - "POST /v1/chat/completions HTTP/1.1" '
                            "400 Bad Request"))
    elif isinstance(s, model.TritonSignals) and s.failure_rps * period >= 0.5:
        stamp = _ts(t + 9).strftime("%m%d %H:%M:%S.%f")
        out.append(
            (
                t + 9,
                "stderr",
                f"E{stamp} 1 infer_handler.cc:712] [request id: <id_unknown>] inference failed: "
                f"{round(s.failure_rps * period)} requests failed in the last {period:.0f}s",
            )
        )
    return out


def log_events(
    placement: Placement,
    sig: FleetSignals,
    t: float,
    period: float,
) -> dict[str, list[dict[str, Any]]]:
    """Container Insights (Fluent Bit) log events per stream for the period starting at `t`."""
    events: dict[str, list[dict[str, Any]]] = {}
    for r in placement.roles:
        if r.workload is None:
            continue
        lines = log_lines(r, sig.replicas.get(r.key), t, period)
        if not lines:
            continue
        k8s = {
            "pod_name": r.pod.name,
            "namespace_name": r.pod.namespace,
            "pod_id": r.pod.uid,
            "host": r.pod.node_name,
            "container_name": r.pod.container,
            "docker_id": _hex(r.pod.uid + r.pod.container, 64),
            "container_image": r.pod.image,
            "labels": dict(r.pod.labels),
        }
        stream = events.setdefault(log_stream(r), [])
        for when, std, line in lines:
            body = {
                "time": _ts(when).isoformat().replace("+00:00", "Z"),
                "stream": std,
                "_p": "F",
                "log": line,
                "kubernetes": k8s,
            }
            stream.append({"timestamp": int(when * 1000), "message": json.dumps(body)})
    return events


# ---- publishing ---------------------------------------------------------------------------------
class CloudWatchPublisher:
    """Publishes the fleet's CloudWatch metrics and logs: history once, then every minute."""

    def __init__(
        self, fleet: Fleet, endpoint_url: str, *, client_factory: Callable[..., Any] = boto3.client
    ) -> None:
        kw = {
            "region_name": fleet.region,
            "endpoint_url": endpoint_url,
            # The sandbox's moto server takes any credentials; these never reach AWS.
            "aws_access_key_id": "sandbox",
            "aws_secret_access_key": "sandbox",
        }
        self.fleet = fleet
        self.cw = client_factory("cloudwatch", **kw)
        self.logs = client_factory("logs", **kw)
        self.group = log_group(fleet.cluster)
        self._streams: set[str] = set()
        self.next_minute: float | None = None  # metrics are published up to here
        self.logs_until: float | None = None  # log lines are shipped up to here

    # metrics
    def put_metrics(self, by_namespace: dict[str, list[dict[str, Any]]]) -> int:
        sent = 0
        for namespace, datums in by_namespace.items():
            for i in range(0, len(datums), MAX_DATUMS):
                self.cw.put_metric_data(Namespace=namespace, MetricData=datums[i : i + MAX_DATUMS])
                sent += len(datums[i : i + MAX_DATUMS])
        return sent

    # logs
    def _ensure_group(self) -> None:
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=self.group)

    def put_logs(self, events: dict[str, list[dict[str, Any]]]) -> int:
        sent = 0
        for stream, evs in events.items():
            if stream not in self._streams:
                with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                    self.logs.create_log_stream(logGroupName=self.group, logStreamName=stream)
                self._streams.add(stream)
            evs = sorted(evs, key=lambda e: e["timestamp"])
            for i in range(0, len(evs), MAX_LOG_EVENTS):
                self.logs.put_log_events(
                    logGroupName=self.group,
                    logStreamName=stream,
                    logEvents=evs[i : i + MAX_LOG_EVENTS],
                )
                sent += len(evs[i : i + MAX_LOG_EVENTS])
        return sent

    def backfill(
        self,
        placement: Placement,
        *,
        end: float,
        days: float,
        period: float = 300.0,
        log_hours: float = LOG_BACKFILL_HOURS,
        progress: Callable[[str], None] = log.info,
    ) -> dict[str, float]:
        """Publish `days` of `period`-second datums ending at `end`, and `log_hours` of logs."""
        t0 = time.monotonic()
        self._ensure_group()
        last = math.floor(end / period) * period
        starts = [last - k * period for k in range(int(days * 86400 // period), 0, -1)]
        datums = 0
        events: dict[str, list[dict[str, Any]]] = {}
        batch: dict[str, list[dict[str, Any]]] = {}
        for t in starts:
            sig = placement.evaluate(t + period / 2)
            for ns, ds in metric_data(placement, sig, t, period).items():
                batch.setdefault(ns, []).extend(ds)
            if t >= end - log_hours * 3600:
                for stream, evs in log_events(placement, sig, t, period).items():
                    events.setdefault(stream, []).extend(evs)
            if sum(len(v) for v in batch.values()) >= 5 * MAX_DATUMS:
                datums += self.put_metrics(batch)
                batch = {}
        datums += self.put_metrics(batch)
        n_events = self.put_logs(events)
        self.next_minute = last
        self.logs_until = last
        took = time.monotonic() - t0
        progress(
            f"cloudwatch: {datums} datums over {days:g} days and {n_events} log events "
            f"in {took:.1f}s"
        )
        return {
            "cloudwatch_datums": datums,
            "cloudwatch_log_events": n_events,
            "cloudwatch_backfill_s": round(took, 2),
        }

    def publish(self, placement: Placement, now: float, max_catch_up_minutes: int = 30) -> int:
        """Publish every whole minute since the last one published (1-minute datums), and the log lines
        written up to `now`."""
        current = math.floor(now / 60) * 60
        start = self.next_minute if self.next_minute is not None else current - 60
        start = max(start, current - 60 * max_catch_up_minutes)
        if self.next_minute is None:
            self._ensure_group()
        batch: dict[str, list[dict[str, Any]]] = {}
        for m in _frange(start, current, 60):
            sig = placement.evaluate(m + 30)
            for ns, ds in metric_data(placement, sig, m, 60).items():
                batch.setdefault(ns, []).extend(ds)
        sent = self.put_metrics(batch)
        self.next_minute = current
        self.publish_logs(placement, now, max_catch_up_minutes)
        return sent

    def publish_logs(self, placement: Placement, now: float, max_catch_up_minutes: int = 30) -> int:
        """Ship the log lines written since the last call, up to `now`, each once.

        Fluent Bit flushes every few seconds, so a crash line is searchable within seconds of being
        written; the simulator's live loop calls this every few seconds, not once a minute.
        """
        since = self.logs_until if self.logs_until is not None else math.floor(now / 60) * 60 - 60
        since = max(since, now - 60 * max_catch_up_minutes)
        if self.logs_until is None and self.next_minute is None:
            self._ensure_group()
        events: dict[str, list[dict[str, Any]]] = {}
        lo, hi = int(since * 1000), int(now * 1000)
        for m in _frange(math.floor(since / 60) * 60, now, 60):
            sig = placement.evaluate(m + 30)
            for stream, evs in log_events(placement, sig, m, 60).items():
                fresh = [e for e in evs if lo < e["timestamp"] <= hi]
                if fresh:
                    events.setdefault(stream, []).extend(fresh)
        self.logs_until = now
        return self.put_logs(events)


def _frange(start: float, stop: float, step: float) -> Iterable[float]:
    t = start
    while t < stop:
        yield t
        t += step
