"""Who reconciles a Kubernetes object: Argo CD or Flux, read from its labels and annotations.

A workload that a GitOps controller owns is changed in Git: a direct write is reverted on the next sync.
Triage needs to know it to propose a manifest patch instead of a rollback; the change path needs it to
refuse the direct write. Pure: works on metadata only, reads neither the cluster nor Git.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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
