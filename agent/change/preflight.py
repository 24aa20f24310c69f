"""Deployment preflight: will the new version fit, is there room for it, what will it cost, has it soaked.

A deployment is refused before it becomes a change request when a check fails, and the refusal shows
the numbers. Every check is a pure function over plain data the caller has already read (the price
catalog, the model shapes, nodes and pods, a Prometheus series), so each is unit-tested table-style
and the same arithmetic appears in the change request that a human approves.

This module must not read the cluster or Prometheus, and must not decide policy: it only reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.prometheus import promql as q
from tools.rightsize.catalog import PriceCatalog
from tools.serving_knowledge.model_shapes import GIB, PRECISION_BYTES, ModelShape

GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"  # the device plugin's mixed strategy: one resource per MIG profile
HOURS_PER_MONTH = 730.0
# vLLM keeps this much of each GPU outside its budget for CUDA graphs and activations (measured
# figures run 1–3 GiB for 7–70B models); the preflight assumes the upper end.
ACTIVATION_RESERVE_GIB = 2.0


@dataclass(frozen=True)
class Check:
    """One preflight check: its name, whether it passed, and the lines of arithmetic behind it."""

    name: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preflight:
    """All checks of one deployment. `ok` only when every check passed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def reasons(self) -> list[str]:
        """Why the deployment is refused: one line per failed check, with its numbers."""
        return [f"{c.name}: {c.summary}" for c in self.checks if not c.ok]

    def markdown(self) -> str:
        """The evidence as the change request shows it."""
        out = []
        for c in self.checks:
            out.append(f"- {'✅' if c.ok else '❌'} **{c.name}**: {c.summary}")
            out.extend(f"    - {d}" for d in c.details)
        return "\n".join(out)


# ---- GPU memory fit --------------------------------------------------------------------------------
def memory_fit(shape: ModelShape, *, gpu_memory_gib: float, tensor_parallel: int, precision: str = "bfloat16",
               max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
               kv_precision: str | None = None) -> Check:
    """Whether `shape` fits `tensor_parallel` GPUs of `gpu_memory_gib` each, with room for one full-length sequence.

    vLLM takes `gpu_memory_utilization` of each GPU; the weights are split over the tensor-parallel
    GPUs; what is left after weights and the activation reserve holds the KV cache, which must hold at
    least one sequence of `max_model_len` tokens or vLLM refuses to start.
    """
    if tensor_parallel < 1:
        raise ValueError(f"tensor-parallel size must be at least 1, not {tensor_parallel}")
    if precision not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {precision!r}; one of {sorted(PRECISION_BYTES)}")
    bpp = PRECISION_BYTES[precision]
    kv_bpp = PRECISION_BYTES[kv_precision] if kv_precision else min(bpp, 2.0)
    ctx = max_model_len or shape.max_context
    budget = gpu_memory_gib * gpu_memory_utilization
    weights = shape.weight_bytes(bpp) / GIB / tensor_parallel
    kv_room = budget - weights - ACTIVATION_RESERVE_GIB
    kv_seq = shape.kv_bytes_per_token(kv_bpp) * ctx / GIB / tensor_parallel
    details = (
        f"budget per GPU = {gpu_memory_gib:g} GiB × {gpu_memory_utilization:g} = {budget:.1f} GiB",
        f"weights per GPU = {shape.params_b:g} B params × {bpp:g} B ÷ TP {tensor_parallel} = {weights:.1f} GiB",
        f"KV cache room per GPU = {budget:.1f} − {weights:.1f} − {ACTIVATION_RESERVE_GIB:g} (activations) "
        f"= {kv_room:.1f} GiB",
        f"one {ctx}-token sequence = 2 × {shape.layers} layers × {shape.kv_heads} KV heads × {shape.head_dim} × "
        f"{kv_bpp:g} B × {ctx} ÷ TP {tensor_parallel} = {kv_seq:.2f} GiB per GPU",
    )
    if kv_room < kv_seq:
        short = kv_seq - kv_room
        head = f"{shape.name} at TP {tensor_parallel} does not fit {gpu_memory_gib:g} GiB GPUs: "
        if kv_room <= 0:
            why = (f"{weights:.1f} GiB of weights per GPU (+ {ACTIVATION_RESERVE_GIB:g} GiB activations) exceed "
                   f"the {budget:.1f} GiB budget ({short:.1f} GiB short)")
        else:
            why = (f"{weights:.1f} GiB of weights leave {kv_room:.1f} GiB for KV cache, one {ctx}-token sequence "
                   f"needs {kv_seq:.2f} GiB ({short:.1f} GiB short)")
        return Check("GPU memory", False, head + why, details)
    seqs = math.floor(kv_room / kv_seq) if kv_seq > 0 else 0
    summary = (f"fits: {weights:.1f} GiB weights + {kv_room:.1f} GiB KV cache per GPU"
               + (f" ({seqs} full-length sequences)" if kv_seq > 0 else " (no KV cache: encoder)"))
    return Check("GPU memory", True, summary, details)


