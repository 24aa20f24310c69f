"""Right-sizing recommendations from a workload's history: replicas, GPU shape, CPU and memory.

Pure functions of the history (`tools.rightsize.history.WorkloadHistory`), the price catalog and
the settings: no I/O, no clock. The method, in order:

1. Data sufficiency: fewer than `min_points` raw samples or `min_hours` of history → no
   recommendation, and the report says so.
2. Observed capacity at SLO: per-replica load (peak requests/s ÷ serving replicas) at every step,
   split by whether the step held the model's SLO (TTFT p95, queue depth, KV-cache usage). The
   capacity is the highest load that held it, below the loads where it broke. It is never
   extrapolated beyond what was observed, so a fleet that never ran hot gets a conservative figure.
3. Replicas: the chosen percentile of peak demand ÷ (capacity × target utilization).
4. GPU shape: every GPU type, count and MIG profile in the catalog that holds the model in memory,
   its capacity scaled by relative throughput; the cheapest for the replicas it needs wins.
5. Scale-down windows: hours of the day (weekdays and weekends apart) whose highest demand across
   every observed day needs fewer replicas, for long enough to be worth a schedule.
6. CPU and memory the VPA way: p90 × 1.15 (bounds widen with fewer days), memory from the peak,
   bumped after an OOM kill.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.config import RightsizeConfig, SloConfig
from tools.rightsize.catalog import HOURS_PER_MONTH, PriceCatalog
from tools.rightsize.history import WorkloadHistory
from tools.serving_knowledge.model_shapes import shape as model_shape

MIB = 1024.0 * 1024.0
GIB = 1024.0 * MIB
VLLM_MEMORY_FRACTION = 0.9  # vLLM's default --gpu-memory-utilization: the share of a GPU a model may use


class Confidence(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INSUFFICIENT = "insufficient data"


class SloRisk(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    UNKNOWN = "unknown"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Shape(_Model):
    """How a workload runs: replicas of `gpus` GPUs of `gpu_product` (or one MIG slice)."""

    replicas: int
    gpus: int = Field(description="GPUs per replica (1 for a MIG slice).")
    gpu_product: str | None
    instance_type: str | None
    mig_profile: str | None = None
    price_per_replica_hour: float = Field(description="USD per replica-hour from the catalog.")

    @property
    def monthly_cost(self) -> float:
        return self.replicas * self.price_per_replica_hour * HOURS_PER_MONTH

    def describe(self) -> str:
        gpu = (f"{self.gpu_product} MIG {self.mig_profile}" if self.mig_profile
               else f"{self.gpus}× {self.gpu_product}" if self.gpu_product else "no GPU")
        return f"{self.replicas} × ({gpu})"

    def cost_arithmetic(self) -> str:
        """The monthly cost as a sum a reader can check: replicas × price per replica-hour × hours."""
        per = f"${self.price_per_replica_hour:.3f}/replica-h"
        if self.mig_profile:
            sevenths = _compute(self) * 7
            per += f" ({sevenths:.0f}/7 of a ${self.price_per_replica_hour * 7 / sevenths:.3f}/GPU-h GPU)"
        elif self.gpus > 1:
            per += f" ({self.gpus} × ${self.price_per_replica_hour / self.gpus:.3f}/GPU-h)"
        return f"{self.replicas} × {per} × {HOURS_PER_MONTH:g} h = ${self.monthly_cost:,.0f}/month"


class ScaleWindow(_Model):
    days: str = Field(description="weekdays | weekends | every day")
    start_hour_utc: int
    end_hour_utc: int = Field(description="Exclusive; 24 means midnight.")
    replicas: int = Field(description="Replicas needed during the window (0: scale to zero).")
    monthly_savings: float


class ResourceRec(_Model):
    resource: str  # cpu (cores) | memory (bytes)
    current: float | None
    target: float
    lower: float
    upper: float
    note: str = ""


class Recommendation(_Model):
    id: str
    namespace: str
    name: str
    model: str
    team: str
    confidence: Confidence
    reason: str = Field(description="Why this recommendation, or why there is none.")
    current: Shape | None = None
    recommended: Shape | None = None
    scale_windows: list[ScaleWindow] = Field(default_factory=list)
    cpu: ResourceRec | None = None
    memory: ResourceRec | None = None
    monthly_cost_current: float = 0.0
    monthly_cost_recommended: float = 0.0
    monthly_savings: float = Field(default=0.0, description="Shape change plus scale-down windows, USD/month.")
    slo_risk: SloRisk = SloRisk.UNKNOWN
    slo_risk_reason: str = ""
    evidence: dict[str, float | int | str | None] = Field(default_factory=dict)

    @property
    def actionable(self) -> bool:
        return self.confidence != Confidence.INSUFFICIENT and self.recommended is not None and \
            self.current is not None and self.recommended != self.current


# ---- small numeric helpers --------------------------------------------------------------------
def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if not math.isnan(x)]


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of the finite values; NaN when there are none."""
    v = sorted(_finite(xs))
    if not v:
        return math.nan
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# ---- model memory -----------------------------------------------------------------------------
_PARAMS = re.compile(r"(?<![0-9.])([0-9]+(?:\.[0-9]+)?)b(?![a-z])", re.IGNORECASE)


