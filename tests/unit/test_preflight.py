"""Deployment preflight: memory fit, capacity, cost and staging soak, with the numbers a human reads."""

from __future__ import annotations

import pytest

from agent.change.preflight import (
    NodeView,
    PodShape,
    PodView,
    Preflight,
    Taint,
    Toleration,
    capacity,
    cost_change,
    max_surge_that_fits,
    memory_fit,
    staging_soak,
    staging_soak_queries,
    surge_pods,
)
from tools.rightsize.catalog import DEFAULT_CATALOG, PriceCatalog
from tools.serving_knowledge.model_shapes import shape

GPU_TAINT = Taint("nvidia.com/gpu", "NoSchedule", "present")
TOLERATE_GPU = Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule")


def _shape(name: str):  # type: ignore[no-untyped-def]
    s = shape(name)
    assert s is not None, name
    return s


# ---- memory ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "gib", "tp", "ctx", "fits"), [
    ("llama-3.1-8b-instruct", 24, 1, 8192, True),         # L4: 15 GiB of weights, room for KV
    ("llama-3.1-8b-instruct", 24, 1, 131072, False),       # …but not one 128k sequence (16 GiB of KV)
    ("llama-3.1-70b-instruct", 80, 4, 131072, True),       # 4 × H100 at TP 4
    ("llama-3.1-70b-instruct", 40, 2, 8192, False),        # 2 × A100-40GB: 66 GiB of weights per GPU
    ("llama-3.1-70b-instruct", 80, 1, 8192, False),        # one H100 holds the weights of neither half
    ("qwen2.5-coder-32b-instruct", 40, 2, 16384, True),
    ("qwen2.5-coder-32b-instruct", 40, 2, 32768, False),  # 30.5 GiB weights leave 3.5; 32k tokens need 4
    ("bge-large-en-v1.5", 24, 1, None, True),              # an encoder: no KV cache at all
])
def test_memory_fit_table(model: str, gib: float, tp: int, ctx: int | None, fits: bool) -> None:
    c = memory_fit(_shape(model), gpu_memory_gib=gib, tensor_parallel=tp, max_model_len=ctx)
    assert c.ok is fits, c
    assert any("weights per GPU" in d for d in c.details), "the arithmetic is shown"


def test_a_refusal_shows_the_numbers() -> None:
    c = memory_fit(_shape("llama-3.1-70b-instruct"), gpu_memory_gib=40, tensor_parallel=2, max_model_len=8192)
    assert not c.ok
    # 70.6e9 × 2 B ÷ 2 = 65.8 GiB of weights against a 36 GiB budget.
    assert "65.8 GiB of weights per GPU" in c.summary and "36.0 GiB budget" in c.summary and "TP 2" in c.summary
    assert "budget per GPU = 40 GiB × 0.9 = 36.0 GiB" in c.details


def test_quantised_weights_make_a_model_fit() -> None:
    s = _shape("llama-3.1-70b-instruct")
    assert not memory_fit(s, gpu_memory_gib=80, tensor_parallel=1, max_model_len=8192).ok
    assert memory_fit(s, gpu_memory_gib=80, tensor_parallel=1, max_model_len=8192, precision="int4").ok


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tensor-parallel"):
        memory_fit(_shape("llama-3.1-8b-instruct"), gpu_memory_gib=24, tensor_parallel=0)
    with pytest.raises(ValueError, match="unknown precision"):
        memory_fit(_shape("llama-3.1-8b-instruct"), gpu_memory_gib=24, tensor_parallel=1, precision="fp3")