# ---- capacity --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # or Exists
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, t: Taint) -> bool:
        if self.effect and self.effect != t.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != t.key:
            return False
        return self.operator == "Exists" or self.value == t.value


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    allocatable_gpus: int
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True
    allocatable_mig: Mapping[str, int] = field(default_factory=dict)  # MIG profile → slices the node advertises


@dataclass(frozen=True)
class PodView:
    name: str
    namespace: str
    node: str  # "" while Pending
    gpus: int
    phase: str
    mig: Mapping[str, int] = field(default_factory=dict)  # MIG profile → slices the pod holds


@dataclass(frozen=True)
class PodShape:
    """What the new pods ask for: their node selector, tolerations, and GPUs or MIG slices each."""

    gpus: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    mig: Mapping[str, int] = field(default_factory=dict)  # MIG profile → slices per pod (one profile in practice)

    @property
    def mig_profile(self) -> str | None:
        return next(iter(sorted(self.mig)), None)


def _matches(node: NodeView, pod: PodShape) -> bool:
    if node.unschedulable or not node.ready:
        return False
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        return False
    hard = [t for t in node.taints if t.effect in ("NoSchedule", "NoExecute")]
    return all(any(tol.tolerates(t) for tol in pod.tolerations) for t in hard)


def capacity(pod: PodShape, extra_pods: int, nodes: Sequence[NodeView], pods: Sequence[PodView]) -> Check:
    """Whether `extra_pods` more pods of `pod`'s shape fit the free GPUs of the nodes they may land on.

    Free GPUs are counted per node (a pod cannot span nodes): allocatable minus what running and
    scheduled pods request. Pending GPU pods today are reported, since they compete for the same room.
    A pod on a MIG slice is counted in free slices of its profile instead (`mig_capacity`).
    """
    if pod.mig_profile is not None:
        return mig_capacity(pod, pod.mig_profile, extra_pods, nodes, pods)
    used: dict[str, int] = {}
    for p in pods:
        if p.node and p.phase not in ("Succeeded", "Failed"):
            used[p.node] = used.get(p.node, 0) + p.gpus
    eligible = [n for n in nodes if _matches(n, pod)]
    free = {n.name: max(0, n.allocatable_gpus - used.get(n.name, 0)) for n in eligible}
    slots = sum(f // pod.gpus for f in free.values()) if pod.gpus else extra_pods
    pending = [p for p in pods if not p.node and p.phase == "Pending" and p.gpus > 0]
    need = extra_pods * pod.gpus
    selector = _selector(pod)
    details = (
        f"nodes matching {selector} and the pod's tolerations, schedulable and Ready: {len(eligible)}",
        f"free GPUs there: {sum(free.values())} ("
        + _listing(free) + ")",
        f"needed: {extra_pods} pod(s) × {pod.gpus} GPU = {need} GPUs; room for {slots} such pod(s)",
        _pending_line(pending),
    )
    if slots < extra_pods:
        return Check("GPU capacity", False,
                     f"{extra_pods} new pod(s) of {pod.gpus} GPU need {need} GPUs on {selector}; "
                     f"room for {slots} pod(s) ({sum(free.values())} free GPUs)"
                     + (f"; {len(pending)} GPU pod(s) already Pending" if pending else ""), details)
    return Check("GPU capacity", True, f"{extra_pods} new pod(s) fit: {sum(free.values())} free GPUs on {selector}",
                 details)


def _selector(pod: PodShape) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(pod.node_selector.items())) or "any node"