def model_memory_gib(model: str, observed_fb_mib: float, cfg: RightsizeConfig) -> tuple[float | None, str]:
    """GPU memory one replica needs (GiB) and where the figure came from.

    A configured figure wins; else 16-bit weights × 1.2 for KV cache and activations, from the
    serving knowledge catalog's parameter count (`tools.serving_knowledge.model_shapes`, the figures
    the deployment preflight checks fit with), or a parameter count in the model name ("70b"); else
    the largest frame-buffer use observed × 1.2 (meaningful for runtimes that do not pre-allocate,
    e.g. Triton). The result decides which GPU types and MIG profiles are candidates.
    """
    if model in cfg.model_memory_gib:
        return cfg.model_memory_gib[model], "configured"
    known = model_shape(model)
    if known is not None:
        weights = known.weight_bytes(2) / GIB
        return round(weights * 1.2, 2), (f"{known.params_b:g} B parameters (serving knowledge catalog) × 2 bytes "
                                         f"= {weights:.1f} GiB weights, × 1.2 for KV cache and activations")
    m = _PARAMS.search(model)
    if m:
        return float(m.group(1)) * 2 * 1.2, f"{m.group(1)}B parameters × 2 bytes × 1.2"
    if observed_fb_mib and not math.isnan(observed_fb_mib):
        return observed_fb_mib / 1024.0 * 1.2, "largest GPU memory use observed × 1.2"
    return None, "unknown"


# ---- the recommendation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Capacity:
    per_replica_rps: float  # highest load per replica that held the SLO (or the extrapolated one)
    ok_steps: int
    breach_steps: int
    max_ok_load: float
    min_breach_load: float
    extrapolated_from: str = ""  # the saturation signal the capacity was extrapolated from, if it was
    trends: tuple[str, ...] = ()  # what each saturation signal's trend was, and whether it was used


TREND_MIN_R2 = 0.9  # a saturation trend cleaner than this is extrapolated to its limit
TREND_TRIM = 0.05  # share of steps furthest off the first fit left out of the trend (scrape gaps, restarts)


@dataclass(frozen=True)
class Trend:
    """A least-squares line y = a + b·x through a history's steps, fitted without its outliers."""

    a: float
    b: float
    r2: float
    steps: int  # steps the line was fitted on
    dropped: int  # steps left out as furthest off the first fit


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    mx, my = float(x.mean()), float(y.mean())
    sxx, syy = float(((x - mx) ** 2).sum()), float(((y - my) ** 2).sum())
    if sxx <= 0 or syy <= 0:
        return None
    b = float(((x - mx) * (y - my)).sum()) / sxx
    return my - b * mx, b, b * b * sxx / syy


