"""Populate the sandbox cluster through its real API: namespaces, RBAC, GPU nodes, serving workloads.

Everything is created with the admin identity. RBAC gives the agent's reader identity get/list/watch
on what triage needs (never Secrets or ConfigMaps), and the executor identity write access to
Deployments only in the serving namespaces.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deploy.sandbox import pki
from deploy.sandbox.fleet import (
    LAST_APPLIED,
    ROUTE_CRD,
    ROUTE_GROUP,
    ROUTE_PLURAL,
    ROUTE_VERSION,
    Fleet,
    Route,
    deployment_manifest,
    node_manifest,
    route_manifest,
    service_manifest,
)
from tools.rightsize.catalog import PriceCatalog

log = logging.getLogger(__name__)

SANDBOX_NAMESPACE = "opsagent-sandbox"  # the sandbox's own objects (fault state); agent cannot read it
OTHER_NAMESPACES = ("platform",)  # not serving: the executor must be refused here

# The chart's reader rules (no pods/log: no tool reads container logs from the API; they come from CloudWatch).
READER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "events", "nodes", "namespaces", "services",
                                       "endpoints", "persistentvolumeclaims", "resourcequotas", "limitranges"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets",
                                          "controllerrevisions"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get", "list", "watch"]},
    # Argo Rollouts: a deployment's target, the watch of its canary steps and the analysis behind an abort.
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts", "analysisruns", "analysistemplates"],
     "verbs": ["get", "list", "watch"]},
    # Gateway API routes: which backends share a route's traffic, at what weights, changed when and by whom.
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["get", "list", "watch"]},
]

# The executor's rules are the Helm chart's (deploy/helm/opsagent/templates/rbac.yaml), so the integration
# tests run with the privileges a real install grants; tests/unit/test_rbac_from_code.py checks that both
# equal what the executor's code calls.
EXECUTOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    # A pod restart: get the pod, delete it (with its uid as a precondition).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]},
    # Argo Rollouts: read a Rollout and merge-patch its template (the controller does the rest); promote
    # and abort patch its status subresource.
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["get", "patch"]},
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts/status"], "verbs": ["patch"]},
]
# Cluster-scoped: cordoning and draining GPU nodes, and counting the unschedulable ones (nothing else).
EXECUTOR_NODE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]


# What the executor may not change on a Node even though it may patch Nodes (it only sets spec.unschedulable):
# the chart's ValidatingAdmissionPolicy (templates/node-patch-policy.yaml) lists the same fields, and
# tests/unit/test_rbac_from_code.py checks the two agree.
NODE_PATCH_FIELDS = ("metadata.labels", "metadata.annotations", "metadata.finalizers", "metadata.ownerReferences",
                     "spec.taints", "spec.podCIDR", "spec.podCIDRs", "spec.providerID")


def node_patch_policy(name: str, username: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ValidatingAdmissionPolicy (and its binding) refusing any Node change by `username` other than
    spec.unschedulable."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["UPDATE"], "resources": ["nodes"]}]},
            "matchConditions": [{"name": "only-the-executor",
                                 "expression": f'request.userInfo.username == "{username}"'}],
            "validations": [{
                "expression": f"has(object.{f}) == has(oldObject.{f}) && "
                              f"(!has(object.{f}) || object.{f} == oldObject.{f})",
                "message": f"the opsagent executor may change only spec.unschedulable of a Node, not {f}"}
                for f in NODE_PATCH_FIELDS],
        },
    }
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    return policy, binding


def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def _apply(create: Callable[[], Any], replace: Callable[[], Any]) -> None:
    try:
        create()
    except ApiException as e:
        if e.status != 409:
            raise
        replace()


def bootstrap(api: client.ApiClient, fleet: Fleet, catalog: PriceCatalog) -> None:
    """Create namespaces, RBAC, the GPU nodes and the serving Deployments (idempotent)."""
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    apps = client.AppsV1Api(api)
    for ns in [SANDBOX_NAMESPACE, *fleet.serving_namespaces, *OTHER_NAMESPACES]:
        serving = str(ns in fleet.serving_namespaces).lower()
        body = {"metadata": {"name": ns, "labels": {"opsagent.dev/serving": serving}}}
        _apply(partial(core.create_namespace, body), partial(core.patch_namespace, ns, body))

    role = {"metadata": {"name": pki.READER}, "rules": READER_RULES}
    _apply(lambda: rbac.create_cluster_role(role), lambda: rbac.replace_cluster_role(pki.READER, role))
    binding = {
        "metadata": {"name": pki.READER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": pki.READER},
        "subjects": [{"kind": "User", "name": pki.READER, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    _apply(lambda: rbac.create_cluster_role_binding(binding),
           lambda: rbac.replace_cluster_role_binding(pki.READER, binding))
    exec_role = {"metadata": {"name": pki.EXECUTOR}, "rules": EXECUTOR_RULES}
    _apply(lambda: rbac.create_cluster_role(exec_role), lambda: rbac.replace_cluster_role(pki.EXECUTOR, exec_role))
    nodes_role = {"metadata": {"name": f"{pki.EXECUTOR}-nodes"}, "rules": EXECUTOR_NODE_RULES}
    _apply(partial(rbac.create_cluster_role, nodes_role),
           partial(rbac.replace_cluster_role, f"{pki.EXECUTOR}-nodes", nodes_role))
    nodes_binding = {
        "metadata": {"name": f"{pki.EXECUTOR}-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{pki.EXECUTOR}-nodes"},
        "subjects": [{"kind": "User", "name": pki.EXECUTOR, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    _apply(partial(rbac.create_cluster_role_binding, nodes_binding),
           partial(rbac.replace_cluster_role_binding, f"{pki.EXECUTOR}-nodes", nodes_binding))
    adm = client.AdmissionregistrationV1Api(api)
    vap, vap_binding = node_patch_policy(f"{pki.EXECUTOR}-node-patches", pki.EXECUTOR)
    _apply(partial(adm.create_validating_admission_policy, vap),
           partial(adm.replace_validating_admission_policy, vap["metadata"]["name"], vap))
    _apply(partial(adm.create_validating_admission_policy_binding, vap_binding),
           partial(adm.replace_validating_admission_policy_binding, vap_binding["metadata"]["name"], vap_binding))
    for ns in fleet.serving_namespaces:
        rb = {
            "metadata": {"name": pki.EXECUTOR, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": pki.EXECUTOR},
            "subjects": [{"kind": "User", "name": pki.EXECUTOR, "apiGroup": "rbac.authorization.k8s.io"}],
        }
        _apply(partial(rbac.create_namespaced_role_binding, ns, rb),
               partial(rbac.replace_namespaced_role_binding, pki.EXECUTOR, ns, rb))

    for pool in fleet.pools:
        for i in range(pool.nodes):
            node = node_manifest(fleet, catalog, pool, i)
            name = node["metadata"]["name"]
            _apply(partial(core.create_node, node), partial(core.patch_node, name, node))
            # The status subresource carries capacity/allocatable; create ignores it.
            core.patch_node_status(name, {"status": node["status"]})
    gateway = _gateway_manifest()
    _apply(lambda: apps.create_namespaced_deployment("platform", gateway),
           lambda: apps.replace_namespaced_deployment("inference-gateway", "platform", gateway))
    for w in fleet.workloads:
        dep = deployment_manifest(fleet, w)
        _apply(partial(apps.create_namespaced_deployment, w.namespace, dep),
               partial(apps.replace_namespaced_deployment, w.name, w.namespace, dep))
    if fleet.routes:
        install_routes(api, fleet)


def install_routes(api: client.ApiClient, fleet: Fleet) -> None:
    """Serve the HTTPRoute CRD, and create each route's backend Services and the route at its declared weights."""
    ext = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(ROUTE_CRD.read_text())
    _apply(partial(ext.create_custom_resource_definition, crd),
           lambda: ext.patch_custom_resource_definition(crd["metadata"]["name"], crd))
    wait_for(lambda: _established(ext, crd["metadata"]["name"]), 60, "the HTTPRoute CRD to be Established")
    core = client.CoreV1Api(api)
    for route in fleet.routes:
        for b in route.backends:
            svc = service_manifest(fleet.workload(b.workload))
            _apply(partial(core.create_namespaced_service, route.namespace, svc),
                   partial(core.patch_namespaced_service, b.workload, route.namespace, svc))
        apply_route(api, route)


