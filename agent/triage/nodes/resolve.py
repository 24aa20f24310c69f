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
from tools.prometheus.promql import ANY_POD, POD_SUFFIX, by_workload, workload_pods
from tools.prometheus.tools import PrometheusInstantResult

_HASHED = re.compile(rf"^(?P<base>.+){POD_SUFFIX}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123 label: safe inside a PromQL string
_WORKLOAD = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # DNS-1123 subdomain: a workload's name

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

    def ttft(off: str) -> str:
        bucket = f"rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[5m]{off})"
        return f"histogram_quantile(0.95, sum by (workload, le) ({by_workload(bucket)}))"

    def share(off: str) -> str:
        bad = by_workload(f'rate(http_requests_total{{{sel}, status="5xx"}}[5m]{off})')
        every = by_workload(f"rate(http_requests_total{{{sel}}}[5m]{off})")
        return f"(sum by (workload) ({bad}) / sum by (workload) ({every}) + {_EPS_SHARE})"

    return {"ttft": f"{ttft('')} / {ttft(' offset 1d')}", "errors": f"{share('')} / {share(' offset 1d')}"}


async def _deviating_workload(ns: str, runner: ToolRunner, actor: str, incident_id: str,
                              among: set[str] | None = None) -> str | None:
    """The one workload of `ns` (of `among`, when given) whose TTFT or 5xx share rose clearly above yesterday's;
    None when none or several did."""
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
            if name and smp.value is not None and (among is None or name in among):
                score[name] = max(score.get(name, 0.0), smp.value)
    ranked = sorted(score.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] < DEVIATION_MIN:
        return None
    if len(ranked) > 1 and ranked[0][1] < DEVIATION_LEAD * ranked[1][1]:
        return None
    return ranked[0][0]


def pods_pattern(context: dict[str, str]) -> str:
    """The `pods` context key: a pattern for the pods of the workload the incident is about (its Deployment,
    else the workload an alert named), so evidence about one of two workloads serving the same model is not
    diluted by the other; every series (`.*`) when neither is known or the name is not a Kubernetes name."""
    for key in ("deployment", "workload"):
        name = context.get(key, "")
        if _WORKLOAD.fullmatch(name):
            return workload_pods(name)
    return ANY_POD


async def resolve_context(context: dict[str, str], runner: ToolRunner, actor: str, incident_id: str) -> dict[str, str]:
    """Return context keys learned from the cluster (deployment, model_name, cluster).

    The workload is, in this order: the one an alert named (a `workload` label, kept only when the namespace
    has a Deployment of that name), the pod's, the one Deployment serving the alert's model, the one of
    several serving it whose signals rose above yesterday's, or the namespace's one deviating workload."""
    found: dict[str, str] = {}
    ns = context.get("namespace")
    if context.get("deployment") or not ns or "k8s_list_workloads" not in runner.tools:
        return found
    out = await runner.call("k8s_list_workloads", {"namespace": ns, "limit": 200}, actor=actor,
                            incident_id=incident_id)
    if not out.ok or not isinstance(out.result, K8sWorkloadsResult):
        return found
    workloads = out.result.workloads
    model = context.get("model_name")
    pod = context.get("pod")
    base = context.get("workload") or (m.group("base") if pod and (m := _HASHED.match(pod)) else None)
    serving = [w for w in workloads if model and w.labels.model == model]
    if base is None and len(serving) > 1:
        base = await _deviating_workload(ns, runner, actor, incident_id, among={w.name for w in serving})
        if base is None:
            return found  # several Deployments serve the model and none stands out: say so, do not pick one
    elif base is None and not model:
        base = await _deviating_workload(ns, runner, actor, incident_id)
    chosen = next((w for w in workloads if w.name == base), None) if base else (serving[0] if serving else None)
    if chosen is not None:
        found["deployment"] = chosen.name
        if not model and chosen.labels.model:
            found["model_name"] = chosen.labels.model
    return found
