"""Inject and clear faults through the real Kubernetes API.

Faults are not flags inside the simulator: a bad rollout is a real Deployment update (the
controllers roll the pods, the simulator sees the new version's performance), an over-provisioned
model is a real scale-up, a lost GPU is a node whose allocatable GPUs drop to zero and whose pods are
evicted, a mistaken route change is a real edit of the HTTPRoute's weights. Only what no API can express
(traffic arriving from outside, the driver's XID code) is written to the ConfigMap
`opsagent-sandbox/faults`, which the simulator reads and the agent's read-only identity cannot.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.sandbox.cluster import SANDBOX_NAMESPACE, apply_route
from deploy.sandbox.fleet import (
    GPU_RESOURCE,
    LABEL_APP,
    LABEL_POOL,
    ROUTE_GROUP,
    ROUTE_PLURAL,
    ROUTE_VERSION,
    Fleet,
    Route,
    Workload,
    deployment_manifest,
    load_prices,
    node_manifest,
    pod_template,
    route_manifest,
)
from deploy.sandbox.simulator import model

# Faults that are a rollout of another model version (its performance profile is the fault).
ROLLOUT_FAULTS = ("bad-rollout", "gpu-oom", "prefix-cache-regression", "triton-batching", "tensor-cores-idle",
                  "context-limit", "image-pull", "host-oom", "slow-start")
FAULTS = (*ROLLOUT_FAULTS, "traffic-surge", "gpu-xid", "idle-overprovision", "gpu-thermal", "autoscaler-thrash",
          "gpu-capacity", "spot-loss", "hung-worker", "traffic-flap", "gitops-owner", "alb-5xx", "traffic-shift")
FAULT_LABEL = "opsagent.dev/fault"  # on objects a fault created, so `clear` can find them
CONFIGMAP = "faults"
# What Argo CD writes on what it applies (annotation tracking, its default since 3.0). The sandbox runs no
# Argo CD, so nothing reverts a direct write here; the agent must not rely on that.
ARGOCD_TRACKING = "argocd.argoproj.io/tracking-id"
KEY = "faults.json"


class FaultError(RuntimeError):
    """A fault could not be injected or cleared; the message says what was tried."""


def _empty_state() -> dict[str, Any]:
    return {"traffic": {}, "xid": {}, "heat": {}, "hung": {}, "flap": {}, "alb": {}, "active": []}


def read_state(core: client.CoreV1Api) -> dict[str, Any]:
    try:
        cm = core.read_namespaced_config_map(CONFIGMAP, SANDBOX_NAMESPACE)
    except ApiException as e:
        if e.status == 404:
            return _empty_state()
        raise
    state: dict[str, Any] = json.loads((cm.data or {}).get(KEY) or "{}")
    for k, empty in _empty_state().items():
        state.setdefault(k, empty)
    return state


def _write_state(core: client.CoreV1Api, state: dict[str, Any]) -> None:
    body = {"metadata": {"name": CONFIGMAP, "namespace": SANDBOX_NAMESPACE}, "data": {KEY: json.dumps(state)}}
    try:
        core.replace_namespaced_config_map(CONFIGMAP, SANDBOX_NAMESPACE, body)
    except ApiException as e:
        if e.status != 404:
            raise
        core.create_namespaced_config_map(SANDBOX_NAMESPACE, body)


def inject(api: client.ApiClient, fleet: Fleet, fault: str, target: str | None = None,
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inject `fault` (one of FAULTS) on its default workload or on `target` (a workload name).

    `params` override the fleet file's defaults for this fault (e.g. `{"version": "2025.07.0"}`,
    `{"xid": 48}`, `{"heat_c": 40}`).
    """
    if fault not in FAULTS:
        raise FaultError(f"unknown fault {fault!r}; choose one of: {', '.join(FAULTS)}")
    spec = dict(fleet.faults.get(fault, {})) | dict(params or {})
    if fault == "traffic-shift":
        return _shift_route(api, fleet, spec, target)
    try:
        w = fleet.workload(target or spec["workload"])
    except KeyError as e:
        raise FaultError(str(e)) from e
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    state = read_state(core)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record: dict[str, Any] = {"fault": fault, "workload": f"{w.namespace}/{w.name}", "at": now}

    if fault in ROLLOUT_FAULTS:
        version = str(spec.get("version", ""))
        mv = fleet.version(w.model, version)
        if mv is None:
            raise FaultError(f"fleet has no model version {w.model} {version} to roll out")
        deadline = spec.get("progress_deadline_s")
        _rollout(apps, fleet, w, version, cause=f"deploy {w.model} {version}",
                 progress_deadline_s=int(deadline) if deadline is not None else None)
        record["version"] = version
    elif fault == "traffic-flap":
        # A surge on a timer (a batch client that starts every few minutes): saturated for half of each
        # period, nominal for the other half, so the same alert resolves and fires again on a fixed period.
        mult = surge_multiplier(fleet, w, float(spec.get("multiplier", 3.0)),
                                float(spec.get("target_utilization", 1.6)), time.time())
        key = f"{w.namespace}/{w.name}"
        state["traffic"][key] = mult
        state["flap"][key] = {"since": time.time(), "period_s": float(spec.get("period_s", 240))}
        record["multiplier"] = round(mult, 2)
        record["period_s"] = state["flap"][key]["period_s"]
    elif fault == "traffic-surge":
        mult = surge_multiplier(fleet, w, float(spec.get("multiplier", 3.0)),
                                float(spec.get("target_utilization", 1.6)), time.time())
        state["traffic"][f"{w.namespace}/{w.name}"] = mult
        record["multiplier"] = round(mult, 2)
    elif fault == "idle-overprovision":
        replicas = int(spec.get("replicas", w.replicas * 3))
        apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": replicas}})
        state["traffic"][f"{w.namespace}/{w.name}"] = float(spec.get("traffic_multiplier", 0.1))
        record["replicas"] = replicas
    elif fault == "gpu-capacity":
        # A scale-up past what the pool holds: the real scheduler leaves the extra pods Pending
        # (Unschedulable, "Insufficient nvidia.com/gpu"); nothing is lost, the demand outgrew the pool.
        pool = fleet.pool(w.pool)
        per_node = load_prices().instance_types[pool.instance_type].gpus
        fits = (pool.nodes * per_node) // max(w.gpus, 1)
        replicas = int(spec.get("replicas", fits + int(spec.get("beyond", 1))))
        apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": replicas}})
        record["replicas"] = replicas
    elif fault == "spot-loss":
        # The cloud reclaims several spot instances of one pool at once: Karpenter (or the node termination
        # handler) reports the interruption, drains the nodes and deletes them. The ReplicaSets replace the
        # evicted pods; the scheduler finds no GPUs left for some of them.
        pool = fleet.pool(str(spec.get("pool", w.pool)))
        if pool.capacity_type != "spot":
            raise FaultError(f"pool {pool.name} is {pool.capacity_type}, not spot: nothing to reclaim")
        lost = _reclaim(core, pool.name, w, int(spec.get("nodes", 3)))
        record["pool"] = pool.name
        record["nodes"] = lost
    elif fault == "gitops-owner":
        # Not a failure by itself: the workload now belongs to an Argo CD Application, as if it had been
        # synced from Git. Combine it with a rollout fault; the fix then goes through Git.
        app = str(spec.get("application", f"{w.namespace}-{w.name}"))
        tracking = f"{app}:apps/Deployment:{w.namespace}/{w.name}"
        apps.patch_namespaced_deployment(w.name, w.namespace,
                                         {"metadata": {"annotations": {ARGOCD_TRACKING: tracking}}})
        record["application"] = app
    elif fault == "alb-5xx":
        # The cluster's entry load balancer fails a share of requests itself (HTTPCode_ELB_5XX_Count) while
        # every target is healthy and answers what reaches it: no Kubernetes object changes, so it goes to
        # the simulator through the faults ConfigMap. `workload` only names whose traffic is hurt first.
        share = float(spec.get("share", 0.08))
        if not 0.0 < share <= 1.0:
            raise FaultError(f"alb-5xx share must be in (0, 1], got {share}")
        state["alb"] = {"share": share, "since": time.time()}
        record["share"] = share
    elif fault == "hung-worker":
        # One rank of a tensor-parallel replica stuck in a collective: nothing in the API changes (the pod
        # stays Running and Ready), so it goes to the simulator through the faults ConfigMap.
        pod = _a_ready_pod(core, w)
        state["hung"][f"{w.namespace}/{pod}"] = time.time()
        record["pod"] = pod
    elif fault == "gpu-xid":
        node = _busiest_node(core, w)
        xid = int(spec.get("xid", 79))
        state["xid"][node] = xid
        _node_event(core, node, xid)
        # XID 79 (fell off the bus) and uncontained errors take the GPUs away: pods using them die and
        # their replacements cannot fit on this node. `drop_gpus: false` keeps them (e.g. XID 48 on one
        # GPU whose pages were retired, the node still serving).
        if bool(spec.get("drop_gpus", xid == 79)):
            core.patch_node_status(node, {"status": {"allocatable": {GPU_RESOURCE: "0"}}})
            for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
                if _gpu_request(pod) > 0:
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        record["node"] = node
        record["xid"] = xid
    elif fault == "gpu-thermal":
        node = _busiest_node(core, w)
        state["heat"][node] = float(spec.get("heat_c", 50.0))
        record["node"] = node
        record["heat_c"] = state["heat"][node]
    elif fault == "autoscaler-thrash":
        hpa = _hpa_manifest(w, int(spec.get("min_replicas", 2)), int(spec.get("max_replicas", 6)))
        autoscaling = client.AutoscalingV2Api(api)
        try:
            autoscaling.create_namespaced_horizontal_pod_autoscaler(w.namespace, hpa)
        except ApiException as e:
            if e.status != 409:
                raise
        record["hpa"] = w.name
    state["active"].append(record)
    _write_state(core, state)
    return record


