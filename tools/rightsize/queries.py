"""The PromQL right-sizing and cost reports run: one query per metric family, for every workload at once.

Every expression aggregates at the source `by (namespace, pod)` (a pod's containers, GPUs, label
variants and histogram buckets collapse into one series), so Prometheus returns one series per pod
and family, never per container as KRR asks, and the number of queries is fixed by the families
below whatever the number of workloads. Pods are mapped to workloads with one query of
kube-state-metrics' `kube_pod_labels` (`pods`) and rolled up by the caller: joining every family
with the labels inside Prometheus costs about ten seconds a query on 1,000 pods × 14 days (measured,
Prometheus 2.42), while the rollup is a dictionary look-up. Namespaces are restricted with a matcher
on every selector. Label values only enter through the builder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tools.prometheus import promql
from tools.prometheus.promql import Expr, aggregate, binary, either, matches, number, over_time, rate, selector


def ksm_label(k8s_label: str) -> str:
    """The label kube-state-metrics gives a pod label: `app.kubernetes.io/name` → `label_app_kubernetes_io_name`."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k8s_label)


@dataclass(frozen=True)
class WorkloadLabels:
    """Which pod labels name a workload, its model and its team (as set on the pod template)."""

    workload: str = "app.kubernetes.io/name"
    model: str = "model"
    team: str = "team"

    @property
    def wl(self) -> str:
        return ksm_label(self.workload)


@dataclass(frozen=True)
class Family:
    """One query: range (a series per pod per step) or instant (one value per pod)."""

    name: str
    expr: Expr
    kind: str  # "range" | "instant"
    rollup: str  # how the caller combines a workload's pods: sum | max | avg | count | none
    what: str  # for errors and docs


POD = ("namespace", "pod")
INSTANCE_TYPE = "label_node_kubernetes_io_instance_type"


TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"


def le_value(text: str) -> float | None:
    """A bucket bound as a number (`+Inf` included), None when the label is not one."""
    try:
        return float(text)
    except ValueError:
        return None


def slo_buckets(les: list[str], thresholds: list[float]) -> tuple[str, ...] | None:
    """The `le` values to read so that the TTFT p95 is exact around every SLO threshold.

    For a threshold T: the highest bound ≤ T, the lowest bound > T, and +Inf. `histogram_quantile`
    interpolates inside the bucket the rank falls in using only that bucket's two bounds, so over
    this subset a p95 inside (lower, upper] is the full histogram's value exactly; one below lower
    comes out ≤ lower (≤ T, held, as with every bucket) and one above upper comes out as upper
    (> T, broken). Every SLO verdict is therefore the full histogram's, from 3 bucket series per
    pod instead of vLLM's ~20. None (read every bucket) when there is nothing to narrow.
    """
    bounds = sorted((v, t) for t in les if (v := le_value(t)) is not None)
    if not thresholds or not bounds or not math.isinf(bounds[-1][0]):
        return None
    keep = {bounds[-1][1]}
    for th in thresholds:
        below = [t for v, t in bounds if v <= th]
        above = [t for v, t in bounds if v > th]
        if below:
            keep.add(below[-1])
        if above:
            keep.add(above[0])
    if len(keep) >= len(bounds):
        return None
    return tuple(t for _, t in bounds if t in keep)