def _fit(xs: Sequence[float], ys: Sequence[float], trim: float = TREND_TRIM) -> Trend | None:
    """Least squares y = a + b·x over finite pairs, refitted without the `trim` share of steps furthest off.

    A few steps of a long history are not steady state — a missed scrape, a pod restarting, a step
    straddling the start of the data — and one of them far off the line is enough to sink r² of a
    clean trend over a narrow load range. Trimming the worst 5 % (least trimmed squares, one round)
    keeps a real trend usable; a curve (saturation, no linear relation) stays a poor fit. None with
    too few steps or no spread.
    """
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 20:
        return None
    first = _ols(x, y)
    if first is None:
        return None
    drop = int(len(x) * trim)
    if drop:
        keep = np.argsort(np.abs(y - first[0] - first[1] * x), kind="stable")[:len(x) - drop]
        x, y = x[keep], y[keep]
    a, b, r2 = _ols(x, y) or first
    return Trend(a, b, r2, len(x), drop)


def extrapolated_capacity(h: WorkloadHistory, slo: SloConfig,
                          busy_max: float) -> tuple[tuple[float, str] | None, list[str]]:
    """Per-replica load at which KV-cache usage or GPU engine activity would reach its limit.

    Both grow about linearly with load until saturation (continuous batching fills the KV cache in
    proportion to requests in flight; engine activity to work done), so a clean linear trend over
    the observed loads says where the limit lies even when the fleet never ran hot. Returns the
    lowest such limit with its signal (None without a usable trend), and a line per signal saying
    what its trend was and whether it was used, for the report's evidence.
    """
    peak = [d / r if r and not math.isnan(r) and r > 0 else math.nan for d, r in zip(h.demand_peak_rps, h.replicas,
                                                                                    strict=True)]
    avg = [d / r if r and not math.isnan(r) and r > 0 else math.nan for d, r in zip(h.demand_rps, h.replicas,
                                                                                   strict=True)]
    found: list[tuple[float, str]] = []
    said: list[str] = []
    for name, xs, ys, limit in (("KV-cache usage", peak, h.kv_cache_max, slo.kv_cache_max),
                                ("GPU engine activity", avg, h.gpu_busy, busy_max)):
        t = _fit(xs, ys)
        if t is None:
            said.append(f"{name}: too few steps or no spread for a trend")
            continue
        fit = f"{name}: r² {t.r2:.3f} over {t.steps} steps ({t.dropped} furthest off left out)"
        if t.b > 0 and t.r2 >= TREND_MIN_R2 and limit > t.a:
            found.append(((limit - t.a) / t.b, name))
            said.append(f"{fit}, reaches {limit:g} at {found[-1][0]:.2f} req/s per replica")
        else:
            why = ("does not rise with load" if t.b <= 0 else f"below the {TREND_MIN_R2:g} needed"
                   if t.r2 < TREND_MIN_R2 else f"already at its limit {limit:g}")
            said.append(f"{fit}, {why}: not used")
    return (min(found) if found else None), said


def slo_for(model: str, cfg: RightsizeConfig) -> SloConfig:
    return cfg.slo.get(model, cfg.slo_default)


def observed_capacity(h: WorkloadHistory, slo: SloConfig, busy_max: float = 0.85) -> _Capacity | None:
    """The highest per-replica load (peak requests/s per serving replica) that held the SLO."""
    ok: list[float] = []
    breach: list[float] = []
    for d, r, lat, q, kv in zip(h.demand_peak_rps, h.replicas, h.latency_p95_s, h.queue_max, h.kv_cache_max,
                                strict=True):
        if math.isnan(d) or math.isnan(r) or r <= 0:
            continue
        load = d / r
        broke = ((not math.isnan(lat) and lat > slo.ttft_p95_s) or (not math.isnan(q) and q > slo.queue_max)
                 or (not math.isnan(kv) and kv > slo.kv_cache_max))
        (breach if broke else ok).append(load)
    if not ok:
        return None
    bound = quantile(breach, 0.05) if breach else math.inf
    below = [x for x in ok if x < bound]
    cap = max(below) if below else min(ok)
    source = ""
    extra, trends = extrapolated_capacity(h, slo, busy_max)
    if extra is not None and extra[0] > cap:
        cap, source = min(extra[0], bound), extra[1]
    return _Capacity(cap, len(ok), len(breach), max(ok), min(breach) if breach else math.nan, source,
                     tuple(trends))