# ---- capacity --------------------------------------------------------------------------------------
def _nodes() -> list[NodeView]:
    pool = {"opsagent.dev/node-pool": "l4"}
    return [
        NodeView("l4-0", pool, 1, (GPU_TAINT,)),
        NodeView("l4-1", pool, 1, (GPU_TAINT,)),
        NodeView("l4-2", pool, 1, (GPU_TAINT,), unschedulable=True),  # cordoned: its free GPU does not count
        NodeView("a100-0", {"opsagent.dev/node-pool": "a100"}, 8, (GPU_TAINT,)),
        NodeView("l4-untainted-other", {"opsagent.dev/node-pool": "l4", "dedicated": "x"}, 1,
                 (Taint("dedicated", "NoSchedule", "x"),)),  # a taint the pod does not tolerate
    ]


def test_capacity_counts_only_nodes_the_pod_can_land_on() -> None:
    pod = PodShape(gpus=1, node_selector={"opsagent.dev/node-pool": "l4"}, tolerations=(TOLERATE_GPU,))
    pods = [PodView("chat-0", "llm-prod", "l4-0", 1, "Running")]
    assert capacity(pod, 1, _nodes(), pods).ok  # l4-1 is free
    c = capacity(pod, 2, _nodes(), pods)
    assert not c.ok
    assert "room for 1 pod(s)" in c.summary and "2 GPUs" in c.summary


def test_capacity_reports_pending_gpu_pods() -> None:
    pod = PodShape(gpus=1, node_selector={"opsagent.dev/node-pool": "l4"}, tolerations=(TOLERATE_GPU,))
    pods = [PodView("a", "llm-prod", "l4-0", 1, "Running"), PodView("b", "llm-prod", "l4-1", 1, "Running"),
            PodView("stuck", "llm-prod", "", 1, "Pending")]
    c = capacity(pod, 1, _nodes(), pods)
    assert not c.ok and "1 GPU pod(s) already Pending" in c.summary
    assert any("llm-prod/stuck" in d for d in c.details)


def test_a_pod_needing_more_gpus_than_any_node_has_free_does_not_fit_across_nodes() -> None:
    pod = PodShape(gpus=2, node_selector={"opsagent.dev/node-pool": "l4"}, tolerations=(TOLERATE_GPU,))
    assert not capacity(pod, 1, _nodes(), []).ok  # two free L4s, but on two nodes


def test_without_the_toleration_no_gpu_node_is_eligible() -> None:
    pod = PodShape(gpus=1, node_selector={"opsagent.dev/node-pool": "a100"})
    assert not capacity(pod, 1, _nodes(), []).ok
    assert capacity(PodShape(gpus=1, node_selector={"opsagent.dev/node-pool": "a100"},
                             tolerations=(TOLERATE_GPU,)), 8, _nodes(), []).ok


def test_max_surge_is_bounded_by_free_gpus() -> None:
    pod = PodShape(gpus=1, node_selector={"opsagent.dev/node-pool": "a100"}, tolerations=(TOLERATE_GPU,))
    pods = [PodView(f"p{i}", "code", "a100-0", 1, "Running") for i in range(5)]
    assert max_surge_that_fits(pod, _nodes(), pods, cap=10) == 3
    assert surge_pods(10, strategy="canary", canary_weight=10, max_surge=1) == 1
    assert surge_pods(4, strategy="rolling", max_surge=2) == 2


# ---- cost and soak ---------------------------------------------------------------------------------
def test_cost_change_of_a_gpu_class_move() -> None:
    catalog = PriceCatalog.load(DEFAULT_CATALOG)
    c = cost_change(catalog, before_instance="p4d.24xlarge", before_gpus=1, after_instance="g6.2xlarge",
                    after_gpus=1, replicas=2)
    # A100-40GB: 21.96 / 8 = 2.745 $/GPU-h; L4: 0.98 $/GPU-h; 2 replicas × 730 h.
    assert c.summary.startswith("−$2,577/month"), c.summary
    with pytest.raises(ValueError, match="not in the price catalog"):
        cost_change(catalog, before_instance="x1.nope", before_gpus=1, after_instance="g6.2xlarge", after_gpus=1,
                    replicas=1)


