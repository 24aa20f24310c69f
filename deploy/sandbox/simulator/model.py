"""The fleet's physics: traffic over time and what a replica and its GPUs do under that traffic.

Everything here is a pure, deterministic function of its arguments (no clock, no I/O, no random
state), so a backfilled sample and a live sample for the same instant are the same number. The
numbers are shaped after how vLLM, Triton and NVIDIA GPUs behave (continuous batching keeps
queueing negligible until close to capacity, vLLM pre-allocates 90 % of GPU memory, ...), but they
are a model, not a benchmark. Exposition (metric names, labels, histogram buckets) lives elsewhere.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

from deploy.sandbox.fleet import ModelVersion, Traffic

DAY_S = 86400.0
NOISE = 0.04  # ± share of per-minute traffic noise: enough to look real, too little to trip alerts
MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs: the running batch never exceeds it
KNEE = 0.3  # queue-delay scale as a share of the light-load TTFT (see `queue_delay_s`)
OVERLOAD_BACKLOG_S = 60.0  # queue seconds added per unit of load above capacity (clients pile up)
FINISHED_LENGTH_SHARE = 0.12  # share of successful completions stopped by max_tokens
VLLM_MEMORY_FRACTION = 0.90  # vLLM's default --gpu-memory-utilization
TRITON_ITEMS_PER_REQUEST = 1.0


# ---- traffic ----------------------------------------------------------------------------------
def _unit_hash(*parts: object) -> float:
    """Map `parts` to a stable float in [0, 1) (the same on every machine and run)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@lru_cache(maxsize=4096)
def burst_windows(seed: str, day: int, count: int, minutes: int) -> tuple[tuple[float, float], ...]:
    """Return the `count` burst windows `(start, end)` in epoch seconds of UTC day `day`."""
    if count <= 0 or minutes <= 0:
        return ()
    length = minutes * 60.0
    windows = []
    for i in range(count):
        start = day * DAY_S + _unit_hash(seed, "burst", day, i) * (DAY_S - length)
        windows.append((start, start + length))
    return tuple(sorted(windows))