def apply_route(api: client.ApiClient, route: Route) -> None:
    """Create or reset `route` at its declared weights the way `kubectl apply` does: the manifest is kept in the
    last-applied annotation and the change is made under kubectl's client-side-apply field manager."""
    custom = client.CustomObjectsApi(api)
    body = route_manifest(route)
    body["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(route_manifest(route), sort_keys=True,
                                                                 separators=(",", ":"))}
    manager = "kubectl-client-side-apply"
    _apply(partial(custom.create_namespaced_custom_object, ROUTE_GROUP, ROUTE_VERSION, route.namespace, ROUTE_PLURAL,
                   body, field_manager=manager),
           partial(custom.patch_namespaced_custom_object, ROUTE_GROUP, ROUTE_VERSION, route.namespace, ROUTE_PLURAL,
                   route.name, body, field_manager=manager))


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _gateway_manifest() -> dict[str, Any]:
    """A non-GPU platform service outside the serving namespaces (the executor may not touch it)."""
    labels = {"app.kubernetes.io/name": "inference-gateway", "team": "platform"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "inference-gateway", "namespace": "platform", "labels": labels},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": "inference-gateway"}},
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeSelector": {"opsagent.dev/node-pool": "general"},
                "containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1.34.1",
                                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}},
        },
    }


def nodes_ready(api: client.ApiClient, names: Iterable[str]) -> bool:
    wanted = set(names)
    ready = set()
    for n in client.CoreV1Api(api).list_node().items:
        if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])):
            ready.add(n.metadata.name)
    return wanted <= ready


def unavailable_deployments(api: client.ApiClient, fleet: Fleet) -> list[str]:
    """Return `namespace/name` of fleet Deployments whose rollout is not complete and available."""
    apps = client.AppsV1Api(api)
    pending = []
    for w in fleet.workloads:
        try:
            d = apps.read_namespaced_deployment(w.name, w.namespace)
        except ApiException:
            pending.append(f"{w.namespace}/{w.name}")
            continue
        s = d.status
        if (s.observed_generation or 0) < d.metadata.generation or (s.available_replicas or 0) < d.spec.replicas \
                or (s.updated_replicas or 0) < d.spec.replicas:
            pending.append(f"{w.namespace}/{w.name}")
    return pending


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll until `check()` is truthy. Returns seconds waited; raises TimeoutError naming `what`."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout:
        try:
            last = check()
            if last:
                return time.monotonic() - t0
        except Exception as e:  # the API may still be warming up
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last result: {last!r})")