def in_current_shape(h: WorkloadHistory, catalog: PriceCatalog, *, speed: float) -> WorkloadHistory:
    """`h` with each step's load expressed as the load on a replica of the current shape (of `speed`).

    A workload moved to another class (another GPU type, count or a MIG slice) has history from both: a
    step served by replicas of half the speed carried, per replica, what the current shape carries at
    twice the load. Each step's per-replica speed is its GPUs per instance type (GPU-equivalents: a
    3g slice counts 3/7) × that type's relative throughput ÷ its replicas; steps without that figure are
    taken as the current shape. A step whose per-replica speed differs from a neighbour's is the move
    itself (a canary's mix of both shapes; GPU activity still from the old GPUs while the load is on the
    new replicas): its loads are left out. Only the loads change (for the capacity estimate), not the demand.
    """
    n = len(h.demand_rps)
    units = [0.0] * n
    for it_name, xs in h.gpus_by_instance.items():
        it = catalog.instance_types.get(it_name)
        rel = catalog.product(it.gpu_product or "").relative_throughput if it and it.gpu_product else math.nan
        for i, g in enumerate(xs[:n]):
            if not math.isnan(g) and not math.isnan(rel):
                units[i] += g * rel
    per = [u / r if r and not math.isnan(r) and r > 0 and u > 0 else math.nan
           for u, r in zip(units, h.replicas, strict=True)]

    def changed(a: float, b: float) -> bool:
        return not (math.isnan(a) or math.isnan(b)) and abs(a - b) > 0.05 * max(a, b)

    factors = []
    for i, p in enumerate(per):
        if (i > 0 and changed(p, per[i - 1])) or (i + 1 < n and changed(p, per[i + 1])):
            factors.append(math.nan)  # a step of the move itself
        else:
            factors.append(speed / p if speed > 0 and not math.isnan(p) else 1.0)
    if all(abs(f - 1.0) < 0.02 for f in factors):
        return h
    return h.model_copy(update={"demand_rps": [d * f for d, f in zip(h.demand_rps, factors, strict=True)],
                                "demand_peak_rps": [d * f for d, f in zip(h.demand_peak_rps, factors, strict=True)]})


def _current_instance(h: WorkloadHistory) -> str | None:
    best, best_v = None, 0.0
    for it, xs in h.gpus_by_instance.items():
        last = next((x for x in reversed(xs) if not math.isnan(x)), math.nan)
        if not math.isnan(last) and last > best_v:
            best, best_v = it, last
    return best


def _hours_of_data(h: WorkloadHistory, times: Sequence[float], step_s: float) -> float:
    idx = [i for i, d in enumerate(h.demand_rps) if not math.isnan(d)]
    if not idx:
        return 0.0
    return (times[idx[-1]] - times[idx[0]] + step_s) / 3600.0


def recommendation_id(h: WorkloadHistory, end: float) -> str:
    digest = hashlib.sha256(f"{h.namespace}/{h.name}@{int(end)}".encode()).hexdigest()
    return f"rs-{digest[:10]}"


