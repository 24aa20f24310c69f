"""GitOps awareness: a workload owned by Argo CD or Flux is changed in Git, never by a direct write.

Argo CD (self-heal) and Flux reconcile a live object back to what their source says, so a patch made
straight to the cluster is reverted within seconds and the change request would report a success that
does not last. When an object carries their tracking labels or annotations, the deployment is proposed
as a manifest patch (a unified diff the user applies to the repository) instead.

Pure: works on the object's labels, annotations and manifests; must not read the cluster or Git.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

# Argo CD: annotation tracking (default since 3.0) and label tracking (the older default).
ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"
ARGOCD_INSTANCE_LABEL = "app.kubernetes.io/instance"
ARGOCD_LEGACY_INSTANCE = "argocd.argoproj.io/instance"
# Flux: kustomize-controller and helm-controller label what they apply.
FLUX_KUSTOMIZE = ("kustomize.toolkit.fluxcd.io/name", "kustomize.toolkit.fluxcd.io/namespace")
FLUX_HELM = ("helm.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/namespace")
MANAGED_BY = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class GitOpsOwner:
    """Who reconciles the object, how sure we are, and the marker that says so."""

    tool: Literal["argocd", "flux"]
    source: str  # the Argo CD Application or the Flux Kustomization / HelmRelease, as namespace/name
    evidence: str  # the label or annotation that identified it
    certain: bool  # False for Argo CD label tracking: Helm sets the same label without Argo CD


def gitops_owner(labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None) -> GitOpsOwner | None:
    """Return the GitOps controller that owns an object from its metadata, or None."""
    labels, annotations = labels or {}, annotations or {}
    tracking = annotations.get(ARGOCD_TRACKING_ID)
    if tracking:
        app = tracking.split(":", 1)[0]  # "<app>:<group>/<kind>:<namespace>/<name>"
        return GitOpsOwner("argocd", app, f"annotation {ARGOCD_TRACKING_ID}={tracking}", certain=True)
    for name_key, ns_key in (FLUX_KUSTOMIZE, FLUX_HELM):
        if labels.get(name_key):
            source = f"{labels.get(ns_key, '')}/{labels[name_key]}".lstrip("/")
            return GitOpsOwner("flux", source, f"label {name_key}={labels[name_key]}", certain=True)
    legacy = annotations.get(ARGOCD_LEGACY_INSTANCE) or labels.get(ARGOCD_LEGACY_INSTANCE)
    if legacy:
        return GitOpsOwner("argocd", legacy, f"{ARGOCD_LEGACY_INSTANCE}={legacy}", certain=True)
    instance = labels.get(ARGOCD_INSTANCE_LABEL)
    if instance and labels.get(MANAGED_BY, "").lower() != "helm":
        return GitOpsOwner("argocd", instance, f"label {ARGOCD_INSTANCE_LABEL}={instance} (label tracking)",
                           certain=False)
    return None


@dataclass(frozen=True)
class ManifestPatch:
    """A change proposed for the user to apply in their repository, never written to the cluster."""

    owner: GitOpsOwner
    path_hint: str
    diff: str
    explanation: str


def manifest_patch(owner: GitOpsOwner, before: Mapping[str, Any], after: Mapping[str, Any]) -> ManifestPatch:
    """The change from `before` to `after` as a unified diff of the manifest, with why it is not applied directly."""
    meta = before.get("metadata") or {}
    kind, name, ns = before.get("kind", "Object"), meta.get("name", "?"), meta.get("namespace", "")
    path = f"{ns + '/' if ns else ''}{kind.lower()}-{name}.yaml"
    a = _clean(before)
    b = _clean(after)
    diff = "".join(difflib.unified_diff(
        yaml.safe_dump(a, sort_keys=True).splitlines(keepends=True),
        yaml.safe_dump(b, sort_keys=True).splitlines(keepends=True),
        fromfile=f"a/{path}", tofile=f"b/{path}"))
    tool = "Argo CD" if owner.tool == "argocd" else "Flux"
    explanation = (
        f"{kind} {ns}/{name} is reconciled by {tool} ({owner.source}; {owner.evidence}). A direct write would be "
        f"reverted on its next sync, so nothing is written to the cluster: apply this patch to the manifest in "
        f"the repository {tool} syncs from and let {tool} roll it out."
        + ("" if owner.certain else " (Identified by label tracking only: if no Argo CD Application owns it, "
           "say so and the change can be applied directly.)"))
    return ManifestPatch(owner=owner, path_hint=path, diff=diff, explanation=explanation)


def _clean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as it sits in Git: no status and none of the fields the API server fills in."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                         "selfLink")}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in ("kubectl.kubernetes.io/last-applied-configuration",
                                "deployment.kubernetes.io/revision", "rollout.argoproj.io/revision")}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


__all__ = ["GitOpsOwner", "ManifestPatch", "gitops_owner", "manifest_patch"]
