"""From a recommendation to change requests, and the monthly cost a change would add or save.

`change_specs` turns a recommendation into typed `ChangeSpec`s the guarded executor understands
(`scale`); the executor's `propose` then does the dry run, policy and approvals. A different GPU type
or GPU count is a *move*: a `deploy` of the same version with the new class's node selector and GPU
request (`move_spec`). The report knows no cluster state, so a move's spec says only where to go;
`move_request` turns it into the `DeployRequest` that `plan_deployment` reads the target and its
pool for, runs the capacity preflight on, and proposes as a canary (a Rollout) or a capacity-bounded
rolling update (a Deployment). A MIG profile is a move too: the same version asking for one
`nvidia.com/mig-<profile>` slice per replica instead of whole GPUs, on the nodes of the product's
instance type that advertise that profile (the capacity preflight counts their free slices).

`predicted_cost_delta` is what the executor records as `ChangeRequest.cost_delta_per_month`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.change.deploy import DeployRequest
from agent.change.models import ChangeSpec
from agent.change.preflight import mig_share, pod_shape
from agent.models import ActionKind, ObjectRef
from agent.rightsize.engine import Recommendation
from tools.rightsize.catalog import HOURS_PER_MONTH, PriceCatalog

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MOVE = "gpu_class_move"  # a DEPLOY spec's params key: a move from a report, planned when it is clicked


@dataclass(frozen=True)
class PlannedChanges:
    specs: list[ChangeSpec]
    note: str  # what the specs do not cover, if anything


def change_specs(rec: Recommendation, cluster: str, *, max_capacity_drop: float | None = None) -> PlannedChanges:
    """The change requests that carry out `rec` (possibly none, with the reason in `note`).

    A new GPU type or count is one move (`move_spec`), whose replica change waits for a later report.
    The instance type is recorded in the params as the price the change was sized at; the executor's
    tools ignore it. With `max_capacity_drop` (the policy's limit on the
    share of capacity one scale may remove), a larger scale-down is proposed as the first step the
    policy allows, and the note says so: a change the policy would deny helps nobody.
    """
    if not rec.actionable or rec.current is None or rec.recommended is None:
        return PlannedChanges([], f"{rec.namespace}/{rec.name}: nothing to change ({rec.reason})")
    cur, new = rec.current, rec.recommended
    target = ObjectRef(kind="Deployment", name=rec.name, namespace=rec.namespace)
    hint = {"instance_type": cur.instance_type, "recommendation": rec.id} if cur.instance_type else {
        "recommendation": rec.id}
    specs: list[ChangeSpec] = []
    note = ""
    replicas = new.replicas
    if new.mig_profile != cur.mig_profile or new.gpu_product != cur.gpu_product or new.gpus != cur.gpus:
        move = move_spec(rec, cluster)
        where = (f"one MIG {new.mig_profile} slice of {new.gpu_product} per replica" if new.mig_profile
                 else f"{new.gpus}× {new.gpu_product}")
        note = (f"moves to {where} ({new.instance_type}) as a deployment of the same version "
                "(a canary on the new class for a Rollout); the capacity preflight runs when it is proposed")
        if new.replicas != cur.replicas:
            note += (f"; then {cur.replicas} → {new.replicas} replicas in a later change, once the new class has "
                     "served (the next report sizes it from what it observed)")
        return PlannedChanges([move], note)
    if max_capacity_drop is not None and replicas < cur.replicas:
        step = max(replicas, math.ceil(cur.replicas * (1 - max_capacity_drop) - 1e-9))
        if step > replicas:
            note = (note + "; " if note else "") + (
                f"policy allows removing at most {max_capacity_drop:.0%} of capacity per change: proposing "
                f"{cur.replicas} → {step} replicas now, the rest ({step} → {replicas}) in a later change")
            replicas = step
    if replicas != cur.replicas:
        specs.append(ChangeSpec(action=ActionKind.SCALE, cluster=cluster, target=target,
                                params={"replicas": replicas, **hint}))
    if not specs and not note:
        note = "the recommendation changes nothing an executor action can set"
    return PlannedChanges(specs, note)


def move_spec(rec: Recommendation, cluster: str) -> ChangeSpec:
    """A GPU-class move as the report records it: where to go (node selector, GPUs per replica), not how.

    The node selector is the target class's instance type (`node.kubernetes.io/instance-type`, which
    every managed node group sets); the version stays. `move_request` makes it a `DeployRequest`.
    """
    assert rec.current is not None and rec.recommended is not None
    new = rec.recommended
    if not new.instance_type:
        raise ValueError(f"{rec.id}: the recommended shape has no instance type to select nodes by")
    params: dict[str, Any] = {MOVE: True, "node_selector": {INSTANCE_TYPE_LABEL: new.instance_type},
                              "instance_type": new.instance_type, "recommendation": rec.id}
    if new.mig_profile:
        params["mig_profile"] = new.mig_profile  # one slice per replica; its nodes are the ones advertising it
    elif new.gpus != rec.current.gpus or rec.current.mig_profile:
        params["gpus"] = new.gpus
    return ChangeSpec(action=ActionKind.DEPLOY, cluster=cluster,
                      target=ObjectRef(kind="Deployment", name=rec.name, namespace=rec.namespace), params=params)


def is_move(spec: ChangeSpec) -> bool:
    return spec.action == ActionKind.DEPLOY and spec.params.get(MOVE) is True


def move_request(spec: ChangeSpec) -> DeployRequest:
    """The deployment a recorded move asks for: same version, the new node selector and GPUs per replica.

    Raises ValueError for a spec that is not a move (a garbled or forged record).
    """
    if not is_move(spec) or spec.target.namespace is None:
        raise ValueError(f"not a GPU-class move: {spec.action.value} {spec.target}")
    selector = spec.params.get("node_selector")
    if not isinstance(selector, dict) or not selector:
        raise ValueError("a GPU-class move needs a node selector")
    gpus, mig = spec.params.get("gpus"), spec.params.get("mig_profile")
    return DeployRequest(namespace=spec.target.namespace, name=spec.target.name,
                         node_selector={str(k): str(v) for k, v in selector.items()},
                         gpus=int(gpus) if gpus is not None else None, mig_profile=str(mig) if mig else None)


def reason_for(rec: Recommendation, spec: ChangeSpec) -> str:
    return (f"right-sizing {rec.id}: {rec.reason}; saves ${rec.monthly_savings:,.0f}/month; SLO risk "
            f"{rec.slo_risk.value} ({rec.slo_risk_reason}); confidence {rec.confidence.value}")


def button_value(rec: Recommendation, spec: ChangeSpec) -> str:
    """What a Slack "Create change request" button carries (Slack allows 2,000 characters)."""
    value = json.dumps({"recommendation": rec.id, "spec": spec.model_dump(mode="json"),
                        "savings_per_month": rec.monthly_savings}, separators=(",", ":"), sort_keys=True)
    if len(value) > 2000:
        raise ValueError(f"button value for {rec.id} is {len(value)} characters; Slack allows 2,000")
    return value


def spec_from_button(value: str) -> tuple[str, ChangeSpec]:
    """Read a button value back: (recommendation id, spec). Raises ValueError on anything malformed."""
    try:
        doc = json.loads(value)
        return str(doc["recommendation"]), ChangeSpec.model_validate(doc["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a right-sizing button value: {e}") from e


def _template_units(obj: Mapping[str, Any], product: str | None, catalog: PriceCatalog) -> float:
    """GPUs one replica of `obj` holds: whole GPUs, or a MIG slice's share of one (3g.40gb → 3/7)."""
    shape = pod_shape(obj.get("spec", {}).get("template", {}).get("spec", {}))
    if shape.mig_profile:
        return sum(n * mig_share(catalog, product, p) for p, n in shape.mig.items())
    return float(shape.gpus)


