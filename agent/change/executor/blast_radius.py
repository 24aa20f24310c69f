"""Blast radius: how much serving capacity a change can take away, computed from the live object alone.

Pure arithmetic on the object the executor read (no API calls, no policy): policy compares the result
with its limits, the proposal shows it to approvers.
"""

from __future__ import annotations

from typing import Any

from agent.change.models import BlastRadius, ChangeSpec
from agent.models import ActionKind

GPU = "nvidia.com/gpu"


def blast_radius(spec: ChangeSpec, obj: dict[str, Any] | None) -> BlastRadius:
    """What the change can take away: GPUs and replicas touched, and the fraction of serving capacity lost."""
    if obj is None:
        return BlastRadius(gpus=0, replicas=0, capacity_drop=0.0)
    if spec.target.kind == "Node":
        gpus = int((obj.get("status", {}).get("capacity") or {}).get(GPU, 0))
        return BlastRadius(gpus=gpus, replicas=0, capacity_drop=0.0)
    replicas = int(obj["spec"].get("replicas") or 0)
    ct = obj["spec"]["template"]["spec"]["containers"]
    per = sum(int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0)) for c in ct)
    model = (obj["spec"]["template"]["metadata"].get("labels") or {}).get("model", "")
    if spec.action == ActionKind.SCALE:
        new = int(spec.params.get("replicas", replicas))
        # Only healthy replicas count: the controller removes unavailable ones first, so scaling away a
        # replica that is already failing takes no serving capacity (ticket-105).
        healthy = min(replicas, int((obj.get("status") or {}).get("availableReplicas") or 0))
        drop = max(0.0, (healthy - new) / replicas) if replicas else 0.0
        return BlastRadius(gpus=abs(new - replicas) * per, replicas=abs(new - replicas),
                           capacity_drop=round(min(1.0, drop), 3), models=[model] if model else [])
    # Serving capacity the rollout can take away: it may take down maxUnavailable replicas, but the
    # controller removes the ones already unavailable (crash-looping, say) first.
    down_now = max(0, replicas - int((obj.get("status") or {}).get("availableReplicas") or 0))
    at_once = max_unavailable(obj["spec"].get("strategy") or {}, replicas)
    drop = min(1.0, max(0, at_once - down_now) / replicas) if replicas else 0.0
    return BlastRadius(gpus=replicas * per, replicas=replicas, capacity_drop=round(drop, 3),
                       models=[model] if model else [])


def replicas_delta(spec: ChangeSpec, obj: dict[str, Any] | None) -> int:
    """Replicas the change adds (negative: removes); zero for anything but a scale."""
    if spec.action != ActionKind.SCALE or obj is None:
        return 0
    return int(spec.params.get("replicas", 0)) - int(obj["spec"].get("replicas") or 0)


def max_unavailable(strategy: dict[str, Any], replicas: int) -> int:
    """Replicas a rollout may take down at once, as the Deployment controller computes it: a percentage of
    maxUnavailable rounds down, one of maxSurge rounds up (defaults 25 % each); Recreate takes all."""
    if strategy.get("type") == "Recreate":
        return replicas
    ru = strategy.get("rollingUpdate") or {}

    def resolve(v: Any, round_up: bool) -> int:
        if isinstance(v, str) and v.endswith("%"):
            exact = replicas * int(v[:-1]) / 100
            return int(-(-exact // 1)) if round_up else int(exact)
        return int(v)

    unavailable = resolve(ru.get("maxUnavailable", "25%"), round_up=False)
    surge = resolve(ru.get("maxSurge", "25%"), round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1  # the API forbids both zero; the controller then uses one
    return min(unavailable, replicas)
