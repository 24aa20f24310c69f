"""The PromQL right-sizing and cost reports run: one query per metric family, for every workload at once.

Every expression joins the per-pod series with kube-state-metrics' `kube_pod_labels` on
`(namespace, pod)` and aggregates by `(namespace, <workload label>)` at the source, so Prometheus
returns one series per workload (not per container, as KRR asks) and the number of queries is fixed by
the families below, whatever the number of workloads. Label values only enter through the builder.
"""

from __future__ import annotations

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
    """One query: range (a series per workload per step) or instant (one value per workload)."""

    name: str
    expr: Expr
    kind: str  # "range" | "instant"
    what: str  # for errors and docs


def _pods(labels: WorkloadLabels, namespaces: tuple[str, ...]) -> Expr:
    """One series per (namespace, pod) carrying the workload, model and team labels; value 1."""
    ms = [matches(labels.wl, ".+")]
    if namespaces:
        ms.append(promql.any_of("namespace", namespaces))
    keep = ["namespace", "pod", labels.wl, ksm_label(labels.model), ksm_label(labels.team)]
    return aggregate("max", selector("kube_pod_labels", *ms), by=keep)


def _by_workload(op: promql.Aggregation, per_pod: Expr, labels: WorkloadLabels, namespaces: tuple[str, ...],
                 extra_by: tuple[str, ...] = ()) -> Expr:
    joined = binary(per_pod, "*", _pods(labels, namespaces), on=["namespace", "pod"], group_left=[labels.wl])
    return aggregate(op, joined, by=["namespace", labels.wl, *extra_by])


def families(labels: WorkloadLabels, *, step: str, rate_window: str,
             namespaces: tuple[str, ...] = ()) -> list[Family]:
    """Every query of one history fetch. `step` is the range step as a duration (each point covers it)."""
    wl = labels.wl
    ns = namespaces

    def by(op: promql.Aggregation, per_pod: Expr, extra: tuple[str, ...] = ()) -> Expr:
        return _by_workload(op, per_pod, labels, ns, extra)

    vllm_ok = selector("vllm:request_success_total")
    triton_ok = selector("nv_inference_request_success")
    served = either(by("sum", rate(vllm_ok, step)), by("sum", rate(triton_ok, step)))
    peak_inner = either(by("sum", rate(vllm_ok, rate_window)), by("sum", rate(triton_ok, rate_window)))
    running = selector("vllm:num_requests_running")
    pending = selector("nv_inference_pending_request_count")
    one_per_pod = aggregate("max", either(running, pending), by=["namespace", "pod"])
    histogram_p95 = promql.histogram_quantile(
        0.95, aggregate("sum", binary(rate(selector("vllm:time_to_first_token_seconds_bucket"), step), "*",
                                      _pods(labels, ns), on=["namespace", "pod"], group_left=[wl]),
                        by=["namespace", wl, "le"]))
    triton_latency = binary(binary(by("sum", rate(selector("nv_inference_request_duration_us"), step)), "/",
                                   by("sum", rate(triton_ok, step))), "/", number(1e6))
    kv = either(over_time("max", selector("vllm:kv_cache_usage_perc"), step),
                over_time("max", selector("vllm:gpu_cache_usage_perc"), step))
    gpu_requests = selector("kube_pod_container_resource_requests", matches("resource", "nvidia_com_gpu|cpu"))
    node_types = aggregate("max", selector("kube_node_labels"), by=["node", "label_node_kubernetes_io_instance_type"])
    alloc = binary(gpu_requests, "*", node_types, on=["node"], group_left=["label_node_kubernetes_io_instance_type"])
    alloc_by = aggregate("sum", binary(alloc, "*", _pods(labels, ns), on=["namespace", "pod"],
                                       group_left=[wl, ksm_label(labels.model), ksm_label(labels.team)]),
                         by=["namespace", wl, ksm_label(labels.model), ksm_label(labels.team),
                             "label_node_kubernetes_io_instance_type", "resource"])
    tokens = binary(by("sum", promql.increase(selector("vllm:prompt_tokens_total"), step)), "+",
                    by("sum", promql.increase(selector("vllm:generation_tokens_total"), step)))
    busy = either(over_time("avg", selector("DCGM_FI_PROF_GR_ENGINE_ACTIVE"), step),
                  binary(over_time("avg", selector("DCGM_FI_DEV_GPU_UTIL"), step), "/", number(100)))
    containers = [matches("container", ".+"), promql.not_matches("container", "POD")]
    requests_now = selector("kube_pod_container_resource_requests", matches("resource", "cpu|memory|nvidia_com_gpu"))
    return [
        Family("demand", served, "range", "requests/s served per workload (mean over each step)"),
        Family("demand_peak", promql.subquery_over_time("max", peak_inner, step, rate_window), "range",
               f"peak {rate_window} request rate within each step"),
        Family("replicas", by("count", one_per_pod), "range", "serving replicas reporting metrics"),
        Family("latency_p95", either(histogram_p95, triton_latency), "range",
               "TTFT p95 (vLLM) or mean request latency (Triton), seconds"),
        Family("queue", by("max", either(over_time("max", selector("vllm:num_requests_waiting"), step),
                                         over_time("max", pending, step))), "range",
               "largest queue of any replica"),
        Family("kv_cache", by("max", kv), "range", "largest KV-cache usage of any replica"),
        Family("gpu_busy", by("avg", busy), "range", "mean GPU engine-active ratio of the workload's GPUs"),
        Family("gpu_memory", by("max", over_time("max", selector("DCGM_FI_DEV_FB_USED"), step)), "range",
               "largest GPU frame-buffer use of any GPU, MiB"),
        Family("allocation", alloc_by, "range", "GPUs and CPUs requested, by node instance type"),
        Family("nodes", aggregate("count", selector("kube_node_labels", matches(
            "label_node_kubernetes_io_instance_type", ".+")), by=["label_node_kubernetes_io_instance_type"]),
            "range", "nodes per instance type"),
        Family("tokens", tokens, "range", "prompt + generated tokens per step"),
        Family("points", either(by("max", over_time("count", running, step)),
                                by("max", over_time("count", pending, step))), "range",
               "raw samples of the busiest replica per step (data sufficiency)"),
        Family("cpu_usage", by("max", rate(selector("container_cpu_usage_seconds_total", *containers), step)),
               "range", "CPU cores used by the busiest pod"),
        Family("memory_usage", by("max", over_time("max", selector("container_memory_working_set_bytes",
                                                                   *containers), step)),
               "range", "working-set bytes of the largest pod"),
        Family("requests", by("max", requests_now, ("resource", ksm_label(labels.model), ksm_label(labels.team))),
               "instant", "requests per replica now (cpu, memory, GPUs)"),
        Family("spec_replicas", aggregate("max", selector("kube_deployment_spec_replicas"),
                                          by=["namespace", "deployment"]), "instant", "desired replicas now"),
        Family("oom_kills", by("sum", selector("kube_pod_container_status_last_terminated_reason",
                                              promql.eq("reason", "OOMKilled"))), "instant",
               "containers whose last termination was an OOM kill"),
    ]
