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
from typing import Any

import yaml

from tools.k8s_read.ownership import (  # detection lives with the read tools, so triage can use it too
    GitOpsOwner,
    gitops_owner,
)


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
