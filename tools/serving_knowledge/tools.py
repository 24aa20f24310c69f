"""Read tools over the serving catalog: explain a metric, list the metrics behind a failure mode, an XID.

They take a `ServingKnowledge` as their client (build it with `ServingKnowledge.default()`), so the
runner treats them like any other integration and tests can hand in their own catalog.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tools.base import Risk, ToolInput, ToolResult, ToolSpec
from tools.serving_knowledge.knowledge import ServingKnowledge
from tools.serving_knowledge.models import FailureMode, MetricInfo, XidInfo

TOOLSET = "serving/knowledge"
CLIENT = "serving_knowledge"


class ExplainMetricInput(ToolInput):
    name: str = Field(min_length=1, max_length=200,
                      description="A metric name as it appears in PromQL, old or new, e.g. vllm:gpu_cache_usage_perc, "
                                  "vllm:time_to_first_token_seconds_bucket or DCGM_FI_DEV_XID_ERRORS.")


class ExplainMetricResult(ToolResult):
    found: bool
    asked: str
    metric: MetricInfo | None = None
    current_name: str | None = Field(default=None, description="The name current releases expose, when asked for an "
                                                               "older one.")
    xids: list[XidInfo] = Field(default_factory=list, description="XID meanings, for the XID metric.")
    suggestions: list[str] = Field(default_factory=list, description="Known names close to an unknown one.")


async def explain_metric(knowledge: ServingKnowledge, params: ExplainMetricInput) -> ExplainMetricResult:
    metric = knowledge.find(params.name)
    if metric is None:
        return ExplainMetricResult(found=False, asked=params.name, suggestions=knowledge.suggest(params.name))
    base = params.name.strip()
    renamed = next((r for r in metric.renamed_from if base.startswith(r.name)), None)
    xids = list(knowledge.xids.values()) if metric.name == "DCGM_FI_DEV_XID_ERRORS" else []
    return ExplainMetricResult(found=True, asked=params.name, metric=metric,
                               current_name=metric.name if renamed else None, xids=xids)


class MetricsForFailureInput(ToolInput):
    failure_mode: FailureMode = Field(description="The suspected failure mode.")


class MetricsForFailureResult(ToolResult):
    failure_mode: FailureMode
    metrics: list[MetricInfo]


async def metrics_for_failure_mode(knowledge: ServingKnowledge,
                                   params: MetricsForFailureInput) -> MetricsForFailureResult:
    return MetricsForFailureResult(failure_mode=params.failure_mode,
                                   metrics=knowledge.for_failure_mode(params.failure_mode))


class ExplainXidInput(ToolInput):
    code: int = Field(ge=1, le=1000, description="The XID code, e.g. the value of DCGM_FI_DEV_XID_ERRORS.")


class ExplainXidResult(ToolResult):
    found: bool
    xid: XidInfo | None = None
    note: str = ""


async def explain_xid(knowledge: ServingKnowledge, params: ExplainXidInput) -> ExplainXidResult:
    xid = knowledge.xid(params.code)
    if xid is None:
        return ExplainXidResult(found=False, note=f"XID {params.code} is not in the catalog; see NVIDIA's XID table")
    return ExplainXidResult(found=True, xid=xid)


TOOLS: list[ToolSpec[Any, Any]] = [
    ToolSpec(
        name="serving_explain_metric", toolset=TOOLSET, risk=Risk.READ, client=CLIENT,
        description="Explain a model-serving metric (vLLM old or new name, Triton, TGI, KServe, DCGM, "
                    "kube-state-metrics): type, unit, what it reveals, failure modes, healthy range and thresholds, "
                    "the PromQL idiom, caveats (e.g. absence is not health for disabled DCGM counters).",
        input=ExplainMetricInput, output=ExplainMetricResult, fn=explain_metric,
    ),
    ToolSpec(
        name="serving_metrics_for_failure_mode", toolset=TOOLSET, risk=Risk.READ, client=CLIENT,
        description="List the metrics that reveal a failure mode (kv_cache_saturation, gpu_oom, bad_rollout, "
                    "gpu_hardware, gpu_lost, autoscaler_thrash, idle_gpus, ...), with thresholds and queries.",
        input=MetricsForFailureInput, output=MetricsForFailureResult, fn=metrics_for_failure_mode,
    ),
    ToolSpec(
        name="serving_explain_xid", toolset=TOOLSET, risk=Risk.READ, client=CLIENT,
        description="What an NVIDIA XID code means, whether hardware, driver or application is to blame, and what "
                    "to do (node-level action vs application fix).",
        input=ExplainXidInput, output=ExplainXidResult, fn=explain_xid,
    ),
]