def test_staging_soak_counts_back_while_within_slo() -> None:
    now = 100_000.0
    good = [(now - i * 60, 0.3, 0.001) for i in range(0, 180)]  # three hours, every minute
    assert staging_soak(good, ttft_p95_max_s=0.5, error_share_max=0.01, required_s=2 * 3600, now=now, step_s=60).ok
    breached = [(t, 0.9 if t < now - 3600 else ttft, e) for t, ttft, e in good]
    c = staging_soak(breached, ttft_p95_max_s=0.5, error_share_max=0.01, required_s=2 * 3600, now=now, step_s=60)
    assert not c.ok and "TTFT p95 0.900" in c.summary
    assert "1.00 h" in c.summary


def test_missing_staging_data_never_counts_as_soaked() -> None:
    now = 100_000.0
    samples = [(now - i * 60, 0.3, 0.001) for i in range(0, 30)] + [(now - 40 * 60, None, None)]
    samples += [(now - i * 60, 0.3, 0.001) for i in range(41, 400)]
    c = staging_soak(samples, ttft_p95_max_s=0.5, error_share_max=0.01, required_s=3600, now=now, step_s=60)
    assert not c.ok, "a gap in the data ends the stretch"
    assert not staging_soak([], ttft_p95_max_s=0.5, error_share_max=0.01, required_s=1, now=now, step_s=60).ok


def test_a_preflight_with_one_failed_check_is_a_refusal_with_reasons() -> None:
    fit = memory_fit(_shape("llama-3.1-70b-instruct"), gpu_memory_gib=24, tensor_parallel=1, max_model_len=8192)
    room = capacity(PodShape(gpus=1), 1, [NodeView("n", {}, 1)], [])
    pf = Preflight((fit, room))
    assert not pf.ok
    assert [r.split(":")[0] for r in pf.reasons()] == ["GPU memory"]
    assert "❌ **GPU memory**" in pf.markdown() and "✅ **GPU capacity**" in pf.markdown()


def test_staging_soak_queries_select_the_version_through_kube_pod_labels() -> None:
    ttft, share = staging_soak_queries("llm-staging", "chat-lite", '2025.09.0"} or vector(1) #')
    assert ttft.startswith("histogram_quantile(0.95, ")
    assert 'label_model_version="2025.09.0\\"} or vector(1) #"' in ttft, "label values are escaped"
    for text in (ttft, share):
        assert "kube_pod_labels" in text and "on (namespace, pod) group_left ()" in text
    assert 'status="5xx"' in share


def test_nodes_and_pods_are_read_from_their_api_shape() -> None:
    from agent.change.preflight import node_view, pod_shape, pod_view

    node = node_view({"metadata": {"name": "l4-0", "labels": {"opsagent.dev/node-pool": "l4"}},
                      "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                      "status": {"allocatable": {"nvidia.com/gpu": "1"},
                                 "conditions": [{"type": "Ready", "status": "True"}]}})
    cordoned = node_view({"metadata": {"name": "l4-1", "labels": {"opsagent.dev/node-pool": "l4"}},
                          "spec": {"unschedulable": True},
                          "status": {"allocatable": {"nvidia.com/gpu": "1"},
                                     "conditions": [{"type": "Ready", "status": "True"}]}})
    template = {"nodeSelector": {"opsagent.dev/node-pool": "l4"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    shape_ = pod_shape(template)
    assert shape_.gpus == 1
    running = pod_view({"metadata": {"name": "a", "namespace": "llm-prod"},
                        "spec": {"nodeName": "l4-0", **template}, "status": {"phase": "Running"}})
    assert capacity(shape_, 1, [node, cordoned], []).ok
    refused = capacity(shape_, 1, [node, cordoned], [running])
    assert not refused.ok and "room for 0 pod(s)" in refused.summary
    with pytest.raises(ValueError, match="not a whole number"):
        pod_shape({"containers": [{"resources": {"requests": {"nvidia.com/gpu": "500m"}}}]})
