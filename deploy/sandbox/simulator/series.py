"""Metric families and label sets, as vLLM, Triton and dcgm-exporter publish and scrapes label them.

`SeriesSet` is the one place that decides which series exist for a placement, what they are
called, which labels they carry and how their values follow from the model. The live exporter and
the backfill both step the same `SeriesSet`, so their names and labels cannot disagree and the
live counters continue from the backfill's last values.

Label sets follow what the real exporters emit plus what Prometheus' Kubernetes pod discovery
adds (`namespace`, `pod`, `container`, `job`, `instance`); nothing else (no model version, no team:
those are only on kube-state-metrics' `kube_pod_labels`).

Counters and histograms are accumulated deterministically: each step adds rate × dt (and, for a
bucket, rate × dt × CDF(le)); there is no random sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from deploy.sandbox.simulator import model
from deploy.sandbox.simulator.placement import FleetSignals, GpuSlot, Placement, PodRole

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]  # (sample name, labels)

VLLM_PORT = 8000
TRITON_METRICS_PORT = 8002
DCGM_PORT = 9400


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Family:
    """A metric family. `name` is what the 0.0.4 text format's `# TYPE` line carries (counters
    keep the `_total` their exporter gives them; Triton's counters have none)."""

    name: str
    kind: Kind
    help: str


def _f(name: str, kind: Kind, help_: str) -> Family:
    return Family(name, kind, help_)


G, C, H = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM

# vLLM v0.10 (V1 engine) Prometheus metrics and the HTTP layer of its OpenAI server.
VLLM_RUNNING = _f("vllm:num_requests_running", G, "Number of requests in model execution batches.")
VLLM_WAITING = _f("vllm:num_requests_waiting", G, "Number of requests waiting to be processed.")
VLLM_KV = _f("vllm:kv_cache_usage_perc", G, "KV-cache usage. 1 means 100 percent usage.")
VLLM_PREEMPT = _f(
    "vllm:num_preemptions_total", C, "Cumulative number of preemption from the engine."
)
VLLM_PROMPT = _f("vllm:prompt_tokens_total", C, "Number of prefill tokens processed.")
VLLM_GEN = _f("vllm:generation_tokens_total", C, "Number of generation tokens processed.")
VLLM_SUCCESS = _f("vllm:request_success_total", C, "Count of successfully processed requests.")
VLLM_PQ = _f(
    "vllm:prefix_cache_queries_total",
    C,
    "Prefix cache queries, in terms of number of queried tokens.",
)
VLLM_PH = _f(
    "vllm:prefix_cache_hits_total", C, "Prefix cache hits, in terms of number of cached tokens."
)
VLLM_TTFT = _f(
    "vllm:time_to_first_token_seconds", H, "Histogram of time to first token in seconds."
)
VLLM_E2E = _f("vllm:e2e_request_latency_seconds", H, "Histogram of e2e request latency in seconds.")
VLLM_ITL = _f("vllm:inter_token_latency_seconds", H, "Histogram of inter-token latency in seconds.")
VLLM_QUEUE = _f(
    "vllm:request_queue_time_seconds", H, "Histogram of time spent in WAITING phase for request."
)
HTTP_REQUESTS = _f(
    "http_requests_total", C, "Total number of requests by method, status and handler."
)

# Triton Inference Server (docs/user_guide/metrics.md).
NV_SUCCESS = _f(
    "nv_inference_request_success", C, "Number of successful inference requests, all batch sizes"
)
NV_FAILURE = _f(
    "nv_inference_request_failure", C, "Number of failed inference requests, all batch sizes"
)
NV_COUNT = _f(
    "nv_inference_count", C, "Number of inferences performed (does not include cached requests)"
)
NV_EXEC = _f(
    "nv_inference_exec_count",
    C,
    "Number of model executions performed (does not include cached requests)",
)
NV_REQ_US = _f(
    "nv_inference_request_duration_us",
    C,
    "Cumulative inference request duration in microseconds (includes cached requests)",
)
NV_QUEUE_US = _f(
    "nv_inference_queue_duration_us",
    C,
    "Cumulative inference queuing duration in microseconds (includes cached requests)",
)
NV_COMPUTE_US = _f(
    "nv_inference_compute_infer_duration_us",
    C,
    "Cumulative compute inference duration in microseconds (does not include cached requests)",
)
NV_PENDING = _f(
    "nv_inference_pending_request_count",
    G,
    "Instantaneous number of pending requests awaiting execution per-model.",
)
NV_GPU_UTIL = _f("nv_gpu_utilization", G, "GPU utilization rate [0.0 - 1.0)")
NV_GPU_MEM_TOTAL = _f("nv_gpu_memory_total_bytes", G, "GPU total memory, in bytes")
NV_GPU_MEM_USED = _f("nv_gpu_memory_used_bytes", G, "GPU used memory, in bytes")