def diurnal_level(traffic: Traffic, t: float) -> float:
    """Return the share of peak traffic at `t` from the daily cosine and the weekend dip only."""
    hour = (t % DAY_S) / 3600.0
    level = traffic.trough_ratio + (1.0 - traffic.trough_ratio) * 0.5 * (
        1.0 + math.cos(2.0 * math.pi * (hour - traffic.peak_hour_utc) / 24.0)
    )
    weekday = (int(t // DAY_S) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    if weekday >= 5:
        level *= traffic.weekend_ratio
    return level


def demand_rps(traffic: Traffic, t: float, seed: str) -> float:
    """Return the requests/s a workload receives at epoch second `t` (before any fault multiplier).

    A cosine between trough and peak with its maximum at `peak_hour_utc`, scaled on Saturdays and
    Sundays, multiplied by `burst` inside the day's burst windows (placed by a hash of `seed` and
    the day), and by a small per-minute noise (a hash of `seed` and the minute).
    """
    level = diurnal_level(traffic, t)
    day = int(t // DAY_S)
    for start, end in burst_windows(seed, day, traffic.bursts_per_day, traffic.burst_minutes):
        if start <= t < end:
            level *= traffic.burst
            break
    minute = int(t // 60)
    level *= 1.0 + NOISE * (2.0 * _unit_hash(seed, "noise", minute) - 1.0)
    return traffic.peak_rps * level


# ---- distributions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogNormal:
    """A latency distribution: log-normal with this median (seconds) and log-space sigma."""

    median: float
    sigma: float

    def cdf(self, x: float) -> float:
        """Return P(latency <= x)."""
        if self.median <= 0.0:
            return 1.0
        if x <= 0.0:
            return 0.0
        if math.isinf(x):
            return 1.0
        return 0.5 * math.erfc(-math.log(x / self.median) / (self.sigma * math.sqrt(2.0)))

    def cdfs(self, log_bounds: tuple[float, ...]) -> list[float]:
        """P(latency <= b) for each finite bound b, given as log(b) (faster for many buckets)."""
        if self.median <= 0.0:
            return [1.0] * len(log_bounds)
        k = 1.0 / (self.sigma * math.sqrt(2.0))
        log_m = math.log(self.median)
        erfc = math.erfc
        return [0.5 * erfc((log_m - lb) * k) for lb in log_bounds]

    @property
    def mean(self) -> float:
        return self.median * math.exp(0.5 * self.sigma * self.sigma) if self.median > 0 else 0.0

    def quantile(self, q: float) -> float:
        """Return the q-quantile (0 < q < 1), for tests and logs."""
        return self.median * math.exp(self.sigma * math.sqrt(2.0) * _erfinv(2.0 * q - 1.0))


def _erfinv(y: float) -> float:
    # Newton on erf: only used for reporting quantiles, so a few iterations from a crude start do.
    x = 0.0
    for _ in range(60):
        x -= (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


# ---- queueing ---------------------------------------------------------------------------------
def kv_cache_usage(rho: float) -> float:
    """KV-cache blocks in use (0..1): grows with load, saturates just below 1 past capacity."""
    if rho < 1.0:
        return 0.1 + 0.75 * max(rho, 0.0)
    return 0.85 + 0.149 * (1.0 - math.exp(-6.0 * (rho - 1.0)))


def queue_delay_s(rho: float, scale_s: float) -> float:
    """Median wait before a request is scheduled.

    Continuous batching behaves like a queue with many servers: waiting is negligible until close
    to capacity (the `rho**16` knee), then the `1/(1-rho)` blow-up, then past capacity a backlog
    that grows with the excess load (bounded by `OVERLOAD_BACKLOG_S`, as clients time out).
    """
    r = max(rho, 0.0)
    knee = min(r, 0.97)
    return scale_s * knee**16 / (1.0 - knee) + OVERLOAD_BACKLOG_S * max(0.0, r - 1.0)


def overload_error_share(rho: float) -> float:
    """Extra share of failing requests when badly saturated.

    Small on purpose: an overloaded vLLM queues rather than failing (clients time out at the
    gateway, not in the server's own HTTP metrics), so only extreme overload shows as 5xx here.
    """
    return min(0.2, 0.02 * max(0.0, rho - 1.3))


# ---- a vLLM replica ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VllmSignals:
    """What one vLLM replica does during a tick. Rates are per second."""

    rho: float  # offered load / capacity
    offered_rps: float
    served_rps: float  # completions per second (success + failure)
    success_rps: float
    error_share: float  # answered 5xx
    running: float
    waiting: float
    kv_usage: float
    preemptions_per_s: float
    prompt_tps: float
    generation_tps: float
    prefix_hit: float
    ttft: LogNormal
    itl: LogNormal
    e2e: LogNormal
    queue: LogNormal
    output_tokens: int
    gr_active: float  # GPU graphics-engine activity of each of its GPUs (0..1)
    client_error_share: float = 0.0  # refused with a 4xx before reaching the engine

    @property
    def client_error_rps(self) -> float:
        return self.served_rps * self.client_error_share


def vllm_signals(mv: ModelVersion, speed: float, rps: float) -> VllmSignals:
    """Model one vLLM replica of `mv` on GPUs `speed`× an H100, offered `rps` requests/s."""
    speed = max(speed, 1e-3)
    capacity = mv.max_rps * speed
    rho = rps / capacity
    latency_scale = 1.0 / math.sqrt(speed)  # slower GPUs: longer prefill and decode steps
    ttft_light = mv.ttft_s * latency_scale * (1.0 + 0.25 * min(rho, 1.0) ** 2)
    wait = queue_delay_s(rho, KNEE * mv.ttft_s * latency_scale)
    itl_med = mv.itl_s * latency_scale * (1.0 + 0.5 * min(rho, 1.0))
    served = min(rps, capacity)
    error_share = min(1.0, mv.error_rate + overload_error_share(rho))
    refused = min(1.0 - error_share, mv.client_error_rate)
    success = served * (1.0 - error_share - refused)
    kv = kv_cache_usage(rho)
    ttft = LogNormal(ttft_light + wait, 0.4)
    e2e = LogNormal(ttft.median + mv.output_tokens * itl_med, 0.35)
    in_flight = served * max(e2e.mean - wait, 0.0)  # Little's law over the running phase
    return VllmSignals(
        rho=rho,
        offered_rps=rps,
        served_rps=served,
        success_rps=success,
        error_share=error_share,
        running=float(round(min(MAX_NUM_SEQS, in_flight))),
        waiting=float(round(min(5000.0, rps * wait))),
        kv_usage=round(kv, 4),
        preemptions_per_s=served * 0.25 * max(0.0, kv - 0.95) / 0.05,
        prompt_tps=served * mv.prompt_tokens,
        generation_tps=success * mv.output_tokens,
        prefix_hit=mv.prefix_hit * (1.0 - 0.5 * max(0.0, kv - 0.9) / 0.1),
        ttft=ttft,
        itl=LogNormal(itl_med, 0.25),
        e2e=e2e,
        queue=LogNormal(wait, 0.9),
        output_tokens=mv.output_tokens,
        gr_active=0.004 + 0.93 * min(rho, 1.02),
        client_error_share=refused,
    )


def stalled_vllm_signals(mv: ModelVersion, rps: float, stalled_s: float) -> VllmSignals:
    """A vLLM replica whose tensor-parallel workers are stuck in a collective (one rank hung in NCCL).

    The API server still accepts requests and the pod stays Ready, but no step completes: nothing is
    served, no token comes out, the batch stays full and the queue grows with the traffic the load
    balancer keeps sending. The other ranks spin in the all-reduce, so the GPUs read as fully busy.
    """
    frozen = LogNormal(mv.ttft_s, 0.4)  # never observed: nothing finishes
    return VllmSignals(
        rho=0.0,
        offered_rps=rps,
        served_rps=0.0,
        success_rps=0.0,
        error_share=0.0,
        running=float(MAX_NUM_SEQS),
        waiting=float(round(min(5000.0, rps * max(stalled_s, 0.0)))),
        kv_usage=0.62,
        preemptions_per_s=0.0,
        prompt_tps=0.0,
        generation_tps=0.0,
        prefix_hit=mv.prefix_hit,
        ttft=frozen,
        itl=LogNormal(mv.itl_s, 0.25),
        e2e=frozen,
        queue=LogNormal(max(stalled_s, 1.0), 0.9),
        output_tokens=mv.output_tokens,
        gr_active=0.99,
    )


# ---- a Triton replica -------------------------------------------------------------------------
@dataclass(frozen=True)
class TritonSignals:
    """What one Triton replica does during a tick. Rates are per second, durations microseconds."""

    rho: float
    success_rps: float
    failure_rps: float
    inferences_per_s: float
    executions_per_s: float
    queue_us_per_request: float
    compute_us_per_request: float
    pending: float
    gr_active: float
    fb_used_fraction: float  # of the GPU's memory: weights plus activations growing with batch

    @property
    def avg_batch(self) -> float:
        return self.inferences_per_s / self.executions_per_s if self.executions_per_s else 0.0

    @property
    def request_us_per_request(self) -> float:
        return self.queue_us_per_request + self.compute_us_per_request + 150.0  # HTTP handling


def triton_signals(mv: ModelVersion, speed: float, rps: float) -> TritonSignals:
    """Model one Triton replica with dynamic batching (the batch grows with the load)."""
    speed = max(speed, 1e-3)
    capacity = mv.max_rps * speed
    rho = rps / capacity
    served = min(rps, capacity)
    batch = 1.0 + (mv.max_batch - 1.0) * min(rho, 1.0) ** 1.3
    exec_s = mv.ttft_s / math.sqrt(speed) * (1.0 + 0.08 * (batch - 1.0))
    wait = 0.0005 + queue_delay_s(rho, 0.25 * mv.ttft_s)  # 0.5 ms max_queue_delay for batching
    err = min(1.0, mv.error_rate + overload_error_share(rho))
    items = served * TRITON_ITEMS_PER_REQUEST
    return TritonSignals(
        rho=rho,
        success_rps=served * (1.0 - err),
        failure_rps=served * err,
        inferences_per_s=items,
        executions_per_s=items / batch,
        queue_us_per_request=wait * 1e6,
        compute_us_per_request=exec_s * 1e6,
        pending=float(round(min(5000.0, rps * wait))),
        gr_active=0.004 + 0.9 * min(rho, 1.02),
        fb_used_fraction=0.08 + 0.06 * min(rho, 1.0),
    )


# ---- GPUs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuSpec:
    """Static facts of a GPU product, as DCGM reports them."""

    memory_mib: int
    tdp_w: float
    idle_w: float
    max_clock_mhz: float
    idle_clock_mhz: float


GPU_SPECS: dict[str, GpuSpec] = {
    "NVIDIA-H100-80GB-HBM3": GpuSpec(81559, 700.0, 70.0, 1980.0, 345.0),
    "NVIDIA-A100-SXM4-80GB": GpuSpec(81920, 400.0, 60.0, 1410.0, 210.0),
    "NVIDIA-A100-SXM4-40GB": GpuSpec(40960, 400.0, 55.0, 1410.0, 210.0),
    "NVIDIA-L40S": GpuSpec(46068, 350.0, 35.0, 2520.0, 210.0),
    "NVIDIA-L4": GpuSpec(23034, 72.0, 16.0, 2040.0, 210.0),
}
DEFAULT_GPU = GpuSpec(40960, 300.0, 50.0, 1500.0, 210.0)


def gpu_spec(product: str, memory_mib: int | None = None) -> GpuSpec:
    """The spec of `product` (a `nvidia.com/gpu.product` value), with the node's memory if known."""
    spec = GPU_SPECS.get(product, DEFAULT_GPU)
    if memory_mib:
        spec = GpuSpec(memory_mib, spec.tdp_w, spec.idle_w, spec.max_clock_mhz, spec.idle_clock_mhz)
    return spec


@dataclass(frozen=True)
class GpuSignals:
    """One GPU's DCGM readings."""

    util_pct: float
    gr_active: float
    tensor_active: float
    dram_active: float
    fb_used_mib: float
    fb_free_mib: float
    fb_total_mib: float
    temp_c: float
    power_w: float
    sm_clock_mhz: float
    xid: float


@lru_cache(maxsize=8192)
def gpu_signals(
    spec: GpuSpec,
    *,
    gr_active: float,
    fb_used_fraction: float,
    tensor_share: float = 0.42,
    dram_share: float = 0.6,
    loaded: bool,
    xid: int = 0,
    heat_c: float = 0.0,
) -> GpuSignals:
    """Model a GPU whose engines are `gr_active` busy and whose memory is `fb_used_fraction` used.

    `loaded` is whether a process holds the GPU (a model in memory draws a little power even when
    idle). An XID'd GPU has fallen off the bus: no activity, and the last XID reported. The
    temperature is the board's nominal one; each GPU's own offset is added where it is exposed.
    `heat_c` is extra heat from outside the GPU (failed fans, a hot aisle): past 85 °C the GPU
    slows its SM clock to protect itself, about 4 % per degree, down to half.
    """
    reserved = round(spec.memory_mib * 0.0065)
    if xid:
        gr_active, loaded = 0.0, False
    gr = max(0.0, min(gr_active, 1.0))
    used = min(float(round(spec.memory_mib * fb_used_fraction)), spec.memory_mib - reserved)
    p_frac = min(1.0, (0.04 if loaded else 0.0) + 0.9 * gr)
    clock = spec.idle_clock_mhz + (spec.max_clock_mhz - spec.idle_clock_mhz) * min(1.0, gr * 10.0)
    if p_frac > 0.85:  # power capping near TDP pulls the clock down a little
        clock *= 1.0 - 0.05 * (p_frac - 0.85) / 0.15
    temp = 30.0 + 45.0 * p_frac + heat_c
    if heat_c and temp > 85.0:
        clock *= max(0.5, 1.0 - 0.04 * (temp - 85.0))
    return GpuSignals(
        util_pct=float(round(100.0 * min(1.0, 1.5 * gr))),
        gr_active=round(gr, 4),
        tensor_active=round(gr * tensor_share, 4),
        dram_active=round(gr * dram_share, 4),
        fb_used_mib=used,
        fb_free_mib=float(spec.memory_mib - reserved - used),
        fb_total_mib=float(spec.memory_mib),
        temp_c=float(round(temp)),
        power_w=round(spec.idle_w + (spec.tdp_w - spec.idle_w) * p_frac, 3),
        sm_clock_mhz=float(round(clock)),
        xid=float(xid),
    )


def stable_unit(*parts: object) -> float:
    """A stable float in [0, 1) for `parts` (per-GPU temperature offsets, fake IDs)."""
    return _unit_hash(*parts)
