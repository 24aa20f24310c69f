"""Mutations with the semantics operators expect, each with a server-side dry run.

`rollout_undo` does what `kubectl rollout undo --to-revision` does: copy the chosen ReplicaSet's pod
template (without its pod-template-hash label) onto the Deployment; a paused Deployment is refused,
as kubectl refuses it. Every write carries the resourceVersion it was decided on.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import hashlib
import json
from typing import Any, Literal

import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import Field, model_validator

from tools.base import Risk, ToolError, ToolInput, ToolResult, ToolSpec
from tools.k8s_write.client import K8sWriteClient, wrap
from tools.pod_template import GPU, MIG_PREFIX, template_summary

REVISION = "deployment.kubernetes.io/revision"
# A MIG profile as the NVIDIA device plugin's mixed strategy names its resource: compute sevenths "g",
# memory "gb", optionally "+me" (with a media engine). Anything else is not a GPU slice.
MIG_PROFILE = r"^[1-7]g\.[0-9]{1,3}gb(\+me)?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class Target(ToolInput):
    namespace: str = Field(pattern=DNS_NAME, max_length=63)
    name: str = Field(pattern=DNS_NAME)
    expected_resource_version: str | None = Field(
        default=None, description="Apply only if the object is still at this resourceVersion (else 409).")
    dry_run: bool = Field(default=False, description="Server-side dry run: validate and diff, change nothing.")


class RolloutUndoInput(Target):
    to_revision: int = Field(ge=1, description="The Deployment revision whose pod template to restore.")


class ScaleInput(Target):
    replicas: int = Field(ge=0, le=1000)


class SetTemplateInput(Target):
    container: str = Field(pattern=DNS_NAME)
    image: str | None = Field(default=None, max_length=512)
    args: list[str] | None = Field(default=None, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, description="Pod template labels to set (e.g. model-version).")
    gpus: int | None = Field(default=None, ge=0, le=16, description="nvidia.com/gpu request and limit per replica.")
    mig_profile: str | None = Field(
        default=None, pattern=MIG_PROFILE, description="One MIG slice per replica instead of whole GPUs: the "
        "container asks for `nvidia.com/mig-<profile>: 1` (request and limit) and no `nvidia.com/gpu`.")
    node_selector: dict[str, str] | None = Field(
        default=None, description="Replace the pod's node selector (a move to another GPU class).")
    tolerations: list[dict[str, str]] | None = Field(
        default=None, max_length=16, description="Replace the pod's tolerations (a move to a tainted GPU pool).")
    max_surge: int | None = Field(
        default=None, ge=0, le=100, description="Deployments: the rolling update's maxSurge (pods), sized to the "
        "free GPUs so the surge never waits Pending; maxUnavailable is then 0 (or 1 when no surge fits).")
    change_cause: str = Field(default="", max_length=300)

    @model_validator(mode="after")
    def _one_gpu_kind(self) -> SetTemplateInput:
        if self.gpus is not None and self.mig_profile is not None:
            raise ValueError("a replica gets whole GPUs (gpus) or one MIG slice (mig_profile), not both")
        return self


def _set_gpu_resource(ct: dict[str, Any], name: str, count: int) -> None:
    """Make `name` the container's only GPU resource (request and limit): whole GPUs or one MIG slice."""
    res = ct.setdefault("resources", {})
    for part in ("requests", "limits"):
        current = res.setdefault(part, {})
        for key in [k for k in current if k == GPU or k.startswith(MIG_PREFIX)]:
            del current[key]
        current[name] = str(count)


