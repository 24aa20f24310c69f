"""A pod template's serving shape, read the same way by the write tools (to put it back) and the agent's
rollout watch (to tell its own template from a later one). Pure: no API calls, no write credentials."""

from __future__ import annotations

from typing import Any

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"


def template_summary(template: dict[str, Any], container: str) -> dict[str, Any]:
    """What a template change replaces, enough to put it back: the inverse of a deployment."""
    containers = template.get("spec", {}).get("containers") or []
    ct: dict[str, Any] = next((c for c in containers if c.get("name") == container), {})
    limits = (ct.get("resources") or {}).get("limits") or {}
    gpus = limits.get(GPU)
    mig = next((k[len(MIG_PREFIX):] for k in limits if k.startswith(MIG_PREFIX)), None)
    return {"container": container, "image": ct.get("image"), "args": ct.get("args"),
            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
            "gpus": int(gpus) if gpus is not None else None, "mig_profile": mig,
            "node_selector": dict(template.get("spec", {}).get("nodeSelector") or {}),
            "tolerations": list(template.get("spec", {}).get("tolerations") or [])}