def _listing(free: dict[str, int]) -> str:
    """"node free, …" for the nodes with any free, or "none"."""
    return ", ".join(f"{k} {v}" for k, v in sorted(free.items()) if v) or "none"


def _pending_line(pending: Sequence[PodView]) -> str:
    return f"GPU pods Pending today: {len(pending)}" + (
        " (" + ", ".join(f"{p.namespace}/{p.name}" for p in pending[:5]) + ")" if pending else "")


def mig_capacity(pod: PodShape, profile: str, extra_pods: int, nodes: Sequence[NodeView],
                 pods: Sequence[PodView]) -> Check:
    """Whether `extra_pods` more pods, each on `pod.mig[profile]` slice(s) of `profile`, fit the free slices.

    A slice is a device of its own to the scheduler (`nvidia.com/mig-<profile>`): free slices are the
    node's allocatable of that profile minus what scheduled pods hold; other profiles and whole GPUs
    do not count, since the node's MIG layout is fixed until someone repartitions it.
    """
    per = max(1, pod.mig.get(profile, 1))
    used: dict[str, int] = {}
    for p in pods:
        if p.node and p.phase not in ("Succeeded", "Failed") and p.mig.get(profile):
            used[p.node] = used.get(p.node, 0) + p.mig[profile]
    eligible = [n for n in nodes if _matches(n, pod)]
    free = {n.name: max(0, n.allocatable_mig.get(profile, 0) - used.get(n.name, 0)) for n in eligible}
    with_profile = [n for n in eligible if n.allocatable_mig.get(profile)]
    slots = sum(f // per for f in free.values())
    pending = [p for p in pods if not p.node and p.phase == "Pending" and (p.gpus > 0 or p.mig)]
    need = extra_pods * per
    selector = _selector(pod)
    resource = MIG_PREFIX + profile
    details = (
        f"nodes matching {selector} and the pod's tolerations, schedulable and Ready: {len(eligible)}, "
        f"of which {len(with_profile)} advertise {resource}",
        f"free {profile} slices there: {sum(free.values())} ("
        + _listing(free) + ")",
        f"needed: {extra_pods} pod(s) × {per} {profile} slice = {need} slices; room for {slots} such pod(s)",
        _pending_line(pending),
    )
    if slots < extra_pods:
        return Check("GPU capacity", False,
                     f"{extra_pods} new pod(s) on MIG {profile} need {need} free {resource} slices on {selector}; "
                     f"room for {slots} pod(s) ({sum(free.values())} free slices on {len(with_profile)} node(s))"
                     + (f"; {len(pending)} GPU pod(s) already Pending" if pending else ""), details)
    return Check("GPU capacity", True,
                 f"{extra_pods} new pod(s) fit: {sum(free.values())} free MIG {profile} slices on {selector}", details)


def mig_resources(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """MIG profile → count of the `nvidia.com/mig-<profile>` entries of a requests/limits/allocatable map."""
    return {k[len(MIG_PREFIX):]: _count(v) for k, v in (resources or {}).items()
            if k.startswith(MIG_PREFIX) and _count(v) > 0}


def node_view(obj: Mapping[str, Any]) -> NodeView:
    """A Node in its JSON shape (camelCase, as `sanitize_for_serialization` gives it) as the check sees it."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return NodeView(
        name=str(meta.get("name", "")), labels=dict(meta.get("labels") or {}),
        allocatable_gpus=_count((status.get("allocatable") or {}).get(GPU_RESOURCE)),
        taints=tuple(Taint(str(t.get("key", "")), str(t.get("effect", "")), str(t.get("value") or ""))
                     for t in spec.get("taints") or []),
        unschedulable=bool(spec.get("unschedulable")), ready=ready,
        allocatable_mig=mig_resources(status.get("allocatable")))


def pod_view(obj: Mapping[str, Any]) -> PodView:
    """A Pod in its JSON shape: where it runs, what GPUs it holds, its phase."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    shp = pod_shape(spec)
    return PodView(name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")),
                   node=str(spec.get("nodeName") or ""), gpus=shp.gpus,
                   phase=str(status.get("phase") or "Unknown"), mig=shp.mig)


def pod_shape(pod_spec: Mapping[str, Any]) -> PodShape:
    """What a pod spec (or a template's `spec`) asks of a node: selector, tolerations, GPUs, MIG slices."""
    gpus = sum(_count(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE)
                      or ((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE))
               for c in pod_spec.get("containers") or [])
    mig: dict[str, int] = {}
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {}
        # Extended resources: a request must equal its limit, so either names the slices.
        for profile, n in (mig_resources(res.get("requests")) or mig_resources(res.get("limits"))).items():
            mig[profile] = mig.get(profile, 0) + n
    tolerations = tuple(Toleration(str(t.get("key") or ""), str(t.get("operator") or "Equal"),
                                   str(t.get("value") or ""), str(t.get("effect") or ""))
                        for t in pod_spec.get("tolerations") or [])
    return PodShape(gpus=gpus, node_selector=dict(pod_spec.get("nodeSelector") or {}), tolerations=tolerations,
                    mig=mig)


def _count(raw: object) -> int:
    """A GPU quantity ("4", 4, None) as a count; GPUs are whole devices."""
    if raw is None or raw == "":
        return 0
    try:
        return int(str(raw))
    except ValueError as e:
        raise ValueError(f"GPU quantity {raw!r} is not a whole number") from e


def surge_pods(replicas: int, *, strategy: str, canary_weight: int = 10, max_surge: int = 1) -> int:
    """Pods a deployment adds on top of today's: the first canary step, or a rolling update's surge."""
    if strategy == "canary":
        return min(max_surge, math.ceil(replicas * canary_weight / 100)) if max_surge else 0
    return max_surge


def max_surge_that_fits(pod: PodShape, nodes: Sequence[NodeView], pods: Sequence[PodView], cap: int) -> int:
    """The largest maxSurge (≤ `cap`) whose extra pods fit free GPUs: a capacity-bounded rolling update."""
    best = 0
    for n in range(1, cap + 1):
        if not capacity(pod, n, nodes, pods).ok:
            break
        best = n
    return best


# ---- cost ------------------------------------------------------------------------------------------
def mig_share(catalog: PriceCatalog, product: str | None, profile: str) -> float:
    """The share of a GPU one `profile` slice is priced at: its compute sevenths (`3g.40gb` → 3/7).

    From the catalog's MIG profiles of `product` when it lists the profile, else from the profile's name.
    """
    known = catalog.product(product or "").mig_profiles.get(profile)
    if known is not None:
        return known.slices / 7.0
    head = profile.split("g.", 1)[0]
    if not head.isdigit() or not 1 <= int(head) <= 7:
        raise ValueError(f"{profile!r} is not a MIG profile (e.g. 3g.40gb)")
    return int(head) / 7.0


def _per_replica(gpus: int, mig: str | None, share: float) -> str:
    return f"1 MIG {mig} slice ({share * 7:.0f}/7 GPU)" if mig else f"{gpus} GPU"


def cost_change(catalog: PriceCatalog, *, before_instance: str, before_gpus: int, after_instance: str,
                after_gpus: int, replicas: int, before_mig: str | None = None, after_mig: str | None = None) -> Check:
    """The predicted monthly change in GPU cost: replicas × GPUs × the instance's price per GPU-hour.

    A replica on a MIG slice is priced at the slice's share of its GPU (`mig_share`), the way
    allocation-based cost models split a partitioned GPU.
    """
    for it in (before_instance, after_instance):
        if it not in catalog.instance_types:
            raise ValueError(f"instance type {it!r} is not in the price catalog")
    bt, at = catalog.instance_types[before_instance], catalog.instance_types[after_instance]
    b, a = bt.price_per_gpu_hour, at.price_per_gpu_hour
    b_units = mig_share(catalog, bt.gpu_product, before_mig) if before_mig else float(before_gpus)
    a_units = mig_share(catalog, at.gpu_product, after_mig) if after_mig else float(after_gpus)
    before = replicas * b_units * b * HOURS_PER_MONTH
    after = replicas * a_units * a * HOURS_PER_MONTH
    delta = after - before
    details = (
        f"before: {replicas} × {_per_replica(before_gpus, before_mig, b_units)} × ${b:.3f}/GPU-h ({before_instance}) "
        f"× {HOURS_PER_MONTH:g} h = ${before:,.0f}/month",
        f"after: {replicas} × {_per_replica(after_gpus, after_mig, a_units)} × ${a:.3f}/GPU-h ({after_instance}) "
        f"× {HOURS_PER_MONTH:g} h = ${after:,.0f}/month",
    )
    sign = "+" if delta >= 0 else "−"
    return Check("cost", True, f"{sign}${abs(delta):,.0f}/month ({before:,.0f} → {after:,.0f} {catalog.currency})",
                 details)


# ---- staging soak ----------------------------------------------------------------------------------
def staging_soak_queries(namespace: str, app: str, version: str, window: str = "5m") -> tuple[str, str]:
    """PromQL for the TTFT p95 and the error share of `app`'s pods running `version` in `namespace`.

    Serving exporters do not label their series with the model version; kube-state-metrics'
    `kube_pod_labels` does (its allowlist keeps `model-version`), so each rate is joined on the pod.
    Run them as range queries (one sample per step) and feed the result to `staging_soak`.
    """
    pods = q.max_by(["namespace", "pod"], q.selector(
        "kube_pod_labels", namespace=namespace, label_app_kubernetes_io_name=app, label_model_version=version))

    def of_version(expr: q.Expr) -> q.Expr:
        return q.binary(expr, "*", pods, on=["namespace", "pod"], group_left=[])

    ttft = q.histogram_quantile(0.95, q.sum_by(["le"], of_version(q.sum_by(["namespace", "pod", "le"], q.rate(
        q.selector("vllm:time_to_first_token_seconds_bucket", namespace=namespace), window)))))
    requests = q.selector("http_requests_total", namespace=namespace)
    errors = q.selector("http_requests_total", namespace=namespace, status="5xx")
    share = q.ratio(
        q.aggregate("sum", of_version(q.sum_by(["namespace", "pod"], q.rate(errors, window)))),
        q.aggregate("sum", of_version(q.sum_by(["namespace", "pod"], q.rate(requests, window)))))
    return str(ttft), str(share)


def staging_soak(samples: Sequence[tuple[float, float | None, float | None]], *, ttft_p95_max_s: float,
                 error_share_max: float, required_s: float, now: float, step_s: float) -> Check:
    """How long the version has served in staging within SLO, up to `now`, from (t, ttft_p95, error_share) samples.

    Counts back from the latest sample while both signals are within SLO; a missing value (no data) or
    a gap longer than two steps ends the stretch, so silence never counts as good service.
    """
    ordered = sorted(samples, key=lambda s: s[0])
    soaked = 0.0
    breach = ""
    prev_t = now
    for t, ttft, err in reversed(ordered):
        if prev_t - t > 2 * step_s:
            breach = f"no data between {t:.0f} and {prev_t:.0f}"
            break
        if ttft is None or err is None or math.isnan(ttft) or math.isnan(err):
            breach = f"no data at {t:.0f}"
            break
        if ttft > ttft_p95_max_s or err > error_share_max:
            breach = f"at {t:.0f}: TTFT p95 {ttft:.3f} s (SLO {ttft_p95_max_s:g}), errors {err:.2%} " \
                     f"(SLO {error_share_max:.2%})"
            break
        soaked = now - t
        prev_t = t
    details = (f"required: {required_s / 3600:.1f} h within SLO in staging",
               f"served within SLO for the last {soaked / 3600:.2f} h" + (f"; before that {breach}" if breach else ""))
    if soaked < required_s:
        return Check("staging soak", False,
                     f"served in staging within SLO for {soaked / 3600:.2f} h, less than the {required_s / 3600:.1f} h "
                     "required" + (f" ({breach})" if breach else ""), details)
    return Check("staging soak", True, f"served in staging within SLO for {soaked / 3600:.2f} h", details)


__all__ = ["Check", "NodeView", "PodShape", "PodView", "Preflight", "Taint", "Toleration", "capacity",
           "cost_change", "max_surge_that_fits", "memory_fit", "mig_capacity", "mig_resources", "mig_share",
           "node_view", "pod_shape", "pod_view",
           "staging_soak", "staging_soak_queries", "surge_pods"]
