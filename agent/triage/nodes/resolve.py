"""Fill in what the alert does not say: which Deployment serves the model, which node hosts the pod.

Alerts name a namespace and a model (vLLM's `model_name`, Triton's `model`) or a pod or a node; the
evidence queries and remediations need the Deployment. One read of the serving workloads answers it.
An alert that names only its namespace (a relabelled route, a hand-written rule) is placed on the one
workload of that namespace whose TTFT or 5xx share rose clearly above the same hour yesterday, and on
none when none or several did: the report then says what it could not read.
"""

from __future__ import annotations

import asyncio
import re

from agent.guard.runner import ToolRunner
from tools.k8s_read.tools import K8sWorkloadsResult
from tools.prometheus.tools import PrometheusInstantResult

# <deployment>-<pod-template-hash>-<suffix>; the hash uses Kubernetes' safe alphabet, not hex.
_POD_SUFFIX = "-[a-z0-9]{6,10}-[a-z0-9]{5}"
_HASHED = re.compile(rf"^(?P<base>.+){_POD_SUFFIX}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123 label: safe inside a PromQL string

DEVIATION_MIN = 1.3  # a workload's signal must be this many times yesterday's to carry a namespace-only alert
DEVIATION_LEAD = 1.2  # ... and this many times the next workload's, or the alert is not placed
_EPS_SHARE = 0.01  # added to both 5xx shares: no division by zero, and a rise to 0.3 % is no placement


def _deviation_queries(ns: str) -> dict[str, str]:
    """Per workload of the namespace: its TTFT p95 and 5xx share over 5 minutes against the same hour yesterday.

    Grouped by workload, not by model: two Deployments serving one model in a namespace would dilute each other.
    The workload is the pod name without its ReplicaSet hash and suffix (Deployments and Argo Rollouts name
    pods alike), so no label allow-list of kube-state-metrics is needed and yesterday's pods count too.
    """
    sel = f'namespace="{ns}"'

    def by_workload(expr: str) -> str:
        return f'label_replace({expr}, "workload", "$1", "pod", "(.+){_POD_SUFFIX}")'

    def ttft(off: str) -> str:
        bucket = f"rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[5m]{off})"
        return f"histogram_quantile(0.95, sum by (workload, le) ({by_workload(bucket)}))"

    def share(off: str) -> str:
        bad = by_workload(f'rate(http_requests_total{{{sel}, status="5xx"}}[5m]{off})')
        every = by_workload(f"rate(http_requests_total{{{sel}}}[5m]{off})")
        return f"(sum by (workload) ({bad}) / sum by (workload) ({every}) + {_EPS_SHARE})"

    return {"ttft": f"{ttft('')} / {ttft(' offset 1d')}", "errors": f"{share('')} / {share(' offset 1d')}"}


async def _deviating_workload(ns: str, runner: ToolRunner, actor: str, incident_id: str) -> str | None:
    """The one workload of `ns` whose TTFT or 5xx share rose clearly above yesterday's; None when none or several
    did."""
    if not _NAMESPACE.fullmatch(ns) or "prometheus_query_instant" not in runner.tools:
        return None
    score: dict[str, float] = {}
    outs = await asyncio.gather(*(runner.call("prometheus_query_instant", {"query": q, "max_series": 50},
                                              actor=actor, incident_id=incident_id)
                                  for q in _deviation_queries(ns).values()))
    for out in outs:
        if not out.ok or not isinstance(out.result, PrometheusInstantResult):
            continue
        for smp in out.result.samples:
            name = smp.labels.get("workload")
            if name and smp.value is not None:
                score[name] = max(score.get(name, 0.0), smp.value)
    ranked = sorted(score.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] < DEVIATION_MIN:
        return None
    if len(ranked) > 1 and ranked[0][1] < DEVIATION_LEAD * ranked[1][1]:
        return None
    return ranked[0][0]


async def resolve_context(context: dict[str, str], runner: ToolRunner, actor: str, incident_id: str) -> dict[str, str]:
    """Return context keys learned from the cluster (deployment, model_name, cluster)."""
    found: dict[str, str] = {}
    ns = context.get("namespace")
    if context.get("deployment") or not ns or "k8s_list_workloads" not in runner.tools:
        return found
    out = await runner.call("k8s_list_workloads", {"namespace": ns, "limit": 200}, actor=actor,
                            incident_id=incident_id)
    if not out.ok or not isinstance(out.result, K8sWorkloadsResult):
        return found
    model = context.get("model_name")
    pod = context.get("pod")
    base = m.group("base") if pod and (m := _HASHED.match(pod)) else None
    if not (model or base):
        base = await _deviating_workload(ns, runner, actor, incident_id)
    for w in out.result.workloads:
        if (model and w.labels.model == model) or (base and w.name == base):
            found["deployment"] = w.name
            if not model and w.labels.model:
                found["model_name"] = w.labels.model
            break
    return found