# dcgm-exporter default counters (etc/default-counters.csv, DCP fields included).
DCGM_UTIL = _f("DCGM_FI_DEV_GPU_UTIL", G, "GPU utilization (in %).")
DCGM_GR = _f("DCGM_FI_PROF_GR_ENGINE_ACTIVE", G, "Ratio of time the graphics engine is active.")
DCGM_TENSOR = _f(
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", G, "Ratio of cycles the tensor (HMMA) pipe is active."
)
DCGM_DRAM = _f(
    "DCGM_FI_PROF_DRAM_ACTIVE",
    G,
    "Ratio of cycles the device memory interface is active sending or receiving data.",
)
DCGM_FB_USED = _f("DCGM_FI_DEV_FB_USED", G, "Framebuffer memory used (in MiB).")
DCGM_FB_FREE = _f("DCGM_FI_DEV_FB_FREE", G, "Framebuffer memory free (in MiB).")
DCGM_TEMP = _f("DCGM_FI_DEV_GPU_TEMP", G, "GPU temperature (in C).")
DCGM_POWER = _f("DCGM_FI_DEV_POWER_USAGE", G, "Power draw (in W).")
DCGM_CLOCK = _f("DCGM_FI_DEV_SM_CLOCK", G, "SM frequency (in MHz).")
DCGM_XID = _f("DCGM_FI_DEV_XID_ERRORS", G, "Value of the last XID error encountered.")

# Histogram buckets: subsets of vLLM's own boundaries. Few of them, because every bucket is a
# series per pod and backfill time grows with the number of series (see backfill.py).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)
E2E_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 60.0, math.inf)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.2, math.inf)
QUEUE_BUCKETS = (0.3, 1.0, 5.0, 20.0, 60.0, math.inf)

FINISHED_STOP = 1.0 - model.FINISHED_LENGTH_SHARE


def le_label(bound: float) -> str:
    """A bucket bound as Python's prometheus_client (vLLM's) prints it: `0.5`, `1.0`, `+Inf`."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass(frozen=True)
class SeriesSpec:
    """One series: its family, sample name, labels, and whether its value accumulates."""

    family: Family
    name: str
    labels: Labels
    accumulate: bool

    @property
    def key(self) -> SeriesKey:
        return self.name, self.labels


@dataclass(frozen=True)
class _Entry:
    """Series computed together from one source. `fn(source)` returns one value per series: a
    gauge's value, or, for accumulating series, a rate per second."""

    series: tuple[tuple[Family, str, Labels], ...]  # (family, sample name, extra labels)
    accumulate: bool
    fn: Callable[[Any], Sequence[float]]


def _simple(family: Family, fn: Callable[[Any], float], extra: Labels = ()) -> _Entry:
    return _Entry(
        ((family, family.name, extra),), family.kind is not Kind.GAUGE, lambda s: (fn(s),)
    )


def _histogram(
    family: Family,
    bounds: Sequence[float],
    rate: Callable[[Any], float],
    dist: Callable[[Any], model.LogNormal],
) -> _Entry:
    finite = tuple(b for b in bounds if not math.isinf(b))
    logs = tuple(math.log(b) for b in finite)
    names = tuple(
        (family, family.name + "_bucket", (("le", le_label(b)),)) for b in (*finite, math.inf)
    )

    def values(s: Any) -> list[float]:
        r, d = rate(s), dist(s)
        return [r * c for c in d.cdfs(logs)] + [r, r * d.mean, r]

    return _Entry(
        (*names, (family, family.name + "_sum", ()), (family, family.name + "_count", ())),
        True,
        values,
    )


def _vllm_entries() -> list[_Entry]:
    def ok(s: model.VllmSignals) -> float:
        return s.success_rps

    def tokens(s: model.VllmSignals) -> float:
        return s.success_rps * max(0, s.output_tokens - 1)

    def served(s: model.VllmSignals) -> float:
        return s.served_rps

    return [
        _simple(VLLM_RUNNING, lambda s: s.running),
        _simple(VLLM_WAITING, lambda s: s.waiting),
        _simple(VLLM_KV, lambda s: s.kv_usage),
        _simple(VLLM_PREEMPT, lambda s: s.preemptions_per_s),
        _simple(VLLM_PROMPT, lambda s: s.prompt_tps),
        _simple(VLLM_GEN, lambda s: s.generation_tps),
        _simple(
            VLLM_SUCCESS, lambda s: s.success_rps * FINISHED_STOP, (("finished_reason", "stop"),)
        ),
        _simple(
            VLLM_SUCCESS,
            lambda s: s.success_rps * model.FINISHED_LENGTH_SHARE,
            (("finished_reason", "length"),),
        ),
        _simple(VLLM_PQ, lambda s: s.prompt_tps),
        _simple(VLLM_PH, lambda s: s.prompt_tps * s.prefix_hit),
        _histogram(VLLM_TTFT, TTFT_BUCKETS, ok, lambda s: s.ttft),
        _histogram(VLLM_E2E, E2E_BUCKETS, ok, lambda s: s.e2e),
        _histogram(VLLM_ITL, ITL_BUCKETS, tokens, lambda s: s.itl),
        _histogram(VLLM_QUEUE, QUEUE_BUCKETS, served, lambda s: s.queue),
    ]


