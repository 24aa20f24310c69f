"""TTFT p95 and error share of a Rollout's canary and stable pods, per GPU class, from Prometheus.

A right-sizing move runs the same version on another GPU class, so canary against stable *is* new
class against old. The AnalysisTemplate gates the canary on the SLO; this reads the comparison a person
would ask for next ("and how does the new class do against the old one?") so the watch can report it at
each step and with the verdict. The node's class is its `node.kubernetes.io/instance-type` label and,
on a MIG-partitioned node, its `nvidia.com/mig.config` (a move to MIG slices keeps the instance type),
joined to the serving pods through kube-state-metrics (`kube_pod_info`, `kube_node_labels`; both labels
must be in its `--metric-labels-allowlist`).

Reads only; a failed read is said in the text, never raised: the rollout's verdict does not wait on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tools.prometheus import promql
from tools.prometheus.client import PrometheusClient
from tools.prometheus.promql import Expr

HASH = "rollouts_pod_template_hash"
CLASS = "label_node_kubernetes_io_instance_type"
MIG = "label_nvidia_com_mig_config"  # e.g. all-3g.20gb; empty on a node of whole GPUs
TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"
REQUESTS = "http_requests_total"
RATE_WINDOW = "1m"  # the AnalysisTemplate's: the same samples the gate judged


@dataclass(frozen=True)
class ClassFigures:
    pod_hash: str
    gpu_class: str
    ttft_p95_s: float | None
    error_share: float | None


def _by_class(expr: Expr, namespace: str) -> Expr:
    """`expr` (per pod) with the pod's node's instance type attached."""
    pod_node = promql.max_by(["namespace", "pod", "node"], promql.selector("kube_pod_info", namespace=namespace))
    node_class = promql.max_by(["node", CLASS, MIG], promql.selector("kube_node_labels"))
    with_node = promql.binary(expr, "*", pod_node, on=["namespace", "pod"], group_left=["node"])
    return promql.binary(with_node, "*", node_class, on=["node"], group_left=[CLASS, MIG])


def queries(namespace: str, name: str) -> tuple[Expr, Expr]:
    """TTFT p95 and 5xx share per (pod-template hash, GPU class) of the Rollout `name`'s pods."""
    pods = promql.matches("pod", promql.regex_literal(name) + "-.*")
    ns = promql.eq("namespace", namespace)
    buckets = _by_class(promql.rate(promql.selector(TTFT_BUCKET, ns, pods), RATE_WINDOW), namespace)
    ttft = promql.histogram_quantile(0.95, promql.sum_by(["le", HASH, CLASS, MIG], buckets))
    bad = promql.sum_by([HASH, CLASS, MIG], _by_class(promql.rate(promql.selector(
        REQUESTS, ns, pods, promql.eq("status", "5xx")), RATE_WINDOW), namespace))
    every = promql.sum_by([HASH, CLASS, MIG], _by_class(promql.rate(promql.selector(REQUESTS, ns, pods),
                                                                    RATE_WINDOW), namespace))
    return ttft, promql.ratio(bad, every)


def gpu_class(labels: Mapping[str, str]) -> str:
    """The class a series' node is of: its instance type, and its MIG layout when its GPUs are partitioned."""
    name = labels.get(CLASS, "") or "unknown"
    return f"{name} (MIG {mig})" if (mig := labels.get(MIG, "")) else name


async def read(prom: PrometheusClient, namespace: str, name: str) -> list[ClassFigures]:
    ttft_q, err_q = queries(namespace, name)

    async def values(expr: Expr) -> dict[tuple[str, str], float]:
        data = await prom.query(expr.text)
        out: dict[tuple[str, str], float] = {}
        for s in data.series:
            v = s.samples[-1][1] if s.samples else math.nan
            if not math.isnan(v):
                out[(s.labels.get(HASH, ""), gpu_class(s.labels))] = v
        return out

    ttft, err = await values(ttft_q), await values(err_q)
    return [ClassFigures(h, c, ttft.get((h, c)), err.get((h, c))) for h, c in sorted(set(ttft) | set(err))]


def describe(figures: list[ClassFigures], *, stable: str, canary: str) -> str:
    """One line: canary's class against stable's, e.g. "canary on p4d.24xlarge: TTFT p95 0.247 s, 5xx 0.05 % …"."""
    parts = []
    for role, h in (("canary", canary), ("stable", stable)):
        for f in (x for x in figures if x.pod_hash == h):
            ttft = f"{f.ttft_p95_s:.3g} s" if f.ttft_p95_s is not None else "no data"
            err = f"{f.error_share:.2%}" if f.error_share is not None else "no data"
            parts.append(f"{role} on {f.gpu_class}: TTFT p95 {ttft}, 5xx {err}")
    return "; ".join(parts) if parts else "no per-class figures in Prometheus yet"


async def compare(prom: PrometheusClient, namespace: str, name: str, *, stable: str, canary: str) -> str:
    """`describe` of what Prometheus says now, or why it could not be read."""
    try:
        return describe(await read(prom, namespace, name), stable=stable, canary=canary)
    except Exception as e:  # evidence for the report, not the verdict: say it is missing and why
        return f"per-class figures unreadable: {type(e).__name__}: {e}"
