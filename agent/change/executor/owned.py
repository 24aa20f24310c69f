"""GitOps-owned targets: the executor's refusal to write what Argo CD or Flux would revert.

Pure: from the live object and the change, the manifest patch the user applies in Git instead, or
None when nothing reconciles the object. Used at proposal (the change request carries the patch) and
again at execution (a target that became GitOps-owned since is not written either).
"""

from __future__ import annotations

import copy
from typing import Any

from agent.change.gitops import ManifestPatch, gitops_owner, manifest_patch
from agent.change.models import ChangeSpec
from agent.models import ActionKind
from tools.k8s_write.ops import SetTemplateInput, changed_template

TEMPLATE_ACTIONS = (ActionKind.DEPLOY, ActionKind.SET_GPU_RESOURCES)
RULE = "gitops-owned"


def gitops_patch(spec: ChangeSpec, obj: dict[str, Any] | None) -> ManifestPatch | None:
    """The manifest patch for a template change of a GitOps-owned object; None if it is not owned."""
    if obj is None or spec.action not in TEMPLATE_ACTIONS:
        return None
    meta = obj.get("metadata") or {}
    owner = gitops_owner(meta.get("labels"), meta.get("annotations"))
    if owner is None:
        return None
    keys = ("container", "image", "args", "labels", "gpus", "node_selector", "tolerations")
    p = SetTemplateInput(namespace=spec.target.namespace or "", name=spec.target.name,
                         **{k: spec.params[k] for k in keys if k in spec.params})
    after = copy.deepcopy(obj)
    after["spec"]["template"] = changed_template(obj["spec"]["template"], p, str(spec.target))
    return manifest_patch(owner, obj, after)