_HTTP_BASE: Labels = (("handler", "/v1/chat/completions"), ("method", "POST"))
_VLLM_HTTP: list[_Entry] = [
    _simple(HTTP_REQUESTS, lambda s: s.success_rps, (*_HTTP_BASE, ("status", "2xx"))),
    _simple(
        HTTP_REQUESTS, lambda s: s.served_rps * s.error_share, (*_HTTP_BASE, ("status", "5xx"))
    ),
    _simple(HTTP_REQUESTS, lambda s: s.client_error_rps, (*_HTTP_BASE, ("status", "4xx"))),
]
_VLLM: list[_Entry] = _vllm_entries()

_TRITON: list[_Entry] = [
    _simple(NV_SUCCESS, lambda s: s.success_rps),
    _simple(NV_FAILURE, lambda s: s.failure_rps, (("reason", "OTHER"),)),
    _simple(NV_COUNT, lambda s: s.inferences_per_s),
    _simple(NV_EXEC, lambda s: s.executions_per_s),
    _simple(NV_REQ_US, lambda s: (s.success_rps + s.failure_rps) * s.request_us_per_request),
    _simple(NV_QUEUE_US, lambda s: (s.success_rps + s.failure_rps) * s.queue_us_per_request),
    _simple(NV_COMPUTE_US, lambda s: (s.success_rps + s.failure_rps) * s.compute_us_per_request),
    _simple(NV_PENDING, lambda s: s.pending),
]
_TRITON_GPU: list[_Entry] = [
    _simple(NV_GPU_UTIL, lambda g: round(min(g.gr_active * 1.1, 0.999), 4)),
    _simple(NV_GPU_MEM_TOTAL, lambda g: g.fb_total_mib * 1048576.0),
    _simple(NV_GPU_MEM_USED, lambda g: g.fb_used_mib * 1048576.0),
]


_DCGM_FAMILIES = (
    DCGM_UTIL,
    DCGM_GR,
    DCGM_TENSOR,
    DCGM_DRAM,
    DCGM_FB_USED,
    DCGM_FB_FREE,
    DCGM_TEMP,
    DCGM_POWER,
    DCGM_CLOCK,
    DCGM_XID,
)


def _dcgm_entry(temp_offset_c: float) -> _Entry:
    """All DCGM fields of one GPU (the temperature carries the GPU's own offset)."""
    return _Entry(
        tuple((f, f.name, ()) for f in _DCGM_FAMILIES),
        False,
        lambda g: (
            g.util_pct,
            g.gr_active,
            g.tensor_active,
            g.dram_active,
            g.fb_used_mib,
            g.fb_free_mib,
            g.temp_c + temp_offset_c,
            g.power_w,
            g.sm_clock_mhz,
            g.xid,
        ),
    )


# Family order in the exposition (registry order, as an exporter prints its families).
FAMILIES: tuple[Family, ...] = tuple(
    dict.fromkeys(
        (
            *(x[0] for e in (*_VLLM, *_VLLM_HTTP, *_TRITON, *_TRITON_GPU) for x in e.series),
            *_DCGM_FAMILIES,
        )
    )
)


ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"  # set by Argo Rollouts on the pods of each revision


def _scrape_labels(r: PodRole, job: str, port: int) -> Labels:
    """What Prometheus' pod discovery and relabelling add to every series of a pod's exporter.

    A pod of an Argo Rollouts ReplicaSet also carries its pod-template hash (kept by the usual
    `labelmap` of `__meta_kubernetes_pod_label_(.+)`), which is how an analysis tells canary from stable.
    """
    labels: Labels = (
        ("namespace", r.pod.namespace),
        ("pod", r.pod.name),
        ("container", r.pod.container),
        ("job", job),
        ("instance", f"{r.pod.ip}:{port}"),
    )
    rollout_hash = r.pod.labels.get(ROLLOUT_HASH_LABEL)
    if rollout_hash:
        labels += (("rollouts_pod_template_hash", rollout_hash),)
    return labels