def recommend(h: WorkloadHistory, *, times: Sequence[float], step_s: float, catalog: PriceCatalog,
              cfg: RightsizeConfig) -> Recommendation:
    """A recommendation for one workload (or an explanation why there is none)."""
    rid = recommendation_id(h, times[-1] if times else 0)
    base = {"id": rid, "namespace": h.namespace, "name": h.name, "model": h.model, "team": h.team}
    points = int(sum(_finite(h.points)))
    hours = _hours_of_data(h, times, step_s)
    evidence: dict[str, float | int | str | None] = {"points": points, "hours": round(hours, 1)}
    if points < cfg.min_points or hours < cfg.min_hours:
        return Recommendation(**base, confidence=Confidence.INSUFFICIENT, evidence=evidence,
                              reason=f"insufficient data: {points} samples over {hours:.1f} h (needs at least "
                                     f"{cfg.min_points} samples and {cfg.min_hours:g} h); no recommendation")
    it_name = _current_instance(h)
    it = catalog.instance_types.get(it_name) if it_name else None
    gpus = int(h.gpus_per_replica or 0)
    replicas_now = h.spec_replicas if h.spec_replicas is not None else int(
        next((x for x in reversed(h.replicas) if not math.isnan(x)), 0))
    if it is None or not gpus:
        return Recommendation(**base, confidence=Confidence.INSUFFICIENT, evidence=evidence,
                              reason=f"no GPU allocation with a catalog price was found (instance type "
                                     f"{it_name or 'unknown'}, {gpus} GPUs per replica); no recommendation")
    mig_now = h.mig_profile
    current = Shape(replicas=replicas_now, gpus=gpus, gpu_product=it.gpu_product, instance_type=it_name,
                    mig_profile=mig_now, price_per_replica_hour=gpus * it.price_per_gpu_hour)
    if mig_now:  # one slice per replica, priced at its compute sevenths of the GPU
        current = current.model_copy(update={"gpus": 1, "price_per_replica_hour": it.price_per_gpu_hour * _compute(
            current)})
    compute_now = _compute(current)
    slo = slo_for(h.model, cfg)
    cap = observed_capacity(in_current_shape(h, catalog, speed=catalog.product(it.gpu_product or "").relative_throughput
                                             * compute_now), slo, cfg.busy_max)
    cpu, mem = size_cpu_memory(h, hours / 24.0, cfg)
    if cap is None:
        return Recommendation(**base, confidence=Confidence.LOW, current=current, cpu=cpu, memory=mem,
                              monthly_cost_current=current.monthly_cost, evidence=evidence,
                              slo_risk=SloRisk.HIGH, slo_risk_reason="the SLO was not met at any observed step",
                              reason="the SLO was broken at every observed load: no capacity at SLO to size from; "
                                     "investigate before resizing")
    demand_q = quantile(h.demand_peak_rps, cfg.demand_percentile)
    demand_max = quantile(h.demand_peak_rps, 1.0)
    evidence |= {"demand_p%g_rps" % (cfg.demand_percentile * 100): round(demand_q, 3),
                 "demand_max_rps": round(demand_max, 3), "capacity_per_replica_rps": round(cap.per_replica_rps, 3),
                 "steps_at_slo": cap.ok_steps, "steps_breaching_slo": cap.breach_steps,
                 "capacity_trends": "; ".join(cap.trends) or None,
                 "gpu_busy_p95": round(quantile(h.gpu_busy, 0.95), 3),
                 "gpu_memory_max_mib": round(quantile(h.gpu_memory_mib, 1.0), 1)}
    speed_now = catalog.product(it.gpu_product or "").relative_throughput
    need_gib, mem_source = model_memory_gib(h.model, quantile(h.gpu_memory_mib, 1.0), cfg)
    evidence["model_memory_gib"] = round(need_gib, 1) if need_gib else None
    evidence["model_memory_source"] = mem_source

    def replicas_for(capacity: float) -> int:
        if capacity <= 0:
            return 10**6
        return max(cfg.min_replicas, math.ceil(demand_q / (capacity * cfg.target_utilization) - 1e-9))

    keep_n = replicas_for(cap.per_replica_rps)
    if cap.breach_steps <= 0.01 * (cap.ok_steps + cap.breach_steps):
        # The SLO held at the current size: the observed capacity is only a lower bound, so never
        # recommend more replicas than are running.
        keep_n = min(keep_n, max(current.replicas, cfg.min_replicas))
    keep_type = current.model_copy(update={"replicas": keep_n})
    evidence["replicas_on_current_gpu"] = keep_type.replicas
    best, extrapolated = keep_type, False
    if need_gib is not None and cfg.consider_gpu_types:
        for cand in _candidates(catalog, need_gib):
            scale = _scale(cand.speed, cand.compute_share, speed_now, compute_now)
            if (cand.product, cand.gpus, cand.mig) != (it.gpu_product, current.gpus, mig_now):
                scale *= cfg.shape_headroom  # not observed: extrapolated, so leave room for the error
            n = replicas_for(cap.per_replica_rps * scale)
            shape = Shape(replicas=n, gpus=cand.gpus, gpu_product=cand.product, instance_type=cand.instance_type,
                          mig_profile=cand.mig, price_per_replica_hour=cand.price_per_hour)
            # A different shape must save enough to be worth a migration and the risk of extrapolating.
            if shape.monthly_cost < best.monthly_cost * (1 - cfg.min_shape_saving) - 1e-6:
                best, extrapolated = shape, True
    per_replica_best = cap.per_replica_rps * _scale(_speed(catalog, best), _compute(best), speed_now, compute_now) * \
        (cfg.shape_headroom if extrapolated else 1.0)
    if extrapolated:
        # What the move rests on, for the report: the capacity it assumes, and the memory fit.
        evidence["capacity_per_replica_after_rps"] = round(per_replica_best, 3)
        room = (catalog.product(best.gpu_product or "").mig_profiles[best.mig_profile].memory_gib if best.mig_profile
                else catalog.instance_types[best.instance_type or ""].gpu_memory_gib * best.gpus)
        evidence["memory_fit"] = (f"{need_gib or 0:.1f} GiB needed ≤ {room:g} GiB × {VLLM_MEMORY_FRACTION:g} = "
                                  f"{room * VLLM_MEMORY_FRACTION:.1f} GiB of "
                                  + (f"a MIG {best.mig_profile} slice" if best.mig_profile else f"{best.gpus} GPU(s)"))
    windows = scale_windows(h, times, best, per_replica_best, cfg)
    over = [d for d in h.demand_peak_rps if not math.isnan(d)]
    cap_best = per_replica_best * best.replicas
    share_over = sum(1 for d in over if d > cap_best) / len(over) if over else 0.0
    if cap.extrapolated_from:
        evidence["capacity_extrapolated_from"] = cap.extrapolated_from
        evidence["max_observed_load_rps"] = round(cap.max_ok_load, 3)
    if extrapolated:
        risk, why = SloRisk.MEDIUM, (f"capacity on {best.describe()} is scaled from {it.gpu_product} by relative "
                                     "throughput, not observed; canary it")
    elif cap.extrapolated_from:
        risk, why = SloRisk.MEDIUM, (f"capacity {cap.per_replica_rps:.2f} req/s per replica is extrapolated from the "
                                     f"{cap.extrapolated_from} trend; loads up to {cap.max_ok_load:.2f} were observed")
    elif share_over > 0.05:
        risk, why = SloRisk.HIGH, f"{share_over:.0%} of steps had peak demand above the recommended capacity"
    elif share_over > 0.01:
        risk, why = SloRisk.MEDIUM, f"{share_over:.1%} of steps had peak demand above the recommended capacity"
    else:
        risk, why = SloRisk.LOW, (f"{share_over:.1%} of steps had peak demand above the recommended capacity "
                                  f"(capacity at SLO observed up to {cap.per_replica_rps:.2f} req/s per replica)")
    if windows and risk == SloRisk.LOW:
        risk, why = SloRisk.MEDIUM, why + "; scale-down windows assume the daily pattern repeats"
    days = hours / 24.0
    if days >= 7 and not (extrapolated or cap.extrapolated_from):
        conf = Confidence.HIGH
    else:
        conf = Confidence.MEDIUM if days >= 1 else Confidence.LOW
    savings = current.monthly_cost - best.monthly_cost + sum(w.monthly_savings for w in windows)
    if best == current:
        reason = f"keep {current.describe()}: demand p{cfg.demand_percentile * 100:g} {demand_q:.2f} req/s fits"
    else:
        reason = (f"{current.describe()} → {best.describe()}: demand p{cfg.demand_percentile * 100:g} "
                  f"{demand_q:.2f} req/s at {cap.per_replica_rps:.2f} req/s per replica at SLO "
                  f"(target utilization {cfg.target_utilization:.0%})")
    return Recommendation(**base, confidence=conf, reason=reason, current=current, recommended=best,
                          scale_windows=windows, cpu=cpu, memory=mem,
                          monthly_cost_current=round(current.monthly_cost, 2),
                          monthly_cost_recommended=round(best.monthly_cost, 2), monthly_savings=round(savings, 2),
                          slo_risk=risk, slo_risk_reason=why, evidence=evidence)