def changed_template(template: dict[str, Any], p: SetTemplateInput, what: str) -> dict[str, Any]:
    """`template` with `p`'s changes made (a copy): the container's image, args, GPUs; labels; placement."""
    out = copy.deepcopy(template)
    containers = out.setdefault("spec", {}).get("containers") or []
    ct = next((c for c in containers if c.get("name") == p.container), None)
    if ct is None:
        raise ToolError(f"{what} has no container {p.container!r} (has {[c.get('name') for c in containers]})")
    if p.image:
        ct["image"] = p.image
    if p.args is not None:
        ct["args"] = list(p.args)
    if p.gpus is not None:
        _set_gpu_resource(ct, GPU, p.gpus)
    if p.mig_profile is not None:
        _set_gpu_resource(ct, MIG_PREFIX + p.mig_profile, 1)
    if p.labels:
        out.setdefault("metadata", {}).setdefault("labels", {}).update(p.labels)
    if p.node_selector is not None:
        out["spec"]["nodeSelector"] = dict(p.node_selector)
    if p.tolerations is not None:
        out["spec"]["tolerations"] = [dict(t) for t in p.tolerations]
    return out


class PauseInput(Target):
    paused: bool


class PromoteAbortInput(Target):
    promote: bool = Field(description="True: promote a paused Rollout past its pause; False: abort its canary.")


class NodeInput(ToolInput):
    node: str = Field(pattern=DNS_NAME)
    expected_resource_version: str | None = None
    dry_run: bool = False


class DrainInput(NodeInput):
    grace_period_s: int = Field(default=30, ge=0, le=3600)
    evict_namespaces: list[str] = Field(
        default_factory=list, max_length=64,
        description="Namespaces whose pods are evicted; pods elsewhere stay on the cordoned node (none by default).")


class RestartPodInput(Target):
    grace_period_s: int = Field(default=30, ge=0, le=3600,
                                description="Seconds the pod's containers get to stop (SIGTERM before SIGKILL).")


class WriteResult(ToolResult):
    kind: str
    namespace: str | None
    name: str
    operation: str
    dry_run: bool
    resource_version: str = ""
    generation: int = 0
    revision: str | None = None
    diff: str = Field(default="", description="Unified diff of the spec, before → after.")
    spec_hash: str = Field(default="", description="sha256 of the resulting spec (the dry run's, when dry).")
    detail: dict[str, Any] = Field(default_factory=dict)


def _spec_yaml(obj: dict[str, Any]) -> list[str]:
    spec = copy.deepcopy(obj.get("spec", {}))
    return yaml.safe_dump(spec, sort_keys=True).splitlines(keepends=True)


def spec_diff(before: dict[str, Any], after: dict[str, Any], name: str) -> str:
    return "".join(difflib.unified_diff(_spec_yaml(before), _spec_yaml(after), f"{name} (now)", f"{name} (after)"))


def spec_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj.get("spec", {}), sort_keys=True).encode()).hexdigest()


def _result(kind: str, op: str, before: dict[str, Any], after: dict[str, Any], dry: bool,
            detail: dict[str, Any] | None = None) -> WriteResult:
    meta = after.get("metadata", {})
    return WriteResult(kind=kind, namespace=meta.get("namespace"), name=meta.get("name", ""), operation=op,
                       dry_run=dry, resource_version=meta.get("resourceVersion", ""),
                       generation=int(meta.get("generation") or 0),
                       revision=(meta.get("annotations") or {}).get(REVISION),
                       diff=spec_diff(before, after, f"{kind.lower()}/{meta.get('name', '')}"),
                       spec_hash=spec_hash(after), detail=detail or {})