def families(labels: WorkloadLabels, *, step: str, rate_window: str, window: str,
             namespaces: tuple[str, ...] = (), ttft_buckets: tuple[str, ...] | None = None) -> list[Family]:
    """Every query of one history fetch. `step` is the range step as a duration (each point covers it).

    `ttft_buckets` restricts the TTFT histogram to those `le` values (see `slo_buckets`).
    """
    scope = (promql.any_of("namespace", namespaces),) if namespaces else ()

    def sel(metric: str, *ms: promql.Matcher) -> Expr:
        return selector(metric, *ms, *scope)

    def by_pod(op: promql.Aggregation, expr: Expr, extra: tuple[str, ...] = ()) -> Expr:
        return aggregate(op, expr, by=[*POD, *extra])

    vllm_ok, triton_ok = sel("vllm:request_success_total"), sel("nv_inference_request_success")
    running, pending = sel("vllm:num_requests_running"), sel("nv_inference_pending_request_count")
    le = (promql.any_of("le", ttft_buckets),) if ttft_buckets else ()
    ttft = promql.histogram_quantile(0.95, by_pod("sum", rate(sel(TTFT_BUCKET, *le), step), ("le",)))
    triton_latency = binary(binary(by_pod("sum", rate(sel("nv_inference_request_duration_us"), step)), "/",
                                   by_pod("sum", rate(triton_ok, step))), "/", number(1e6))
    containers = (matches("container", ".+"), promql.not_matches("container", "POD"))
    pod_labels = sel("kube_pod_labels", matches(labels.wl, ".+"))
    return [
        Family("pods", aggregate("max", over_time("max", pod_labels, window),
                                 by=[*POD, labels.wl, ksm_label(labels.model), ksm_label(labels.team)]),
               "instant", "none", "every pod of the window with its workload, model and team"),
        Family("demand", either(by_pod("sum", rate(vllm_ok, step)), by_pod("sum", rate(triton_ok, step))),
               "range", "sum", "requests/s served (mean over each step)"),
        Family("demand_peak", promql.subquery_over_time(
            "max", either(by_pod("sum", rate(vllm_ok, rate_window)), by_pod("sum", rate(triton_ok, rate_window))),
            step, rate_window), "range", "sum", f"peak {rate_window} request rate within each step"),
        Family("replicas", by_pod("max", either(running, pending)), "range", "count",
               "serving replicas reporting metrics"),
        Family("latency_p95", either(ttft, triton_latency), "range", "max",
               "TTFT p95 (vLLM) or mean request latency (Triton) of the worst replica, seconds"),
        Family("queue", by_pod("max", either(over_time("max", sel("vllm:num_requests_waiting"), step),
                                             over_time("max", pending, step))), "range", "max",
               "largest queue of any replica"),
        Family("kv_cache", by_pod("max", either(over_time("max", sel("vllm:kv_cache_usage_perc"), step),
                                                over_time("max", sel("vllm:gpu_cache_usage_perc"), step))),
               "range", "max", "largest KV-cache usage of any replica"),
        Family("gpu_busy", by_pod("avg", either(
            over_time("avg", sel("DCGM_FI_PROF_GR_ENGINE_ACTIVE"), step),
            binary(over_time("avg", sel("DCGM_FI_DEV_GPU_UTIL"), step), "/", number(100)))), "range", "avg",
            "mean GPU engine-active ratio of the workload's GPUs"),
        Family("gpu_memory", by_pod("max", over_time("max", sel("DCGM_FI_DEV_FB_USED"), step)), "range", "max",
               "largest GPU frame-buffer use of any GPU, MiB"),
        Family("allocation", by_pod("sum", sel("kube_pod_container_resource_requests",
                                               matches("resource", "nvidia_com_gpu|nvidia_com_mig_.+|cpu")),
                                     ("node", "resource")),
               "range", "sum", "GPUs (or MIG slices) and CPUs requested, by node"),
        Family("node_types", aggregate("max", over_time("max", selector("kube_node_labels"), window),
                                       by=["node", INSTANCE_TYPE]), "instant", "none", "instance type of each node"),
        Family("nodes", aggregate("count", selector("kube_node_labels", matches(INSTANCE_TYPE, ".+")),
                                  by=[INSTANCE_TYPE]), "range", "none", "nodes per instance type"),
        Family("tokens", binary(by_pod("sum", promql.increase(sel("vllm:prompt_tokens_total"), step)), "+",
                                by_pod("sum", promql.increase(sel("vllm:generation_tokens_total"), step))),
               "range", "sum", "prompt + generated tokens per step"),
        Family("points", either(by_pod("max", over_time("count", running, step)),
                                by_pod("max", over_time("count", pending, step))), "range", "max",
               "raw samples of the busiest replica per step (data sufficiency)"),
        Family("cpu_usage", by_pod("sum", rate(sel("container_cpu_usage_seconds_total", *containers), step)),
               "range", "max", "CPU cores used by the busiest pod"),
        Family("memory_usage", by_pod("sum", over_time("max", sel("container_memory_working_set_bytes",
                                                                  *containers), step)),
               "range", "max", "working-set bytes of the largest pod"),
        Family("requests", by_pod("sum", sel("kube_pod_container_resource_requests",
                                             matches("resource", "cpu|memory|nvidia_com_gpu|nvidia_com_mig_.+")),
                                   ("resource",)),
               "instant", "max", "requests per replica now (cpu, memory, GPUs or MIG slices)"),
        Family("spec_replicas", aggregate("max", sel("kube_deployment_spec_replicas"), by=["namespace", "deployment"]),
               "instant", "none", "desired replicas now"),
        Family("oom_kills", by_pod("sum", sel("kube_pod_container_status_last_terminated_reason",
                                              promql.eq("reason", "OOMKilled"))), "instant", "sum",
               "containers whose last termination was an OOM kill"),
    ]