@dataclass(frozen=True)
class _Candidate:
    product: str
    instance_type: str
    gpus: int
    mig: str | None
    speed: float
    compute_share: float  # GPUs (or a MIG slice's sevenths) of compute per replica
    price_per_hour: float


def _candidates(catalog: PriceCatalog, need_gib: float) -> list[_Candidate]:
    out: list[_Candidate] = []
    for product in sorted({it.gpu_product for it in catalog.instance_types.values() if it.gpu_product}):
        found = catalog.instance_for_product(product)
        if found is None:
            continue
        name, it = found
        info = catalog.product(product)
        for n in (1, 2, 4, 8):
            if n <= it.gpus and n * it.gpu_memory_gib * VLLM_MEMORY_FRACTION >= need_gib:
                out.append(_Candidate(product, name, n, None, info.relative_throughput, float(n),
                                      n * it.price_per_gpu_hour))
                break  # more GPUs of the same type only cost more for memory that already fits
        for mig, prof in sorted(info.mig_profiles.items(), key=lambda kv: kv[1].slices):
            if prof.memory_gib * VLLM_MEMORY_FRACTION >= need_gib:
                out.append(_Candidate(product, name, 1, mig, info.relative_throughput, prof.slices / 7.0,
                                      it.price_per_gpu_hour * prof.slices / 7.0))
                break
    return out