def _shift_route(api: client.ApiClient, fleet: Fleet, spec: dict[str, Any], target: str | None) -> dict[str, Any]:
    """A mistaken edit of a route: one backend gets `weight` of 100, the others share the rest in their declared
    proportions. `target` names the route, or a backend workload (then it is the one that receives the weight).

    The edit is what `kubectl edit` sends (a merge patch under its field manager): the route's generation goes
    up, its managedFields say who changed the rules and when, and its last-applied annotation keeps the weights
    as applied before. `clear` applies the declared route again."""
    routes = {r.name: r for r in fleet.routes}
    route: Route | None = None
    receiver = str(spec.get("workload", ""))
    if target in routes:
        route = routes[target]
    elif target:
        try:
            w = fleet.workload(target)
        except KeyError as e:
            raise FaultError(f"traffic-shift: {target!r} is neither a route ({', '.join(routes) or 'none'}) "
                             f"nor a workload") from e
        on = fleet.routes_to(w)
        if not on:
            raise FaultError(f"traffic-shift: workload {w.namespace}/{w.name} is the backend of no route")
        route, receiver = on[0], w.name
    else:
        route = routes.get(str(spec.get("route", "")))
    if route is None:
        raise FaultError(f"traffic-shift: no route {spec.get('route')!r} in the fleet (have: {', '.join(routes)})")
    declared = route.declared()
    if receiver not in declared:
        raise FaultError(f"traffic-shift: {receiver!r} is not a backend of route {route.namespace}/{route.name} "
                         f"(backends: {', '.join(declared)})")
    weight = int(spec.get("weight", 90))
    if not 0 < weight <= 100:
        raise FaultError(f"traffic-shift: weight must be in (0, 100], got {weight}")
    others = {n: v for n, v in declared.items() if n != receiver}
    rest, spread = 100 - weight, sum(others.values())
    weights = {n: (round(rest * v / spread) if spread else rest // len(others)) for n, v in others.items()}
    weights[receiver] = weight
    core = client.CoreV1Api(api)
    state = read_state(core)
    custom = client.CustomObjectsApi(api)
    rules = route_manifest(route, weights)["spec"]["rules"]
    try:
        custom.patch_namespaced_custom_object(ROUTE_GROUP, ROUTE_VERSION, route.namespace, ROUTE_PLURAL, route.name,
                                              {"spec": {"rules": rules}}, field_manager="kubectl-edit")
    except ApiException as e:
        raise FaultError(f"traffic-shift: patching HTTPRoute {route.namespace}/{route.name} failed: "
                         f"{e.status} {e.reason}") from e
    record: dict[str, Any] = {"fault": "traffic-shift", "workload": f"{route.namespace}/{receiver}",
                              "route": f"{route.namespace}/{route.name}", "weights": weights,
                              "declared": declared, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    state["active"].append(record)
    _write_state(core, state)
    return record


def clear(api: client.ApiClient, fleet: Fleet) -> list[dict[str, Any]]:
    """Undo every injected fault: restore traffic, GPUs, versions, replica counts and route weights to the fleet's."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    state = read_state(core)
    _restore_nodes(core, fleet)
    _restore_routes(api, fleet)
    for node in state["xid"]:
        cap = core.read_node(node).status.capacity or {}
        core.patch_node_status(node, {"status": {"allocatable": {GPU_RESOURCE: cap.get(GPU_RESOURCE, "0")}}})
    autoscaling = client.AutoscalingV2Api(api)
    for hpa in autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(label_selector=FAULT_LABEL).items:
        autoscaling.delete_namespaced_horizontal_pod_autoscaler(hpa.metadata.name, hpa.metadata.namespace)
    for w in fleet.workloads:
        dep = apps.read_namespaced_deployment(w.name, w.namespace)
        desired = deployment_manifest(fleet, w)
        labels = dep.spec.template.metadata.labels or {}
        if labels.get("model-version") != desired["spec"]["template"]["metadata"]["labels"]["model-version"]:
            _rollout(apps, fleet, w, w.version, cause=f"deploy {w.model} {w.version}")
        if ARGOCD_TRACKING in (dep.metadata.annotations or {}):
            apps.patch_namespaced_deployment(w.name, w.namespace,
                                             {"metadata": {"annotations": {ARGOCD_TRACKING: None}}})
        if dep.spec.progress_deadline_seconds != desired["spec"]["progressDeadlineSeconds"]:
            apps.patch_namespaced_deployment(w.name, w.namespace, {"spec": {
                "progressDeadlineSeconds": desired["spec"]["progressDeadlineSeconds"]}})
        if dep.spec.replicas != w.replicas:
            apps.patch_namespaced_deployment_scale(w.name, w.namespace, {"spec": {"replicas": w.replicas}})
    cleared: list[dict[str, Any]] = state["active"]
    _write_state(core, _empty_state())
    return cleared


def surge_multiplier(fleet: Fleet, w: Workload, at_least: float, target_utilization: float, now: float) -> float:
    """A surge that saturates at any hour: traffic rises by `at_least`x, or more if that is what it takes
    to load the replicas to `target_utilization` of their capacity (a 3x surge at 4 a.m. may fit)."""
    mv = fleet.version(w.model, w.version)
    product = load_prices().instance_types[fleet.pool(w.pool).instance_type].gpu_product or ""
    capacity = w.replicas * (mv.max_rps if mv else 1.0) * fleet.gpu_speed.get(product, 1.0)
    demand = model.demand_rps(w.traffic, now, seed=f"{w.namespace}/{w.name}")
    return max(at_least, target_utilization * capacity / demand) if demand > 0 else at_least


def _rollout(apps: client.AppsV1Api, fleet: Fleet, w: Workload, version: str, cause: str,
             progress_deadline_s: int | None = None) -> None:
    """Roll `w` to `version`; `progress_deadline_s` also sets the Deployment's progress deadline (a team
    that wants a stuck rollout reported sooner than the default 10 minutes)."""
    mv = fleet.version(w.model, version)
    assert mv is not None
    template = pod_template(fleet, w, mv)
    spec: dict[str, Any] = {"template": template}
    if progress_deadline_s is not None:
        spec["progressDeadlineSeconds"] = progress_deadline_s
    patch = {"metadata": {"annotations": {"kubernetes.io/change-cause": cause}}, "spec": spec}
    apps.patch_namespaced_deployment(w.name, w.namespace, patch)


def _reclaim(core: client.CoreV1Api, pool: str, w: Workload, count: int) -> list[str]:
    """Interrupt, drain and delete `count` nodes of `pool`, those serving `w` first. Returns their names."""
    nodes = sorted(n.metadata.name for n in core.list_node(label_selector=f"{LABEL_POOL}={pool}").items)
    pods = core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
    hosting = {p.spec.node_name for p in pods if p.spec.node_name}
    victims = sorted(nodes, key=lambda n: (n not in hosting, n))[:count]
    if len(victims) < 2:
        raise FaultError(f"pool {pool} has {len(nodes)} node(s); a spot loss takes several at once")
    now = dt.datetime.now(dt.UTC).isoformat()
    for node in victims:
        core.create_namespaced_event("default", {
            "metadata": {"generateName": f"{node}.", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": node, "uid": node, "apiVersion": "v1"},
            "reason": "SpotInterrupted",
            "message": "Spot interruption warning was triggered; the instance will be terminated in 2 minutes",
            "type": "Warning",
            "source": {"component": "karpenter"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })
        core.patch_node(node, {"spec": {"unschedulable": True}})
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        core.delete_node(node)
    return victims


def _restore_routes(api: client.ApiClient, fleet: Fleet) -> None:
    """Apply every fleet route at its declared weights again (a no-op for a route that has them; a deleted
    route is created)."""
    for route in fleet.routes:
        apply_route(api, route)


def _restore_nodes(core: client.CoreV1Api, fleet: Fleet) -> None:
    """Create the fleet's nodes that are missing (a reclaimed spot node comes back as a new instance)."""
    present = {n.metadata.name for n in core.list_node().items}
    catalog = load_prices()
    for pool in fleet.pools:
        for i in range(pool.nodes):
            node = node_manifest(fleet, catalog, pool, i)
            if node["metadata"]["name"] in present:
                continue
            core.create_node(node)
            core.patch_node_status(node["metadata"]["name"], {"status": node["status"]})


def _gpu_request(pod: Any) -> int:
    total = 0
    for c in pod.spec.containers:
        req = (c.resources.requests or {}) if c.resources else {}
        total += int(req.get(GPU_RESOURCE, 0))
    return total


def _is_ready(p: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])


def _a_ready_pod(core: client.CoreV1Api, w: Workload) -> str:
    pods = core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
    ready = sorted(p.metadata.name for p in pods if not p.metadata.deletion_timestamp and _is_ready(p))
    if not ready:
        raise FaultError(f"no Ready pod of {w.namespace}/{w.name} to hang")
    return str(ready[0])


def _busiest_node(core: client.CoreV1Api, w: Workload) -> str:
    """The node carrying most of `w`'s serving (Ready) pods; the most scheduled ones when none is Ready."""
    pods = [p for p in core.list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={w.name}").items
            if p.spec.node_name and not p.metadata.deletion_timestamp]
    if not pods:
        raise FaultError(f"no scheduled pods of {w.namespace}/{w.name} to take a GPU node from")
    counts: dict[str, tuple[int, int]] = {}
    for p in pods:
        r, n = counts.get(p.spec.node_name, (0, 0))
        counts[p.spec.node_name] = (r + _is_ready(p), n + 1)
    return sorted(counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[0][0]


def _node_event(core: client.CoreV1Api, node: str, xid: int) -> None:
    now = dt.datetime.now(dt.UTC)
    messages = {79: "GPU has fallen off the bus", 48: "double-bit ECC error", 63: "row remapping pending"}
    core.create_namespaced_event("default", {
        "metadata": {"generateName": f"{node}.", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": node, "uid": node, "apiVersion": "v1"},
        "reason": "XidError",
        "message": f"NVRM: Xid (PCI:0000:53:00): {xid}, {messages.get(xid, 'GPU error')}; device marked unhealthy",
        "type": "Warning",
        "source": {"component": "nvidia-device-plugin", "host": node},
        "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
    })


def _hpa_manifest(w: Workload, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    """An HPA on GPU utilization: with no metrics API in the sandbox, `thrash_hpa` plays its decisions."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": {FAULT_LABEL: "autoscaler-thrash"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
        },
    }


def thrash_hpa(api: client.ApiClient, namespace: str, name: str, *, flips: int, interval_s: float = 4.0,
               low: int = 2, high: int = 6, stop: Any = None) -> int:
    """Play an autoscaler that changes its mind: alternate the HPA's desired replicas `flips` times.

    The sandbox has no metrics API, so the real HPA controller cannot decide anything; this writes the
    decisions a thrashing HPA writes (its status), which kube-state-metrics exports as
    `kube_horizontalpodautoscaler_status_desired_replicas`. Stops early when `stop` (an Event) is set.
    Returns how many flips were written.
    """
    autoscaling = client.AutoscalingV2Api(api)
    done = 0
    for i in range(flips):
        if stop is not None and stop.is_set():
            break
        desired = high if i % 2 == 0 else low
        status = {"status": {"desiredReplicas": desired, "currentReplicas": low,
                             "lastScaleTime": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}}
        try:
            autoscaling.patch_namespaced_horizontal_pod_autoscaler_status(name, namespace, status)
        except ApiException as e:
            if e.status == 404:
                break
            raise
        done += 1
        if stop is not None:
            stop.wait(interval_s)
        else:
            time.sleep(interval_s)
    return done
