"""kube-state-metrics series for the backfill, with the label sets kube-state-metrics itself emits.

The sandbox runs the real kube-state-metrics for live samples; this module only writes the history
it would have produced had the current pods, nodes and Deployments existed all along. Label names
and sets follow kube-state-metrics v2.x (`docs/metrics/`), with `--metric-labels-allowlist` applied
the way the sandbox starts it, plus the `job` and `instance` labels its scrape adds. Values are
constant over the history: these objects did not change.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from deploy.sandbox.fleet import GPU_RESOURCE
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.series import Family, Kind, Labels

JOB = "kube-state-metrics"
# The allowlist `sandbox.py` passes to kube-state-metrics (`--metric-labels-allowlist`).
DEFAULT_ALLOWLIST = (
    "pods=[model,model-version,serving-runtime,team,app.kubernetes.io/name],"
    "deployments=[model,serving-runtime,team,app.kubernetes.io/name],"
    "nodes=[nvidia.com/gpu.product,nvidia.com/mig.config,node.kubernetes.io/instance-type,opsagent.dev/node-pool]"
)

G = Kind.GAUGE
POD_INFO = Family("kube_pod_info", G, "[STABLE] Information about pod.")
POD_REQUESTS = Family(
    "kube_pod_container_resource_requests",
    G,
    "The number of requested request resource by a container. It is recommended to use the "
    "kube_pod_resource_requests metric exposed by kube-scheduler instead, as it is more precise.",
)
POD_LABELS = Family(
    "kube_pod_labels", G, "[STABLE] Kubernetes labels converted to Prometheus labels."
)
DEPLOY_REPLICAS = Family(
    "kube_deployment_spec_replicas", G, "[STABLE] Number of desired pods for a deployment."
)
DEPLOY_AVAILABLE = Family(
    "kube_deployment_status_replicas_available",
    G,
    "[STABLE] The number of available replicas per deployment.",
)
NODE_ALLOCATABLE = Family(
    "kube_node_status_allocatable",
    G,
    "[STABLE] The allocatable for different resources of a node that are available for scheduling.",
)
NODE_CAPACITY = Family(
    "kube_node_status_capacity", G, "[STABLE] The capacity for different resources of a node."
)
NODE_LABELS = Family(
    "kube_node_labels", G, "[STABLE] Kubernetes labels converted to Prometheus labels."
)

_UNITS = {"cpu": "core", "memory": "byte", "ephemeral-storage": "byte", "storage": "byte"}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def parse_allowlist(spec: str) -> dict[str, list[str]]:
    """Parse `pods=[a,b],nodes=[c]` (kube-state-metrics' flag syntax) into {resource: [labels]}."""
    out: dict[str, list[str]] = {}
    for resource, body in re.findall(r"([a-z]+)=\[([^\]]*)\]", spec):
        out[resource] = [x.strip() for x in body.split(",") if x.strip()]
    return out


def sanitize(name: str) -> str:
    """A Kubernetes label or resource name as a Prometheus label name/value, the ksm way."""
    return _INVALID.sub("_", name)


def _resource(name: str) -> tuple[str, str]:
    """(resource, unit) labels of a resource name: `nvidia.com/gpu` → (nvidia_com_gpu, integer)."""
    if name.startswith("hugepages-"):
        return sanitize(name), "byte"
    return sanitize(name), _UNITS.get(name, "integer")


def _allowed(labels: Mapping[str, str], allow: Sequence[str]) -> Labels:
    if allow == ["*"]:
        keys: Sequence[str] = sorted(labels)
    else:
        keys = [k for k in allow if k in labels]
    return tuple((f"label_{sanitize(k)}", labels[k]) for k in keys)


def ksm_series(
    snapshot: ClusterSnapshot,
    instance: str,
    allowlist: str = DEFAULT_ALLOWLIST,
    node_resources: Collection[str] = (GPU_RESOURCE,),
) -> list[tuple[Family, list[tuple[Labels, float]]]]:
    """The kube-state-metrics series of `snapshot` and their (constant) values.

    Node capacity and allocatable are written for `node_resources` only (GPUs by default: what
    history is needed for); kube-state-metrics itself reports every resource live.
    """
    allow = parse_allowlist(allowlist)
    scrape: Labels = (("job", JOB), ("instance", instance))
    info, requests, pod_labels = [], [], []
    for p in snapshot.pods:
        ident: Labels = (("namespace", p.namespace), ("pod", p.name), ("uid", p.uid))
        info.append(
            (
                (
                    *ident,
                    ("host_ip", p.host_ip),
                    ("pod_ip", p.ip),
                    ("node", p.node_name),
                    ("created_by_kind", p.owner.kind if p.owner else "<none>"),
                    ("created_by_name", p.owner.name if p.owner else "<none>"),
                    ("priority_class", p.priority_class),
                    ("host_network", str(p.host_network).lower()),
                    *scrape,
                ),
                1.0,
            )
        )
        for c in p.containers:
            for res, amount in c.requests.items():
                rname, unit = _resource(res)
                requests.append(
                    (
                        (
                            *ident,
                            ("container", c.name),
                            ("node", p.node_name),
                            ("resource", rname),
                            ("unit", unit),
                            *scrape,
                        ),
                        amount,
                    )
                )
        pod_labels.append(((*ident, *_allowed(p.labels, allow.get("pods", [])), *scrape), 1.0))
    replicas, available = [], []
    for d in snapshot.deployments:
        ident = (("namespace", d.namespace), ("deployment", d.name), *scrape)
        replicas.append((ident, float(d.replicas)))
        available.append((ident, float(d.available_replicas)))
    capacity: list[tuple[Labels, float]] = []
    allocatable: list[tuple[Labels, float]] = []
    node_labels: list[tuple[Labels, float]] = []
    for n in snapshot.nodes:
        for target, resources in ((capacity, n.capacity), (allocatable, n.allocatable)):
            for res, amount in sorted(resources.items()):
                if res not in node_resources:
                    continue
                rname, unit = _resource(res)
                target.append(
                    ((("node", n.name), ("resource", rname), ("unit", unit), *scrape), amount)
                )
        node_labels.append(
            ((("node", n.name), *_allowed(n.labels, allow.get("nodes", [])), *scrape), 1.0)
        )
    return [
        (POD_INFO, info),
        (POD_REQUESTS, requests),
        (POD_LABELS, pod_labels),
        (DEPLOY_REPLICAS, replicas),
        (DEPLOY_AVAILABLE, available),
        (NODE_ALLOCATABLE, allocatable),
        (NODE_CAPACITY, capacity),
        (NODE_LABELS, node_labels),
    ]