def dcgm_labels(slot: GpuSlot) -> Labels:
    """dcgm-exporter's labels for one GPU (Kubernetes mode adds the pod holding it)."""
    labels: Labels = (
        ("gpu", str(slot.index)),
        ("UUID", slot.uuid),
        ("device", f"nvidia{slot.index}"),
        ("modelName", slot.model_name),
        ("Hostname", slot.node.name),
    )
    if slot.holder is not None:
        labels += (
            ("container", slot.holder.pod.container),
            ("namespace", slot.holder.pod.namespace),
            ("pod", slot.holder.pod.name),
        )
    return (*labels, ("job", "dcgm-exporter"), ("instance", f"{slot.node.name}:{DCGM_PORT}"))


# A block: the series of one source (a replica, or a GPU) evaluated together each step.
@dataclass(frozen=True)
class _Block:
    source: tuple[str, Any]  # ("replica", (namespace, pod)) or ("gpu", index into Placement.gpus)
    first: int  # index of the block's first series in SeriesSet.specs
    entries: tuple[tuple[Callable[[Any], Sequence[float]], bool], ...]


def build_series(placement: Placement) -> tuple[list[SeriesSpec], list[_Block]]:
    """Every series the fleet exports for `placement`, and how to compute each one's value.

    Order: each serving replica's runtime series (pods in namespace/name order), then, for
    Triton, its GPUs' `nv_gpu_*`, then every GPU's DCGM series (nodes by name, GPUs by index).
    """
    specs: list[SeriesSpec] = []
    blocks: list[_Block] = []

    def add(source: tuple[str, Any], base: Labels, entries: Iterable[_Entry]) -> None:
        entries = list(entries)
        blocks.append(_Block(source, len(specs), tuple((e.fn, e.accumulate) for e in entries)))
        for e in entries:
            for family, name, extra in e.series:
                specs.append(SeriesSpec(family, name, base + extra, e.accumulate))

    slot_index = {(s.node.name, s.index): i for i, s in enumerate(placement.gpus)}
    for r in placement.serving:
        assert r.version is not None
        if r.runtime == "vllm":
            scrape = _scrape_labels(r, "vllm", VLLM_PORT)
            add(
                ("replica", r.key),
                (*scrape, ("model_name", r.version.model), ("engine", "0")),
                _VLLM,
            )
            add(("replica", r.key), scrape, _VLLM_HTTP)
        elif r.runtime == "triton":
            scrape = _scrape_labels(r, "triton", TRITON_METRICS_PORT)
            add(
                ("replica", r.key),
                (*scrape, ("model", r.version.model), ("version", r.version.version)),
                _TRITON,
            )
            for i in r.gpu_indices:
                gi = slot_index.get((r.pod.node_name, i))
                if gi is not None:
                    add(("gpu", gi), (*scrape, ("gpu_uuid", placement.gpus[gi].uuid)), _TRITON_GPU)
    for gi, slot in enumerate(placement.gpus):
        add(("gpu", gi), dcgm_labels(slot), [_dcgm_entry(slot.temp_offset_c)])
    return specs, blocks


class SeriesSet:
    """The fleet's series for one placement, with counter state carried across steps."""

    def __init__(
        self, placement: Placement, state: Mapping[SeriesKey, float] | None = None
    ) -> None:
        self.placement = placement
        self.specs, self._blocks = build_series(placement)
        state = state or {}
        self.values: list[float] = [
            state.get(s.key, 0.0) if s.accumulate else math.nan for s in self.specs
        ]
        self.t: float | None = None
        order: dict[Family, list[int]] = {}
        for i, s in enumerate(self.specs):
            order.setdefault(s.family, []).append(i)
        self.families: list[tuple[Family, list[int]]] = [
            (f, order[f]) for f in FAMILIES if f in order
        ]

    def __len__(self) -> int:
        return len(self.specs)

    def step(self, t: float, dt: float) -> FleetSignals:
        """Advance to epoch second `t`, `dt` seconds after the previous step; update `values`."""
        sig = self.placement.evaluate(t)
        replicas, gpus, values = sig.replicas, sig.gpus, self.values
        memo: dict[tuple[int, int], Sequence[float]] = {}  # pods sharing signals share histograms
        for block in self._blocks:
            kind, ref = block.source
            src = replicas[ref] if kind == "replica" else gpus[ref]
            i = block.first
            for fn, acc in block.entries:
                if acc:
                    key = (id(fn), id(src))
                    out = memo.get(key)
                    if out is None:
                        out = memo[key] = fn(src)
                    for v in out:
                        values[i] += v * dt
                        i += 1
                else:
                    for v in fn(src):
                        values[i] = v
                        i += 1
        self.t = t
        return sig

    def state(self) -> dict[SeriesKey, float]:
        """Counter and histogram values by series, to carry into the next `SeriesSet`."""
        return {s.key: v for s, v in zip(self.specs, self.values, strict=True) if s.accumulate}