def _price_per_gpu_hour(spec: ChangeSpec, obj: Mapping[str, Any],
                        catalog: PriceCatalog) -> tuple[float, str | None] | None:
    """The per-GPU-hour price of the nodes `obj` runs on, and their GPU product."""
    selector = obj.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") or {}
    it_name = selector.get(INSTANCE_TYPE_LABEL) or spec.params.get("instance_type")
    if it_name and it_name in catalog.instance_types:
        it = catalog.instance_types[it_name]
        return (it.price_per_gpu_hour, it.gpu_product) if it.gpus else None
    product = selector.get(GPU_PRODUCT_LABEL)
    price = catalog.gpu_price(product) if product else None
    return (price, product) if price is not None else None


def predicted_cost_delta(spec: ChangeSpec, live_object: Mapping[str, Any] | None,
                         catalog: PriceCatalog) -> float | None:
    """USD per month the change adds (positive) or saves (negative); None when it cannot be priced.

    Priced from the Deployment as it is (replicas, GPUs per replica) and the change's new figures, at
    the per-GPU price of the node's instance type: the pod template's `node.kubernetes.io/instance-type`
    or `nvidia.com/gpu.product` node selector, else the `instance_type` the change was sized at. A MIG
    slice counts as its share of a GPU (`mig_share`).
    Actions that do not change the allocation (rollback, deploy, cordon...) return None.
    """
    if live_object is None or spec.target.kind not in ("Deployment", "Rollout"):
        return None
    if spec.action not in (ActionKind.SCALE, ActionKind.SET_GPU_RESOURCES, ActionKind.DEPLOY):
        return None
    found = _price_per_gpu_hour(spec, live_object, catalog)
    if found is None:
        return None
    price, product = found
    new_price, new_product = price, product
    if spec.action == ActionKind.DEPLOY and "node_selector" in spec.params:
        # A GPU-class move: the new class's price, from its selector or the instance type the preflight found.
        to = (spec.params.get("node_selector") or {}).get(INSTANCE_TYPE_LABEL) or spec.params.get("new_instance_type")
        it = catalog.instance_types.get(str(to)) if to else None
        if it is None or not it.gpus:
            return None
        new_price, new_product = it.price_per_gpu_hour, it.gpu_product
    replicas = int(live_object.get("spec", {}).get("replicas") or 0)
    try:
        gpus = _template_units(live_object, product, catalog)
        new_replicas, new_gpus = replicas, gpus
        if spec.action == ActionKind.SCALE:
            new_replicas = int(spec.params["replicas"])
        elif spec.params.get("mig_profile"):
            new_gpus = mig_share(catalog, new_product, str(spec.params["mig_profile"]))
        elif "gpus" in spec.params and spec.params["gpus"] is not None:
            new_gpus = float(int(spec.params["gpus"]))
    except (KeyError, TypeError, ValueError):
        return None
    return round((new_replicas * new_gpus * new_price - replicas * gpus * price) * HOURS_PER_MONTH, 2)
