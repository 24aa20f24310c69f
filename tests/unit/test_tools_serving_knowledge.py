"""The serving catalog: old and new vLLM names, thresholds, XIDs, disabled counters, and its read tools."""

from __future__ import annotations

import pytest

from tools.serving_knowledge import catalog
from tools.serving_knowledge.knowledge import ServingKnowledge
from tools.serving_knowledge.models import FailureMode, MetricType
from tools.serving_knowledge.tools import (
    ExplainMetricInput,
    ExplainXidInput,
    MetricsForFailureInput,
    explain_metric,
    explain_xid,
    metrics_for_failure_mode,
)

K = ServingKnowledge.default()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
        ("vllm:gpu_prefix_cache_hits_total", "vllm:prefix_cache_hits_total"),
        ("vllm:gpu_prefix_cache_queries_total", "vllm:prefix_cache_queries_total"),
        ("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds"),
        ("vllm:time_per_output_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket"),
    ],
)
def test_old_and_new_vllm_names_are_one_metric(old: str, new: str) -> None:
    assert K.find(old) is K.find(new) is not None
    renames = K.renames()
    assert renames[old] == (new,) and renames[new] == (old,)


def test_every_failure_mode_has_signals() -> None:
    for mode in FailureMode:
        assert K.for_failure_mode(mode), f"no metric reveals {mode}"


def test_gateway_saturation_defaults() -> None:
    kv = K.find("vllm:kv_cache_usage_perc")
    waiting = K.find("vllm:num_requests_waiting")
    assert kv is not None and waiting is not None
    assert [t.value for t in kv.thresholds if t.level == "warn"] == [catalog.KV_CACHE_SATURATED] == [0.8]
    assert [t.value for t in waiting.thresholds] == [catalog.QUEUE_DEPTH_SATURATED] == [5]


def test_dcgm_caveats_xid_gauge_disabled_counters_and_mig() -> None:
    xid = K.find("DCGM_FI_DEV_XID_ERRORS")
    assert xid is not None and xid.type == MetricType.GAUGE
    assert any("last XID" in c and "not a counter" in c for c in xid.caveats)
    disabled = {m.name for m in K.metrics if not m.enabled_by_default}
    assert {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION",
            "DCGM_FI_DEV_RETIRED_DBE", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL"} <= disabled
    for name in disabled:
        metric = K.find(name)
        assert metric is not None and any("never as healthy" in c for c in metric.caveats)
    util = K.find("DCGM_FI_DEV_GPU_UTIL")
    assert util is not None and any("MIG" in c for c in util.caveats)


@pytest.mark.parametrize(("code", "blame"), [(48, "hardware"), (63, "hardware"), (64, "hardware"), (79, "hardware"),
                                             (46, "hardware_or_driver"), (13, "application_or_driver")])
def test_xid_table(code: int, blame: str) -> None:
    xid = K.xid(code)
    assert xid is not None and xid.blame == blame


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        ServingKnowledge([*catalog.VLLM, catalog.VLLM[0]], catalog.XIDS)


@pytest.mark.anyio
async def test_explain_metric_tool() -> None:
    old = await explain_metric(K, ExplainMetricInput(name="vllm:gpu_cache_usage_perc"))
    assert old.found and old.metric is not None and old.current_name == "vllm:kv_cache_usage_perc"
    xid = await explain_metric(K, ExplainMetricInput(name="DCGM_FI_DEV_XID_ERRORS"))
    assert {x.code for x in xid.xids} >= {46, 48, 63, 64, 79}
    unknown = await explain_metric(K, ExplainMetricInput(name="vllm:kv_cache_usage"))
    assert not unknown.found and "vllm:kv_cache_usage_perc" in unknown.suggestions
    modes = await metrics_for_failure_mode(K, MetricsForFailureInput(failure_mode=FailureMode.PREFIX_CACHE_REGRESSION))
    assert "vllm:prefix_cache_hits_total" in {m.name for m in modes.metrics}
    assert (await explain_xid(K, ExplainXidInput(code=79))).xid is not None
    assert not (await explain_xid(K, ExplainXidInput(code=999))).found
