"""The shapes of serving knowledge: a metric, its thresholds, an XID, the failure modes they reveal."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FailureMode(enum.StrEnum):
    """Failure modes of GPU model serving; the values match the agent's diagnosis categories."""

    KV_CACHE_SATURATION = "kv_cache_saturation"
    GPU_OOM = "gpu_oom"
    BAD_ROLLOUT = "bad_rollout"
    GPU_HARDWARE = "gpu_hardware"
    GPU_LOST = "gpu_lost"
    AUTOSCALER_THRASH = "autoscaler_thrash"
    IDLE_GPUS = "idle_gpus"
    WRONG_GPU_CLASS = "wrong_gpu_class"
    TRITON_BATCHING = "triton_batching"
    THERMAL_THROTTLING = "thermal_throttling"
    PREFIX_CACHE_REGRESSION = "prefix_cache_regression"


class Source(enum.StrEnum):
    VLLM = "vllm"
    TRITON = "triton"
    TGI = "tgi"
    KSERVE = "kserve"
    DCGM = "dcgm"
    KUBE_STATE_METRICS = "kube-state-metrics"


class MetricType(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    INFO = "info"


class Threshold(_Frozen):
    """A level worth acting on, and where the number comes from."""

    level: Literal["warn", "critical"]
    value: float
    side: Literal["above", "below"] = "above"
    applies_to: str = Field(default="", description="What the value is compared with, if not the raw metric "
                                                    "(e.g. 'p95 over 5m', 'rate over 5m').")
    source: str = Field(description="Why this number: the project or practice it comes from.")


class Rename(_Frozen):
    """A former name of the same signal, and when it changed."""

    name: str
    note: str


class MetricInfo(_Frozen):
    """One metric: what it is, what it reveals, and what healthy looks like."""

    name: str = Field(description="Current name as exposed (counters with _total; histograms by base name).")
    renamed_from: tuple[Rename, ...] = ()
    source: Source
    type: MetricType
    unit: str
    labels: tuple[str, ...] = Field(default=(), description="The labels that identify a series.")
    reveals: str
    failure_modes: tuple[FailureMode, ...] = ()
    healthy: str = Field(description="What normal looks like, in words.")
    thresholds: tuple[Threshold, ...] = ()
    query: str = Field(default="", description="The PromQL idiom to read it.")
    caveats: tuple[str, ...] = ()
    enabled_by_default: bool = Field(default=True, description="False when the exporter ships it commented out: "
                                                              "absence of the series is not health.")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *(r.name for r in self.renamed_from))


class XidInfo(_Frozen):
    """An NVIDIA XID code as DCGM_FI_DEV_XID_ERRORS reports it."""

    code: int
    meaning: str
    blame: Literal["hardware", "driver", "application", "hardware_or_driver", "application_or_driver"]
    action: str
