"""Fill in what the alert does not say: which Deployment serves the model, which node hosts the pod.

Alerts name a namespace and a model (vLLM's `model_name`, Triton's `model`) or a pod or a node; the
evidence queries and remediations need the Deployment. One read of the serving workloads answers it.
"""

from __future__ import annotations

import re

from agent.guard.runner import ToolRunner
from tools.k8s_read.tools import K8sWorkloadsResult

# <deployment>-<pod-template-hash>-<suffix>; the hash uses Kubernetes' safe alphabet, not hex.
_HASHED = re.compile(r"^(?P<base>.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")


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
    for w in out.result.workloads:
        if (model and w.labels.model == model) or (base and w.name == base):
            found["deployment"] = w.name
            if not model and w.labels.model:
                found["model_name"] = w.labels.model
            break
    return found