async def _call(fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as e:
        raise wrap(e, what) from e


async def read_deployment(c: K8sWriteClient, namespace: str, name: str) -> dict[str, Any]:
    resp = await _call(c.apps.read_namespaced_deployment, name, namespace, _preload_content=False,
                       _request_timeout=c.timeout, what=f"read deployment {namespace}/{name}")
    return dict(json.loads(resp.data))


def _precondition(body: dict[str, Any], rv: str | None) -> dict[str, Any]:
    if rv:
        body.setdefault("metadata", {})["resourceVersion"] = rv
    return body


async def _patch_deployment(c: K8sWriteClient, p: Target, body: dict[str, Any], what: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    resp = await _call(c.apps.patch_namespaced_deployment, p.name, p.namespace,
                       _precondition(body, p.expected_resource_version), what=what, **kwargs)
    return dict(json.loads(resp.data))


async def rollout_undo(c: K8sWriteClient, p: RolloutUndoInput) -> WriteResult:
    before = await read_deployment(c, p.namespace, p.name)
    if before.get("spec", {}).get("paused"):
        raise ToolError(f"deployment {p.namespace}/{p.name} is paused; resume it before rolling back")
    uid = before["metadata"]["uid"]
    rs_list = await _call(c.apps.list_namespaced_replica_set, p.namespace, _preload_content=False,
                          _request_timeout=c.timeout, what=f"list replicasets in {p.namespace}")
    owned = [rs for rs in json.loads(rs_list.data)["items"]
             if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences", []))]
    chosen = next((rs for rs in owned if (rs["metadata"].get("annotations") or {}).get(REVISION) ==
                   str(p.to_revision)), None)
    if chosen is None:
        have = sorted(int((rs["metadata"].get("annotations") or {}).get(REVISION, 0)) for rs in owned)
        raise ToolError(f"deployment {p.namespace}/{p.name} has no revision {p.to_revision} (revisions kept: {have})")
    template = copy.deepcopy(chosen["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {}).pop("pod-template-hash", None)
    current = (before["metadata"].get("annotations") or {}).get(REVISION)
    if template == before["spec"]["template"]:
        return _result("Deployment", "rollout_undo", before, before, p.dry_run,
                       {"noop": True, "reason": f"already at the template of revision {p.to_revision}"})
    # A JSON patch that replaces the whole template, as kubectl does: a merge patch would keep map keys
    # (labels, annotations) that the old revision did not have.
    ops: list[dict[str, Any]] = []
    if p.expected_resource_version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": p.expected_resource_version})
    ops.append({"op": "replace", "path": "/spec/template", "value": template})
    rs_annotations = chosen["metadata"].get("annotations") or {}
    if cause := rs_annotations.get("kubernetes.io/change-cause"):
        path = "/metadata/annotations/kubernetes.io~1change-cause"
        ops.append({"op": "add", "path": path, "value": cause})
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    resp = await _call(c.apps.patch_namespaced_deployment, p.name, p.namespace, ops,
                       what=f"roll back deployment {p.namespace}/{p.name} to revision {p.to_revision}", **kwargs)
    after = dict(json.loads(resp.data))
    return _result("Deployment", "rollout_undo", before, after, p.dry_run,
                   {"from_revision": current, "to_revision": p.to_revision})


async def scale(c: K8sWriteClient, p: ScaleInput) -> WriteResult:
    before = await read_deployment(c, p.namespace, p.name)
    after = await _patch_deployment(c, p, {"spec": {"replicas": p.replicas}},
                                    f"scale deployment {p.namespace}/{p.name} to {p.replicas}")
    return _result("Deployment", "scale", before, after, p.dry_run,
                   {"from_replicas": before["spec"].get("replicas"), "to_replicas": p.replicas})


async def set_template(c: K8sWriteClient, p: SetTemplateInput) -> WriteResult:
    before = await read_deployment(c, p.namespace, p.name)
    what = f"deployment {p.namespace}/{p.name}"
    template = changed_template(before["spec"]["template"], p, what)
    # A JSON patch replacing the template (the container list is replaced whole either way).
    ops: list[dict[str, Any]] = []
    if p.expected_resource_version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": p.expected_resource_version})
    ops.append({"op": "replace", "path": "/spec/template", "value": template})
    if p.max_surge is not None:
        rolling = {"maxSurge": p.max_surge, "maxUnavailable": 0 if p.max_surge else 1}
        strategy = {"type": "RollingUpdate", "rollingUpdate": rolling}
        ops.append({"op": "add", "path": "/spec/strategy", "value": strategy})
    if p.change_cause:
        if not (before["metadata"].get("annotations")):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        ops.append({"op": "add", "path": "/metadata/annotations/kubernetes.io~1change-cause", "value": p.change_cause})
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    resp = await _call(c.apps.patch_namespaced_deployment, p.name, p.namespace, ops, what=f"update {what}", **kwargs)
    after = dict(json.loads(resp.data))
    return _result("Deployment", "set_template", before, after, p.dry_run,
                   {"previous": template_summary(before["spec"]["template"], p.container)})


ROLLOUTS = ("argoproj.io", "v1alpha1", "rollouts")


async def read_rollout(c: K8sWriteClient, namespace: str, name: str) -> dict[str, Any]:
    group, version, plural = ROLLOUTS
    resp = await _call(c.custom.get_namespaced_custom_object, group, version, namespace, plural, name,
                       _preload_content=False, _request_timeout=c.timeout, what=f"read rollout {namespace}/{name}")
    return dict(json.loads(resp.data))


async def set_rollout_template(c: K8sWriteClient, p: SetTemplateInput) -> WriteResult:
    """Write an Argo Rollout's new pod template; its controller then runs the canary steps and analysis.

    Custom resources take no strategic merge: this is a JSON merge patch computed from the template
    as read (a removed key becomes null), carrying the resourceVersion as its precondition (409 if
    anything wrote the Rollout since).
    """
    before = await read_rollout(c, p.namespace, p.name)
    what = f"rollout {p.namespace}/{p.name}"
    if p.max_surge is not None:
        raise ToolError(f"{what}: the Rollout's own canary strategy sets its surge; max_surge is for Deployments")
    template = changed_template(before["spec"]["template"], p, what)
    meta: dict[str, Any] = {"resourceVersion": p.expected_resource_version or before["metadata"]["resourceVersion"]}
    if p.change_cause:
        meta["annotations"] = {"kubernetes.io/change-cause": p.change_cause}
    body = {"metadata": meta, "spec": {"template": merge_patch(before["spec"]["template"], template)}}
    group, version, plural = ROLLOUTS
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    resp = await _call(c.custom.patch_namespaced_custom_object, group, version, p.namespace, plural, p.name, body,
                       what=f"update {what}", **kwargs)
    after = dict(json.loads(resp.data))
    return _result("Rollout", "set_template", before, after, p.dry_run,
                   {"previous": template_summary(before["spec"]["template"], p.container),
                    "stable_rs": str((before.get("status") or {}).get("stableRS") or "")})


async def rollout_promote_abort(c: K8sWriteClient, p: PromoteAbortInput) -> WriteResult:
    """Promote a paused Argo Rollout or abort its canary, as `kubectl argo rollouts promote|abort` does.

    Both write the Rollout's status subresource (the controller reads `pauseConditions` and `abort`
    there); promote also clears `spec.paused`. A Rollout that is not paused is not promoted (that would
    skip a step of its analysis), and one with no canary running is not aborted.
    """
    before = await read_rollout(c, p.namespace, p.name)
    what = f"rollout {p.namespace}/{p.name}"
    st = before.get("status") or {}
    group, version, plural = ROLLOUTS
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    rv = {"resourceVersion": p.expected_resource_version} if p.expected_resource_version else {}
    if p.promote:
        if not st.get("pauseConditions") and not before["spec"].get("paused"):
            raise ToolError(f"{what} is not paused (phase {st.get('phase')}): nothing to promote")
        body: dict[str, Any] = {"metadata": rv, "status": {"pauseConditions": None}}
    else:
        if st.get("abort") or st.get("currentPodHash") == st.get("stableRS"):
            raise ToolError(f"{what} has no canary to abort (phase {st.get('phase')})")
        body = {"metadata": rv, "status": {"abort": True}}
    resp = await _call(c.custom.patch_namespaced_custom_object_status, group, version, p.namespace, plural, p.name,
                       body, what=f"{'promote' if p.promote else 'abort'} {what}", **kwargs)
    after = dict(json.loads(resp.data))
    if p.promote and before["spec"].get("paused"):
        resp = await _call(c.custom.patch_namespaced_custom_object, group, version, p.namespace, plural, p.name,
                           {"spec": {"paused": False}}, what=f"unpause {what}", **kwargs)
        after = dict(json.loads(resp.data))
    return _result("Rollout", "promote" if p.promote else "abort", before, after, p.dry_run,
                   {"pause_conditions": [c.get("reason") for c in st.get("pauseConditions") or []],
                    "step": st.get("currentStepIndex"), "stable_rs": str(st.get("stableRS") or "")})


def merge_patch(before: Any, after: Any) -> Any:
    """The RFC 7386 merge patch that turns `before` into `after` (a key `after` lacks becomes null)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    out: dict[str, Any] = {k: None for k in before if k not in after}
    for k, v in after.items():
        if k not in before:
            out[k] = v
        elif before[k] != v:
            out[k] = merge_patch(before[k], v)
    return out


async def pause(c: K8sWriteClient, p: PauseInput) -> WriteResult:
    before = await read_deployment(c, p.namespace, p.name)
    after = await _patch_deployment(c, p, {"spec": {"paused": p.paused}},
                                    f"{'pause' if p.paused else 'resume'} deployment {p.namespace}/{p.name}")
    return _result("Deployment", "pause" if p.paused else "resume", before, after, p.dry_run)


async def cordon(c: K8sWriteClient, p: NodeInput) -> WriteResult:
    resp = await _call(c.core.read_node, p.node, _preload_content=False, _request_timeout=c.timeout,
                       what=f"read node {p.node}")
    before = dict(json.loads(resp.data))
    kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": c.timeout}
    if p.dry_run:
        kwargs["dry_run"] = "All"
    resp = await _call(c.core.patch_node, p.node, _precondition({"spec": {"unschedulable": True}},
                                                                p.expected_resource_version),
                       what=f"cordon node {p.node}", **kwargs)
    return _result("Node", "cordon", before, dict(json.loads(resp.data)), p.dry_run)


async def drain(c: K8sWriteClient, p: DrainInput) -> WriteResult:
    res = await cordon(c, NodeInput(node=p.node, expected_resource_version=p.expected_resource_version,
                                    dry_run=p.dry_run))
    pods = await _call(c.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={p.node}",
                       _preload_content=False, _request_timeout=c.timeout, what=f"list pods on {p.node}")
    evicted: list[str] = []
    skipped: list[str] = []
    left: list[dict[str, str]] = []
    for pod in json.loads(pods.data)["items"]:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        owners = pod["metadata"].get("ownerReferences", [])
        if any(o.get("kind") == "DaemonSet" for o in owners):
            skipped.append(name)
            continue
        if ns not in p.evict_namespaces:
            # Never evict what the policy did not name (kube-system's DNS, monitoring): the node stays
            # cordoned and the result says what is still running on it.
            left.append({"pod": f"{ns}/{name}", "reason": f"namespace {ns} is not one the drain may evict from "
                                                          f"({', '.join(p.evict_namespaces) or 'none'})"})
            continue
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns},
                "deleteOptions": {"gracePeriodSeconds": p.grace_period_s, **({"dryRun": ["All"]} if p.dry_run else {})}}
        await _call(c.core.create_namespaced_pod_eviction, name, ns, body, what=f"evict {ns}/{name}")
        evicted.append(f"{ns}/{name}")
    return res.model_copy(update={"operation": "drain", "detail": {"evicted": evicted, "skipped_daemonsets": skipped,
                                                                   "left_in_place": left}})

async def restart_pod(c: K8sWriteClient, p: RestartPodInput) -> WriteResult:
    """Delete one pod so that its ReplicaSet starts a fresh one, as `kubectl delete pod` does.

    Only a pod whose controller is a ReplicaSet is deleted: anything else (a bare pod, a Job's, a
    StatefulSet's with its own identity) would not come back the same way, and is refused. The delete
    carries the pod's uid and the resourceVersion it was decided on as preconditions, so a replacement
    that took the same name, or a pod that changed since, is never the one deleted.
    """
    what = f"pod {p.namespace}/{p.name}"
    resp = await _call(c.core.read_namespaced_pod, p.name, p.namespace, _preload_content=False,
                       _request_timeout=c.timeout, what=f"read {what}")
    before = dict(json.loads(resp.data))
    meta = before["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None or owner.get("kind") != "ReplicaSet":
        kind = owner.get("kind") if owner else "no controller"
        raise ToolError(f"{what} is not owned by a ReplicaSet ({kind}): nothing would replace it; not deleting it")
    if meta.get("deletionTimestamp"):
        raise ToolError(f"{what} is already being deleted")
    preconditions: dict[str, Any] = {"uid": meta["uid"]}
    if p.expected_resource_version:
        preconditions["resourceVersion"] = p.expected_resource_version
    # The dry run goes in the body: the API server reads a DELETE's options from its body when there is one and
    # then ignores the query string, so `?dryRun=All` beside a body deletes the pod for real.
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": p.grace_period_s,
                            "preconditions": preconditions, **({"dryRun": ["All"]} if p.dry_run else {})}
    resp = await _call(c.core.delete_namespaced_pod, p.name, p.namespace, body=body, _preload_content=False,
                       _request_timeout=c.timeout, what=f"delete {what}")
    after = dict(json.loads(resp.data))
    rs = str(owner.get("name", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
    deployment = rs[: -len(template_hash) - 1] if template_hash and rs.endswith("-" + template_hash) else ""
    out = _result("Pod", "restart", before, after, p.dry_run,
                  {"replica_set": rs, "deployment": deployment, "uid": meta["uid"],
                   "node": before["spec"].get("nodeName"), "grace_period_s": p.grace_period_s})
    # What the delete leaves is no spec to compare: the pod is gone (a dry run: would be). Reconciliation
    # after a crash checks that no pod with this uid remains.
    return out.model_copy(update={"diff": f"delete {what} (uid {meta['uid']}); ReplicaSet {rs} replaces it\n",
                                  "spec_hash": ""})

Op = Literal["rollout_undo", "scale", "set_template", "pause", "cordon", "drain", "restart_pod"]

TOOLS: list[ToolSpec[Any, Any]] = [
    ToolSpec("k8s_rollout_undo", "kubernetes/write", Risk.MUTATE,
             "Roll a Deployment back to a revision (kubectl rollout undo --to-revision semantics).",
             RolloutUndoInput, WriteResult, rollout_undo, "k8s_write"),
    ToolSpec("k8s_scale_deployment", "kubernetes/write", Risk.MUTATE, "Set a Deployment's replicas.",
             ScaleInput, WriteResult, scale, "k8s_write"),
    ToolSpec("k8s_set_pod_template", "kubernetes/write", Risk.MUTATE,
             "Change a Deployment container's image, args, GPU count, template labels or placement (a rolling "
             "update, its maxSurge bounded by the free GPUs).",
             SetTemplateInput, WriteResult, set_template, "k8s_write"),
    ToolSpec("k8s_set_rollout_template", "kubernetes/write", Risk.MUTATE,
             "Write an Argo Rollout's new pod template (its controller runs the canary and analysis).",
             SetTemplateInput, WriteResult, set_rollout_template, "k8s_write"),
    ToolSpec("k8s_rollout_promote_abort", "kubernetes/write", Risk.MUTATE,
             "Promote a paused Argo Rollout past its pause, or abort its canary (stable takes all traffic).",
             PromoteAbortInput, WriteResult, rollout_promote_abort, "k8s_write"),
    ToolSpec("k8s_pause_rollout", "kubernetes/write", Risk.MUTATE, "Pause or resume a Deployment's rollout.",
             PauseInput, WriteResult, pause, "k8s_write"),
    ToolSpec("k8s_cordon_node", "kubernetes/write", Risk.MUTATE, "Mark a node unschedulable.",
             NodeInput, WriteResult, cordon, "k8s_write"),
    ToolSpec("k8s_restart_pod", "kubernetes/write", Risk.MUTATE,
             "Delete one pod owned by a ReplicaSet so that it starts a fresh one (a hung replica's restart).",
             RestartPodInput, WriteResult, restart_pod, "k8s_write"),
    ToolSpec("k8s_drain_node", "kubernetes/write", Risk.DESTRUCTIVE,
             "Cordon a node and evict its pods in the given namespaces (never DaemonSets).",
             DrainInput, WriteResult, drain, "k8s_write"),
]
