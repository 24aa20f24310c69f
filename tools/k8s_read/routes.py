"""Gateway API HTTPRoutes reduced: which backends share a route's traffic, by what weight, and what changed.

A route's weights decide how much of its traffic each backend gets; a mistaken edit moves load from one
model to another without touching any Deployment. What the API keeps about a change, and what this reads:
- `metadata.generation`: bumped by every change of the spec (1 = never changed since created);
- `metadata.managedFields`: per field manager (kubectl-edit, kubectl-client-side-apply, argocd-controller, …),
  the time of its last write and the fields it owns, so the newest write that owns `spec.rules` says when
  the weights last changed and with which tool;
- the `kubectl.kubernetes.io/last-applied-configuration` annotation that `kubectl apply` (and Argo CD's
  client-side sync) writes: the weights as last applied from source; an edit or patch after it leaves it as
  it was, so live weights that differ from it are a change nobody applied from source.
Names and managers are untrusted text (anyone who edits the route writes them); the annotation is parsed
only for backend names and integer weights, never shown.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import HIDDEN_ANNOTATIONS, Out, clip, parse_time

ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
LAST_APPLIED = HIDDEN_ANNOTATIONS[0]


class RouteBackend(Out):
    name: UntrustedStr = Field(description="The backend Service (in the sandbox and usually: the workload's name).")
    namespace: str
    kind: str = "Service"
    port: int | None = None
    weight: int = Field(description="Live weight, summed over the route's rules.")
    share: float = Field(description="Live share of the route's traffic, 0..1 (weight over the route's total).")
    applied_weight: int | None = Field(default=None, description="Weight as last applied from source, if known.")
    applied_share: float | None = Field(default=None, description="Share as last applied from source, if known.")


class RouteWrite(Out):
    """The newest write of the route's spec, from its managedFields."""

    manager: UntrustedStr
    operation: str
    at: dt.datetime
    owns_backends: bool = Field(description="The write owns spec.rules: it set the backends and their weights.")


class RouteInfo(Out):
    namespace: str
    name: UntrustedStr
    hostnames: list[UntrustedStr] = Field(default_factory=list)
    parents: list[UntrustedStr] = Field(default_factory=list, description="Gateways it attaches to (ns/name).")
    generation: int = Field(description="Spec changes since creation + 1.")
    created: dt.datetime | None = None
    backends: list[RouteBackend]
    last_write: RouteWrite | None = Field(default=None, description="The newest write that owns spec fields.")
    changed_ago_s: float | None = Field(default=None, description="Seconds since that write (None: never "
                                        "changed since created: generation 1).")
    applied_known: bool = Field(description="The last-applied annotation was readable.")
    differs_from_applied: bool = Field(description="Live weights are not the ones last applied from source.")


def _weights(spec: Mapping[str, Any], ns: str) -> dict[tuple[str, str, str], tuple[int, int | None]]:
    """(kind, namespace, name) → (weight summed over rules, port) for every backendRef; Gateway API defaults."""
    out: dict[tuple[str, str, str], tuple[int, int | None]] = {}
    rules = spec.get("rules") if isinstance(spec, Mapping) else None
    for rule in rules if isinstance(rules, list) else []:
        refs = rule.get("backendRefs") if isinstance(rule, Mapping) else None
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
                continue
            weight = ref.get("weight", 1)
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                continue
            key = (str(ref.get("kind") or "Service"), str(ref.get("namespace") or ns), ref["name"])
            port = ref.get("port") if isinstance(ref.get("port"), int) else None
            before = out.get(key, (0, port))
            out[key] = (before[0] + weight, before[1])
    return out


def _applied(annotations: Mapping[str, Any], ns: str) -> dict[tuple[str, str, str], tuple[int, int | None]] | None:
    raw = annotations.get(LAST_APPLIED)
    if not isinstance(raw, str) or len(raw) > 262144:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return _weights(spec, ns) if isinstance(spec, dict) else None


def _last_write(managed: Any, limit: int) -> RouteWrite | None:
    best: RouteWrite | None = None
    for entry in managed if isinstance(managed, list) else []:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue  # status writes (a gateway controller's) change no weight
        fields = entry.get("fieldsV1") or {}
        spec = fields.get("f:spec") if isinstance(fields, Mapping) else None
        at = parse_time(entry.get("time"))
        if not isinstance(spec, Mapping) or at is None:
            continue
        write = RouteWrite(manager=clip(entry.get("manager", ""), limit), operation=str(entry.get("operation", "")),
                           at=at, owns_backends="f:rules" in spec)
        if best is None or write.at > best.at or (write.at == best.at and write.owns_backends):
            best = write
    return best


def reduce_route(obj: Mapping[str, Any], *, now: dt.datetime, limit: int) -> RouteInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ns = str(meta.get("namespace", ""))
    live = _weights(spec, ns)
    applied = _applied(meta.get("annotations") or {}, ns)
    total = sum(w for w, _ in live.values())
    applied_total = sum(w for w, _ in applied.values()) if applied else 0
    backends = []
    for (kind, bns, name), (weight, port) in live.items():
        before = applied.get((kind, bns, name), (0, None))[0] if applied is not None else None
        backends.append(RouteBackend(
            name=clip(name, limit), namespace=bns, kind=kind, port=port, weight=weight,
            share=round(weight / total, 4) if total else 0.0, applied_weight=before,
            applied_share=(round(before / applied_total, 4) if applied_total else 0.0) if before is not None else None))
    generation = int(meta.get("generation") or 1)
    write = _last_write(meta.get("managedFields"), limit) if generation > 1 else None
    parents = [f"{p.get('namespace') or ns}/{p.get('name', '')}" for p in spec.get("parentRefs") or []
               if isinstance(p, Mapping)]
    live_shares = {(b.kind, b.namespace, str(b.name)): b.share for b in backends}
    applied_shares = ({k: (w / applied_total if applied_total else 0.0) for k, (w, _) in applied.items()}
                      if applied is not None else {})
    differs = applied is not None and any(
        abs(live_shares.get(k, 0.0) - applied_shares.get(k, 0.0)) > 1e-3 for k in {*live_shares, *applied_shares})
    return RouteInfo(
        namespace=ns, name=clip(meta.get("name", ""), limit),
        hostnames=[clip(h, limit) for h in spec.get("hostnames") or [] if isinstance(h, str)][:16],
        parents=[clip(p, limit) for p in parents][:8], generation=generation,
        created=parse_time(meta.get("creationTimestamp")), backends=backends, last_write=write,
        changed_ago_s=max(0.0, (now - write.at).total_seconds()) if write is not None else None,
        applied_known=applied is not None, differs_from_applied=differs,
    )
