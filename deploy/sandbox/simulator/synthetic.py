"""The fleet as the sandbox would deploy it, as Kubernetes-shaped dicts, without a cluster.

For unit tests and the backfill benchmark: nodes come from `fleet.node_manifest`, pods from the
Deployments' pod templates, placed first-fit on their pool's GPUs (the real scheduler may spread
them differently; nothing here depends on where exactly they land). Never used against a cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from deploy.sandbox.fleet import (
    GPU_RESOURCE,
    Fleet,
    deployment_manifest,
    node_manifest,
    pod_template,
)
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from tools.rightsize.catalog import PriceCatalog


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fleet_objects(
    fleet: Fleet,
    catalog: PriceCatalog,
    replicas: dict[str, int] | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Nodes, Deployments and Ready pods of `fleet` (optionally other replicas or versions)."""
    replicas, versions = replicas or {}, versions or {}
    nodes: list[dict[str, Any]] = []
    free: dict[str, int] = {}
    for pool in fleet.pools:
        for i in range(pool.nodes):
            n = node_manifest(fleet, catalog, pool, i)
            ip = f"10.0.{len(nodes) // 200}.{len(nodes) % 200 + 10}"
            n["status"]["addresses"] = [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": n["metadata"]["name"]},
            ]
            n["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            nodes.append(n)
            free[n["metadata"]["name"]] = int(n["status"]["capacity"].get(GPU_RESOURCE, 0))
    by_name = {n["metadata"]["name"]: n for n in nodes}
    deployments: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    for w in fleet.workloads:
        count = replicas.get(w.name, w.replicas)
        version = versions.get(w.name, w.version)
        dep = deployment_manifest(fleet, w)
        mv = fleet.version(w.model, version)
        assert mv is not None, f"no model version {w.model} {version}"
        template = pod_template(fleet, w, mv)
        dep["spec"]["template"] = template
        dep["spec"]["replicas"] = count
        dep["status"] = {"availableReplicas": 0 if mv.crash else count}
        deployments.append(dep)
        rs = f"{w.name}-{_h(w.name + version, 10)}"
        pool_nodes = [
            n["metadata"]["name"]
            for n in nodes
            if n["metadata"]["labels"].get("opsagent.dev/node-pool") == w.pool
        ]
        for k in range(count):
            name = f"{rs}-{_h(f'{rs}/{k}', 5)}"
            node = next((x for x in pool_nodes if free[x] >= w.gpus), "")
            if node:
                free[node] -= w.gpus
            ready = bool(node) and not mv.crash
            pods.append(
                {
                    "metadata": {
                        "namespace": w.namespace,
                        "name": name,
                        "uid": f"{_h(name, 8)}-{_h(name + 'u', 4)}-4000-8000-{_h(name + 'v', 12)}",
                        "labels": dict(template["metadata"]["labels"]),
                        "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}],
                    },
                    "spec": {**template["spec"], "nodeName": node},
                    "status": {
                        "phase": "Running" if node else "Pending",
                        "podIP": f"10.244.{len(pods) // 200}.{len(pods) % 200 + 2}" if node else "",
                        "hostIP": by_name[node]["status"]["addresses"][0]["address"]
                        if node
                        else "",
                        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                    },
                }
            )
    return {"nodes": nodes, "pods": pods, "deployments": deployments}


def fleet_snapshot(
    fleet: Fleet,
    catalog: PriceCatalog,
    *,
    replicas: dict[str, int] | None = None,
    versions: dict[str, str] | None = None,
    faults: dict[str, Any] | None = None,
) -> ClusterSnapshot:
    """A `ClusterSnapshot` of the fleet as deployed, optionally with a faults ConfigMap payload."""
    objs = fleet_objects(fleet, catalog, replicas, versions)
    cm = {"data": {"faults.json": json.dumps(faults)}} if faults else None
    return ClusterSnapshot.from_dicts(objs["pods"], objs["nodes"], objs["deployments"], cm)