def _scale(speed: float, compute: float, speed_now: float, compute_now: float) -> float:
    """Capacity of a replica shape relative to the current one.

    Relative throughput compares GPU types for the same replica shape; more GPUs per replica (needed
    for memory) get no credit, since tensor parallelism scales sub-linearly, while fewer GPUs or a MIG
    slice lose capacity in proportion. Conservative on purpose: the error only costs money.
    """
    return (speed / speed_now) * min(1.0, compute / compute_now)


def _speed(catalog: PriceCatalog, s: Shape) -> float:
    return catalog.product(s.gpu_product or "").relative_throughput


def _compute(s: Shape) -> float:
    if s.mig_profile:
        m = re.match(r"([0-9])g\.", s.mig_profile)
        return int(m.group(1)) / 7.0 if m else 1 / 7.0
    return float(s.gpus)


def scale_windows(h: WorkloadHistory, times: Sequence[float], shape: Shape, per_replica_rps: float,
                  cfg: RightsizeConfig) -> list[ScaleWindow]:
    """Hours of the day that reliably need fewer replicas than `shape`, as windows worth a schedule."""
    if per_replica_rps <= 0 or shape.replicas <= 0:
        return []
    usable = per_replica_rps * cfg.target_utilization
    # Bursts land at different hours each day: a window must hold the fleet's usual burst on top of
    # the highest demand seen at that hour (the p99 ratio of a step's peak to its mean).
    ratios = [p / d for p, d in zip(h.demand_peak_rps, h.demand_rps, strict=True)
              if not (math.isnan(p) or math.isnan(d)) and d > 0]
    burst = max(1.0, quantile(ratios, 0.99)) if ratios else 1.0
    out: list[ScaleWindow] = []
    for days, weekdays in (("weekdays", True), ("weekends", False)):
        peak: dict[int, float] = {}
        seen: dict[int, set[int]] = {}
        step = times[1] - times[0] if len(times) > 1 else 3600.0
        for t, d in zip(times, h.demand_peak_rps, strict=True):
            if math.isnan(d):
                continue
            # A point is the step ending at `t`: its demand counts for every hour the step overlaps, so a
            # morning ramp inside a step is not credited to the hour after the one it happened in.
            for at in (t - step, t - 1e-6):
                day = int(at // 86400)
                if ((day + 3) % 7 < 5) != weekdays:
                    continue
                hour = int(at % 86400 // 3600)
                peak[hour] = max(peak.get(hour, 0.0), d)
                seen.setdefault(hour, set()).add(day)
        if len(peak) < 24 or min(len(v) for v in seen.values()) < cfg.window_min_days:
            continue  # too few days of this kind to call the pattern predictable
        need = []
        for hour in range(24):
            p = peak[hour]
            n = 0 if (cfg.scale_to_zero and p < cfg.idle_rps) else max(
                cfg.min_replicas, math.ceil(p * burst / usable - 1e-9))
            need.append(n)
        covered = [False] * 24
        for level in range(shape.replicas):  # the deepest cuts first: scale-to-zero nights before trims
            hour = 0
            while hour < 24:
                if covered[hour] or need[hour] > level:
                    hour += 1
                    continue
                start = hour
                while hour < 24 and not covered[hour] and need[hour] <= level:
                    hour += 1
                if hour - start < cfg.window_min_hours:
                    continue
                for k in range(start, hour):
                    covered[k] = True
                share = (hour - start) / 24 * (5 / 7 if weekdays else 2 / 7)
                saving = (shape.replicas - level) * shape.price_per_replica_hour * HOURS_PER_MONTH * share
                out.append(ScaleWindow(days=days, start_hour_utc=start, end_hour_utc=hour, replicas=level,
                                       monthly_savings=round(saving, 2)))
    out.sort(key=lambda w: (w.days != "weekdays", w.start_hour_utc))
    return out


def size_cpu_memory(h: WorkloadHistory, days: float, cfg: RightsizeConfig) -> tuple[ResourceRec | None,
                                                                                    ResourceRec | None]:
    """CPU and memory requests per replica the way the VPA recommender sizes them."""
    c = max(days, 1e-3)
    cpu = mem = None
    if _finite(h.cpu_usage_cores):
        p50, p90, p95 = (quantile(h.cpu_usage_cores, q) for q in (0.5, 0.9, 0.95))
        m = cfg.resource_headroom
        cpu = ResourceRec(resource="cpu", current=h.cpu_request, target=round(p90 * m, 3),
                          lower=round(p50 * m * (1 + 0.001 / c) ** -2, 3), upper=round(p95 * m * (1 + 1 / c), 3))
    if _finite(h.memory_usage_bytes):
        peak = quantile(h.memory_usage_bytes, 1.0)
        p50 = quantile(h.memory_usage_bytes, 0.5)
        target = peak * cfg.resource_headroom
        note = ""
        if h.oom_kills:
            target = max(target, peak + 100 * MIB, peak * 1.2)
            note = f"{h.oom_kills} OOM kill(s): bumped to max(peak + 100 MiB, peak × 1.2)"
        mem = ResourceRec(resource="memory", current=h.memory_request_bytes, target=round(target),
                          lower=round(p50 * cfg.resource_headroom), upper=round(target * (1 + 1 / c)), note=note)
    return cpu, mem


def recommend_all(workloads: Sequence[WorkloadHistory], *, times: Sequence[float], step_s: float,
                  catalog: PriceCatalog, cfg: RightsizeConfig) -> list[Recommendation]:
    """Recommendations for every workload, largest savings first."""
    recs = [recommend(h, times=times, step_s=step_s, catalog=catalog, cfg=cfg) for h in workloads]
    return sorted(recs, key=lambda r: (-r.monthly_savings, r.namespace, r.name))
