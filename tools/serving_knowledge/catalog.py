"""The facts: serving metrics, their meanings, thresholds and renames; XID codes.

Names are as the projects publish them: vLLM `vllm/v1/metrics/loggers.py`, Triton
`docs/user_guide/metrics.md`, TGI's metrics reference, KServe `python/kserve/kserve/metrics.py`, the
DCGM exporter's `etc/default-counters.csv` and `etc/dcp-metrics-included.csv`, kube-state-metrics
`docs/metrics/`. Names change between releases: a rename is recorded in `renamed_from`, never by
dropping the old name. Thresholds say where they come from; where a number is a rule of thumb, it says so.
"""

from __future__ import annotations

from tools.serving_knowledge.models import (
    FailureMode,
    MetricInfo,
    MetricType,
    Rename,
    Source,
    Threshold,
    XidInfo,
)

F = FailureMode
GIE = "Gateway API Inference Extension saturation default"
RULE_OF_THUMB = "rule of thumb; tune per model and SLO"
VLLM_LABELS = ("model_name", "engine")
TRITON_LABELS = ("model", "version")
DCGM_LABELS = ("gpu", "UUID", "Hostname", "modelName", "namespace", "pod", "container")
NOT_DEFAULT = ("commented out in the DCGM exporter's default-counters.csv: enable it in the exporter's counter "
               "file, and read a missing series as 'not collected', never as healthy")

VLLM: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="vllm:kv_cache_usage_perc", source=Source.VLLM, type=MetricType.GAUGE, unit="ratio 0-1",
        renamed_from=(Rename(name="vllm:gpu_cache_usage_perc",
                             note="deprecated in vLLM 0.9, hidden by default in later releases"),),
        labels=VLLM_LABELS,
        reveals="Share of KV-cache blocks in use: the real demand signal, since vLLM pre-allocates GPU memory "
                "(--gpu-memory-utilization, default 0.9) and frame-buffer usage looks flat whatever the load.",
        failure_modes=(F.KV_CACHE_SATURATION, F.IDLE_GPUS),
        healthy="Below 0.8 at peak; near 0 with no traffic.",
        thresholds=(Threshold(level="warn", value=0.8, source=GIE),
                    Threshold(level="critical", value=0.95, source="near full: vLLM starts preempting sequences; "
                              + RULE_OF_THUMB)),
        query="max by (model_name) (vllm:kv_cache_usage_perc)",
    ),
    MetricInfo(
        name="vllm:num_requests_waiting", source=Source.VLLM, type=MetricType.GAUGE, unit="requests",
        labels=VLLM_LABELS,
        reveals="Requests queued for a scheduler slot. Rising while num_requests_running stays flat means the "
                "engine is at capacity (KV cache or max_num_seqs).",
        failure_modes=(F.KV_CACHE_SATURATION, F.AUTOSCALER_THRASH),
        healthy="0 most of the time; short bursts below 5.",
        thresholds=(Threshold(level="warn", value=5, source=GIE),),
        query="sum by (model_name) (vllm:num_requests_waiting)",
    ),
    MetricInfo(
        name="vllm:num_requests_running", source=Source.VLLM, type=MetricType.GAUGE, unit="requests",
        labels=VLLM_LABELS,
        reveals="Sequences in the running batch. Flat at a ceiling under rising demand: saturation. "
                "0 for hours on an allocated GPU: idle capacity.",
        failure_modes=(F.KV_CACHE_SATURATION, F.IDLE_GPUS),
        healthy="Tracks traffic; below max_num_seqs.",
        query="sum by (model_name) (vllm:num_requests_running)",
    ),
    MetricInfo(
        name="vllm:num_preemptions_total", source=Source.VLLM, type=MetricType.COUNTER, unit="preemptions",
        labels=VLLM_LABELS,
        reveals="Sequences evicted from the KV cache to be recomputed later: the cache is too small for the "
                "batch. A preemption storm multiplies time to first token.",
        failure_modes=(F.KV_CACHE_SATURATION,),
        healthy="Rate 0; occasional single preemptions are tolerable.",
        thresholds=(Threshold(level="warn", value=0, applies_to="rate over 5m, sustained",
                              source="any sustained preemption means KV pressure"),),
        query="sum by (model_name) (rate(vllm:num_preemptions_total[5m]))",
    ),
    MetricInfo(
        name="vllm:time_to_first_token_seconds", source=Source.VLLM, type=MetricType.HISTOGRAM, unit="seconds",
        labels=VLLM_LABELS,
        reveals="Queueing plus prefill: rises with saturation, a slower model or config, a lost prefix cache, "
                "or cold replicas after a scale-up (model load).",
        failure_modes=(F.KV_CACHE_SATURATION, F.BAD_ROLLOUT, F.PREFIX_CACHE_REGRESSION, F.AUTOSCALER_THRASH),
        healthy="p95 stable against the same hour yesterday; the absolute SLO depends on model and prompt size.",
        thresholds=(Threshold(level="warn", value=2.0, applies_to="p95 / same p95 a day earlier",
                              source="a doubling against yesterday; " + RULE_OF_THUMB),),
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
    ),
    MetricInfo(
        name="vllm:inter_token_latency_seconds", source=Source.VLLM, type=MetricType.HISTOGRAM, unit="seconds",
        renamed_from=(Rename(name="vllm:time_per_output_token_seconds",
                             note="older vLLM; newer releases deprecate it in favour of inter-token latency"),),
        labels=VLLM_LABELS,
        reveals="Decode speed per token. Up after a rollout with steady traffic: a slower model, precision or "
                "tensor-parallel change. Up with batch size: compute-bound GPU.",
        failure_modes=(F.BAD_ROLLOUT, F.WRONG_GPU_CLASS, F.THERMAL_THROTTLING),
        healthy="p95 flat across the day at a given batch size.",
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:inter_token_latency_seconds_bucket[5m])))",
    ),
    MetricInfo(
        name="vllm:e2e_request_latency_seconds", source=Source.VLLM, type=MetricType.HISTOGRAM, unit="seconds",
        labels=VLLM_LABELS,
        reveals="Whole-request latency; depends on output length, so compare like with like.",
        failure_modes=(F.BAD_ROLLOUT, F.KV_CACHE_SATURATION),
        healthy="p95 stable against the previous revision at the same traffic.",
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))",
    ),
    MetricInfo(
        name="vllm:request_queue_time_seconds", source=Source.VLLM, type=MetricType.HISTOGRAM, unit="seconds",
        labels=VLLM_LABELS,
        reveals="Time spent WAITING before scheduling: pure queueing, separating capacity from model speed.",
        failure_modes=(F.KV_CACHE_SATURATION, F.AUTOSCALER_THRASH),
        healthy="p95 near 0.",
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:request_queue_time_seconds_bucket[5m])))",
    ),
    MetricInfo(
        name="vllm:request_success_total", source=Source.VLLM, type=MetricType.COUNTER, unit="requests",
        labels=(*VLLM_LABELS, "finished_reason"),
        reveals="Finished requests by reason (stop, length, abort): the traffic rate, and a rise in aborts or "
                "length-truncations after a rollout.",
        failure_modes=(F.BAD_ROLLOUT, F.IDLE_GPUS, F.KV_CACHE_SATURATION),
        healthy="Rate follows the daily traffic pattern; aborts a small share.",
        query="sum by (model_name) (rate(vllm:request_success_total[5m]))",
    ),
    MetricInfo(
        name="vllm:prompt_tokens_total", source=Source.VLLM, type=MetricType.COUNTER, unit="tokens",
        labels=VLLM_LABELS,
        reveals="Prefill work. Steady prompt tokens with TTFT up and hit ratio down: a prefix-cache regression, "
                "not a load change.",
        failure_modes=(F.PREFIX_CACHE_REGRESSION, F.IDLE_GPUS),
        healthy="Follows traffic.",
        query="sum by (model_name) (rate(vllm:prompt_tokens_total[5m]))",
    ),
    MetricInfo(
        name="vllm:generation_tokens_total", source=Source.VLLM, type=MetricType.COUNTER, unit="tokens",
        labels=VLLM_LABELS,
        reveals="Decode throughput; tokens/s per GPU is the efficiency figure for right-sizing.",
        failure_modes=(F.WRONG_GPU_CLASS, F.IDLE_GPUS),
        healthy="Follows traffic; per-GPU throughput comparable to the model's benchmark.",
        query="sum by (model_name) (rate(vllm:generation_tokens_total[5m]))",
    ),
    MetricInfo(
        name="vllm:prefix_cache_queries_total", source=Source.VLLM, type=MetricType.COUNTER, unit="tokens",
        renamed_from=(Rename(name="vllm:gpu_prefix_cache_queries_total",
                             note="deprecated in vLLM 0.9 (renamed vllm:prefix_cache_queries)"),),
        labels=VLLM_LABELS,
        reveals="Prompt tokens looked up in the prefix cache; the denominator of the hit ratio.",
        failure_modes=(F.PREFIX_CACHE_REGRESSION,),
        healthy="Follows prompt tokens.",
        query="sum by (model_name) (rate(vllm:prefix_cache_queries_total[5m]))",
    ),
    MetricInfo(
        name="vllm:prefix_cache_hits_total", source=Source.VLLM, type=MetricType.COUNTER, unit="tokens",
        renamed_from=(Rename(name="vllm:gpu_prefix_cache_hits_total",
                             note="deprecated in vLLM 0.9 (renamed vllm:prefix_cache_hits)"),),
        labels=VLLM_LABELS,
        reveals="Prompt tokens served from the prefix cache. Hit ratio = rate(hits) / rate(queries); a drop after "
                "a config change (prefix caching off, a changed chat template or system prompt) raises TTFT.",
        failure_modes=(F.PREFIX_CACHE_REGRESSION,),
        healthy="Hit ratio stable; its level depends on how much prompts share (system prompts, multi-turn chat).",
        thresholds=(Threshold(level="warn", value=0.5, side="below", applies_to="hit ratio / same ratio a day earlier",
                              source="halved against yesterday; " + RULE_OF_THUMB),),
        query="sum(rate(vllm:prefix_cache_hits_total[5m])) / sum(rate(vllm:prefix_cache_queries_total[5m]))",
    ),
    MetricInfo(
        name="vllm:cache_config_info", source=Source.VLLM, type=MetricType.INFO, unit="info (value 1)",
        labels=("block_size", "gpu_memory_utilization", "num_gpu_blocks", "enable_prefix_caching", "engine"),
        reveals="The engine's cache configuration as labels: a change in num_gpu_blocks or "
                "enable_prefix_caching across a rollout explains KV or prefix-cache behaviour.",
        failure_modes=(F.KV_CACHE_SATURATION, F.PREFIX_CACHE_REGRESSION, F.BAD_ROLLOUT),
        healthy="Unchanged across rollouts unless intended.",
        query="vllm:cache_config_info",
    ),
)

TRITON: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="nv_inference_request_success", source=Source.TRITON, type=MetricType.COUNTER, unit="requests",
        labels=TRITON_LABELS,
        reveals="Successful inference requests per model and version: the traffic rate.",
        failure_modes=(F.IDLE_GPUS, F.BAD_ROLLOUT),
        healthy="Follows traffic.",
        query="sum by (model) (rate(nv_inference_request_success[5m]))",
        caveats=("Triton counters carry no _total suffix.",),
    ),
    MetricInfo(
        name="nv_inference_request_failure", source=Source.TRITON, type=MetricType.COUNTER, unit="requests",
        labels=(*TRITON_LABELS, "reason"),
        reveals="Failed requests; a jump at a new model version points at the rollout, at start-up with crash "
                "loops at GPU memory.",
        failure_modes=(F.BAD_ROLLOUT, F.GPU_OOM),
        healthy="Failure share near 0.",
        thresholds=(Threshold(level="warn", value=0.01, applies_to="failure / (success + failure) over 5m",
                              source="Flagger's default success-rate check is 99%"),),
        query="sum by (model) (rate(nv_inference_request_failure[5m])) / (sum by (model) "
              "(rate(nv_inference_request_success[5m])) + sum by (model) (rate(nv_inference_request_failure[5m])))",
    ),
    MetricInfo(
        name="nv_inference_count", source=Source.TRITON, type=MetricType.COUNTER, unit="inferences",
        labels=TRITON_LABELS,
        reveals="Inferences performed (a request of batch size 8 counts 8). Divided by nv_inference_exec_count "
                "it gives the average batch size dynamic batching achieves.",
        failure_modes=(F.TRITON_BATCHING,),
        healthy="Average batch size near the configured preferred batch size under load.",
        query="sum by (model) (rate(nv_inference_count[5m])) / sum by (model) (rate(nv_inference_exec_count[5m]))",
    ),
    MetricInfo(
        name="nv_inference_exec_count", source=Source.TRITON, type=MetricType.COUNTER, unit="executions",
        labels=TRITON_LABELS,
        reveals="Model executions (batches). Equal to the request count when no batching happens.",
        failure_modes=(F.TRITON_BATCHING,),
        healthy="Below nv_inference_count under load (batches form).",
        query="sum by (model) (rate(nv_inference_exec_count[5m]))",
    ),
    MetricInfo(
        name="nv_inference_request_duration_us", source=Source.TRITON, type=MetricType.COUNTER,
        unit="microseconds, cumulative", labels=TRITON_LABELS,
        reveals="Total end-to-end request time. Average latency = its rate / the request rate.",
        failure_modes=(F.BAD_ROLLOUT, F.TRITON_BATCHING),
        healthy="Average stable against the previous model version.",
        query="sum by (model) (rate(nv_inference_request_duration_us[5m])) / "
              "sum by (model) (rate(nv_inference_request_success[5m]))",
        caveats=("A cumulative counter, not a histogram: no percentiles, only averages.",),
    ),
    MetricInfo(
        name="nv_inference_queue_duration_us", source=Source.TRITON, type=MetricType.COUNTER,
        unit="microseconds, cumulative", labels=TRITON_LABELS,
        reveals="Time requests wait in the scheduler queue. Queue time large against compute time: too few "
                "instances or a max_queue_delay that is too long.",
        failure_modes=(F.TRITON_BATCHING,),
        healthy="Queue time a small fraction of compute time.",
        query="sum by (model) (rate(nv_inference_queue_duration_us[5m])) / "
              "sum by (model) (rate(nv_inference_compute_infer_duration_us[5m]))",
    ),
    MetricInfo(
        name="nv_inference_compute_infer_duration_us", source=Source.TRITON, type=MetricType.COUNTER,
        unit="microseconds, cumulative", labels=TRITON_LABELS,
        reveals="Time spent executing the model: the compute side of queue-versus-compute.",
        failure_modes=(F.TRITON_BATCHING, F.BAD_ROLLOUT, F.WRONG_GPU_CLASS),
        healthy="Per-inference compute time stable.",
        query="sum by (model) (rate(nv_inference_compute_infer_duration_us[5m])) / "
              "sum by (model) (rate(nv_inference_exec_count[5m]))",
    ),
    MetricInfo(
        name="nv_inference_pending_request_count", source=Source.TRITON, type=MetricType.GAUGE, unit="requests",
        labels=TRITON_LABELS,
        reveals="Requests received and not yet executing: Triton's queue depth.",
        failure_modes=(F.TRITON_BATCHING, F.AUTOSCALER_THRASH),
        healthy="Near 0; bursts drain quickly.",
        thresholds=(Threshold(level="warn", value=5, source=GIE + " (queue depth), applied to Triton"),),
        query="sum by (model) (nv_inference_pending_request_count)",
    ),
    MetricInfo(
        name="nv_gpu_memory_used_bytes", source=Source.TRITON, type=MetricType.GAUGE, unit="bytes",
        labels=("gpu_uuid",),
        reveals="GPU memory used as Triton sees it; against nv_gpu_memory_total_bytes near 1 with failures at "
                "model load: out of GPU memory.",
        failure_modes=(F.GPU_OOM,),
        healthy="Headroom left after all model instances load.",
        query="nv_gpu_memory_used_bytes / nv_gpu_memory_total_bytes",
    ),
    MetricInfo(
        name="nv_gpu_utilization", source=Source.TRITON, type=MetricType.GAUGE, unit="ratio 0-1",
        labels=("gpu_uuid",),
        reveals="GPU busy fraction as Triton samples it.",
        failure_modes=(F.IDLE_GPUS,),
        healthy="Follows traffic.",
        query="avg by (gpu_uuid) (nv_gpu_utilization)",
    ),
)

TGI: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="tgi_queue_size", source=Source.TGI, type=MetricType.GAUGE, unit="requests",
        reveals="Requests waiting for a batch slot: TGI's saturation signal.",
        failure_modes=(F.KV_CACHE_SATURATION, F.AUTOSCALER_THRASH),
        healthy="Near 0.",
        thresholds=(Threshold(level="warn", value=5, source=GIE + " (queue depth), applied to TGI"),),
        query="sum(tgi_queue_size)",
    ),
    MetricInfo(
        name="tgi_request_queue_duration", source=Source.TGI, type=MetricType.HISTOGRAM, unit="seconds",
        reveals="Time a request waits in the queue before its first batch.",
        failure_modes=(F.KV_CACHE_SATURATION,),
        healthy="p95 near 0.",
        query="histogram_quantile(0.95, sum by (le) (rate(tgi_request_queue_duration_bucket[5m])))",
    ),
    MetricInfo(
        name="tgi_request_duration", source=Source.TGI, type=MetricType.HISTOGRAM, unit="seconds",
        reveals="End-to-end request latency.",
        failure_modes=(F.BAD_ROLLOUT, F.KV_CACHE_SATURATION),
        healthy="p95 stable against the previous version.",
        query="histogram_quantile(0.95, sum by (le) (rate(tgi_request_duration_bucket[5m])))",
    ),
    MetricInfo(
        name="tgi_request_mean_time_per_token_duration", source=Source.TGI, type=MetricType.HISTOGRAM,
        unit="seconds",
        reveals="Mean decode time per token of each request (TGI's inter-token latency).",
        failure_modes=(F.BAD_ROLLOUT, F.WRONG_GPU_CLASS),
        healthy="Stable at a given batch size.",
        query="histogram_quantile(0.95, sum by (le) (rate(tgi_request_mean_time_per_token_duration_bucket[5m])))",
    ),
    MetricInfo(
        name="tgi_batch_current_size", source=Source.TGI, type=MetricType.GAUGE, unit="requests",
        reveals="Requests in the running batch.",
        failure_modes=(F.IDLE_GPUS, F.KV_CACHE_SATURATION),
        healthy="Follows traffic.",
        query="sum(tgi_batch_current_size)",
    ),
    MetricInfo(
        name="tgi_request_failure", source=Source.TGI, type=MetricType.COUNTER, unit="requests",
        labels=("err",),
        reveals="Failed requests by error kind.",
        failure_modes=(F.BAD_ROLLOUT, F.GPU_OOM),
        healthy="Near 0.",
        query="sum by (err) (rate(tgi_request_failure[5m]))",
    ),
)

KSERVE: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="request_predict_seconds", source=Source.KSERVE, type=MetricType.HISTOGRAM, unit="seconds",
        labels=("model_name",),
        reveals="Time in the predictor's predict step (KServe Python model server).",
        failure_modes=(F.BAD_ROLLOUT,),
        healthy="p95 stable against the previous revision.",
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(request_predict_seconds_bucket[5m])))",
        caveats=("KServe also exports request_preprocess_seconds, request_postprocess_seconds and "
                 "request_explain_seconds; a regression in pre/post-processing shows there, not here.",),
    ),
    MetricInfo(
        name="request_preprocess_seconds", source=Source.KSERVE, type=MetricType.HISTOGRAM, unit="seconds",
        labels=("model_name",),
        reveals="Time in the transformer's preprocess step.",
        failure_modes=(F.BAD_ROLLOUT,),
        healthy="Small against predict time.",
        query="histogram_quantile(0.95, sum by (le, model_name) (rate(request_preprocess_seconds_bucket[5m])))",
    ),
)

DCGM: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="DCGM_FI_DEV_GPU_UTIL", source=Source.DCGM, type=MetricType.GAUGE, unit="percent 0-100",
        labels=DCGM_LABELS,
        reveals="Share of time a kernel ran on the GPU. Coarse: one tiny kernel counts as busy.",
        failure_modes=(F.IDLE_GPUS,),
        healthy="Follows traffic; near 0 for hours on an allocated GPU means idle spend.",
        thresholds=(Threshold(level="warn", value=5, side="below", applies_to="average over a day",
                              source="idle GPU; " + RULE_OF_THUMB),),
        query="avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)",
        caveats=("Not available on MIG slices: use DCGM_FI_PROF_GR_ENGINE_ACTIVE there.",),
    ),
    MetricInfo(
        name="DCGM_FI_PROF_GR_ENGINE_ACTIVE", source=Source.DCGM, type=MetricType.GAUGE, unit="ratio 0-1",
        labels=DCGM_LABELS,
        reveals="Share of time the graphics/compute engine was active: the better utilization signal, works on "
                "MIG (OpenCost moved to it).",
        failure_modes=(F.IDLE_GPUS, F.WRONG_GPU_CLASS),
        healthy="Follows traffic; under 0.05 all day on an allocated GPU means idle spend.",
        thresholds=(Threshold(level="warn", value=0.05, side="below", applies_to="average over a day",
                              source="idle GPU; " + RULE_OF_THUMB),),
        query="avg by (namespace, pod) (DCGM_FI_PROF_GR_ENGINE_ACTIVE)",
        caveats=("A profiling (DCP) field: listed in dcp-metrics-included.csv, not in default-counters.csv; "
                 "needs a GPU that supports profiling metrics.",),
    ),
    MetricInfo(
        name="DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", source=Source.DCGM, type=MetricType.GAUGE, unit="ratio 0-1",
        labels=DCGM_LABELS,
        reveals="Share of cycles the tensor cores were busy. Low while the engine is busy: the model does not use "
                "tensor cores (precision, kernels) or the GPU class is wrong for it.",
        failure_modes=(F.WRONG_GPU_CLASS,),
        healthy="Substantial under load for transformer inference.",
        query="avg by (namespace, pod) (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE)",
        caveats=("Profiling (DCP) field; see DCGM_FI_PROF_GR_ENGINE_ACTIVE.",),
    ),
    MetricInfo(
        name="DCGM_FI_PROF_DRAM_ACTIVE", source=Source.DCGM, type=MetricType.GAUGE, unit="ratio 0-1",
        labels=DCGM_LABELS,
        reveals="Share of cycles device memory was busy: high means memory-bandwidth bound (typical of decode).",
        failure_modes=(F.WRONG_GPU_CLASS,),
        healthy="High during decode-heavy load is normal.",
        query="avg by (namespace, pod) (DCGM_FI_PROF_DRAM_ACTIVE)",
        caveats=("Profiling (DCP) field; see DCGM_FI_PROF_GR_ENGINE_ACTIVE.",),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_FB_FREE", source=Source.DCGM, type=MetricType.GAUGE, unit="MiB",
        labels=DCGM_LABELS,
        reveals="Free frame-buffer memory. Near 0 with crash-looping pods: GPU out of memory.",
        failure_modes=(F.GPU_OOM,),
        healthy="Flat for vLLM (it pre-allocates); some headroom for other servers.",
        query="min by (Hostname, gpu) (DCGM_FI_DEV_FB_FREE)",
        caveats=("vLLM reserves --gpu-memory-utilization (default 0.9) of memory at start, so usage is flat "
                 "whatever the load: demand shows in vllm:kv_cache_usage_perc.",),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_FB_USED", source=Source.DCGM, type=MetricType.GAUGE, unit="MiB",
        labels=DCGM_LABELS,
        reveals="Used frame-buffer memory; with FB_FREE gives the GPU's memory size.",
        failure_modes=(F.GPU_OOM, F.WRONG_GPU_CLASS),
        healthy="Below the GPU's memory with headroom.",
        query="max by (Hostname, gpu) (DCGM_FI_DEV_FB_USED)",
        caveats=("Flat for vLLM by design; see DCGM_FI_DEV_FB_FREE.",),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_XID_ERRORS", source=Source.DCGM, type=MetricType.GAUGE, unit="XID code",
        labels=DCGM_LABELS,
        reveals="The last XID error code the driver reported for the GPU (see the XID table). Hardware codes "
                "(48, 63/64, 79, 92-95) point at the node, not the model: cordon and drain, never roll back.",
        failure_modes=(F.GPU_HARDWARE, F.GPU_LOST),
        healthy="0 (no XID since the exporter started).",
        thresholds=(Threshold(level="critical", value=0, source="any non-zero value is an XID; its code says "
                              "how serious"),),
        query="max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS) > 0",
        caveats=("A gauge holding the last XID value, not a counter: rate() and increase() are meaningless, and "
                 "a second XID of the same code does not change it.",
                 "A GPU that fell off the bus (XID 79) may stop reporting at all: absent series are evidence too."),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_GPU_TEMP", source=Source.DCGM, type=MetricType.GAUGE, unit="degrees Celsius",
        labels=DCGM_LABELS,
        reveals="GPU temperature; with falling SM clocks under steady load, thermal throttling.",
        failure_modes=(F.THERMAL_THROTTLING,),
        healthy="Well below the product's slowdown temperature (typically mid-80s °C for data-centre GPUs).",
        thresholds=(Threshold(level="warn", value=85, source="approximate slowdown region; check the product's "
                              "nvidia-smi -q slowdown temperature"),),
        query="max by (Hostname, gpu) (DCGM_FI_DEV_GPU_TEMP)",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_POWER_USAGE", source=Source.DCGM, type=MetricType.GAUGE, unit="watts",
        labels=DCGM_LABELS,
        reveals="Power draw; pinned at the power limit with falling clocks: power capping.",
        failure_modes=(F.THERMAL_THROTTLING, F.IDLE_GPUS),
        healthy="Below the board power limit; idle draw when there is no traffic.",
        query="max by (Hostname, gpu) (DCGM_FI_DEV_POWER_USAGE)",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_SM_CLOCK", source=Source.DCGM, type=MetricType.GAUGE, unit="MHz",
        labels=DCGM_LABELS,
        reveals="SM clock. Falling under steady load while temperature or power is high: throttling, an "
                "infrastructure problem rather than the application's.",
        failure_modes=(F.THERMAL_THROTTLING,),
        healthy="Near the boost clock under load.",
        query="min by (Hostname, gpu) (DCGM_FI_DEV_SM_CLOCK)",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_PCIE_REPLAY_COUNTER", source=Source.DCGM, type=MetricType.COUNTER, unit="retries",
        labels=DCGM_LABELS,
        reveals="PCIe link retries; a rising count is a flaky link, often before the GPU falls off the bus.",
        failure_modes=(F.GPU_HARDWARE, F.GPU_LOST),
        healthy="Flat.",
        query="increase(DCGM_FI_DEV_PCIE_REPLAY_COUNTER[1h]) > 0",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", source=Source.DCGM, type=MetricType.COUNTER, unit="rows",
        labels=DCGM_LABELS,
        reveals="Memory rows remapped after uncorrectable errors (A100 and later).",
        failure_modes=(F.GPU_HARDWARE,),
        healthy="0; any growth means failing memory.",
        query="increase(DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS[1d]) > 0",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_ROW_REMAP_FAILURE", source=Source.DCGM, type=MetricType.GAUGE, unit="boolean",
        labels=DCGM_LABELS,
        reveals="1 when row remapping has failed: the GPU can no longer protect itself from bad memory.",
        failure_modes=(F.GPU_HARDWARE,),
        healthy="0.",
        thresholds=(Threshold(level="critical", value=0, source="1 means replace the GPU"),),
        query="max by (Hostname, gpu) (DCGM_FI_DEV_ROW_REMAP_FAILURE) > 0",
    ),
    MetricInfo(
        name="DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", source=Source.DCGM, type=MetricType.COUNTER, unit="errors",
        labels=DCGM_LABELS,
        reveals="Double-bit (uncorrectable) ECC errors since the last driver load (XID 48 territory).",
        failure_modes=(F.GPU_HARDWARE,),
        healthy="0.",
        query="increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[1h]) > 0",
        enabled_by_default=False, caveats=(NOT_DEFAULT,),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_RETIRED_DBE", source=Source.DCGM, type=MetricType.COUNTER, unit="pages",
        labels=DCGM_LABELS,
        reveals="Pages retired after double-bit errors (pre-A100 GPUs; later ones remap rows).",
        failure_modes=(F.GPU_HARDWARE,),
        healthy="0.",
        query="DCGM_FI_DEV_RETIRED_DBE > 0",
        enabled_by_default=False, caveats=(NOT_DEFAULT,),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", source=Source.DCGM, type=MetricType.COUNTER,
        unit="errors", labels=DCGM_LABELS,
        reveals="NVLink flow-control CRC errors: a degraded link slows tensor-parallel models.",
        failure_modes=(F.GPU_HARDWARE,),
        healthy="Flat.",
        query="increase(DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL[1h]) > 0",
        enabled_by_default=False, caveats=(NOT_DEFAULT,),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_POWER_VIOLATION", source=Source.DCGM, type=MetricType.COUNTER,
        unit="microseconds throttled", labels=DCGM_LABELS,
        reveals="Time clocks were held down by the power limit.",
        failure_modes=(F.THERMAL_THROTTLING,),
        healthy="Flat.",
        query="rate(DCGM_FI_DEV_POWER_VIOLATION[5m]) / 1e6",
        enabled_by_default=False, caveats=(NOT_DEFAULT,),
    ),
    MetricInfo(
        name="DCGM_FI_DEV_THERMAL_VIOLATION", source=Source.DCGM, type=MetricType.COUNTER,
        unit="microseconds throttled", labels=DCGM_LABELS,
        reveals="Time clocks were held down by temperature.",
        failure_modes=(F.THERMAL_THROTTLING,),
        healthy="Flat.",
        query="rate(DCGM_FI_DEV_THERMAL_VIOLATION[5m]) / 1e6",
        enabled_by_default=False, caveats=(NOT_DEFAULT,),
    ),
)

KSM_POD = ("namespace", "pod", "container")
KUBE_STATE_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="kube_pod_container_status_restarts_total", source=Source.KUBE_STATE_METRICS,
        type=MetricType.COUNTER, unit="restarts", labels=KSM_POD,
        reveals="Container restarts; rising with CrashLoopBackOff after a rollout: the new version cannot start "
                "(often GPU out of memory at model load).",
        failure_modes=(F.GPU_OOM, F.BAD_ROLLOUT),
        healthy="Flat.",
        query="increase(kube_pod_container_status_restarts_total[15m]) > 0",
    ),
    MetricInfo(
        name="kube_pod_container_status_last_terminated_reason", source=Source.KUBE_STATE_METRICS,
        type=MetricType.GAUGE, unit="info (value 1)", labels=(*KSM_POD, "reason"),
        reveals="Why the container last stopped. reason=OOMKilled is the kernel enforcing the container's host "
                "memory limit; a CUDA out-of-memory error exits with reason=Error (exit code 1) instead.",
        failure_modes=(F.GPU_OOM,),
        healthy="No series with reason OOMKilled or Error for serving containers.",
        query="kube_pod_container_status_last_terminated_reason{reason=~\"OOMKilled|Error\"}",
    ),
    MetricInfo(
        name="kube_pod_container_status_waiting_reason", source=Source.KUBE_STATE_METRICS,
        type=MetricType.GAUGE, unit="info (value 1)", labels=(*KSM_POD, "reason"),
        reveals="Why a container is waiting: CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError.",
        failure_modes=(F.GPU_OOM, F.BAD_ROLLOUT),
        healthy="No CrashLoopBackOff or ImagePullBackOff.",
        query="sum by (namespace, reason) (kube_pod_container_status_waiting_reason)",
    ),
    MetricInfo(
        name="kube_deployment_status_replicas_unavailable", source=Source.KUBE_STATE_METRICS,
        type=MetricType.GAUGE, unit="replicas", labels=("namespace", "deployment"),
        reveals="Replicas not available; non-zero during and after a stuck rollout.",
        failure_modes=(F.BAD_ROLLOUT, F.GPU_OOM, F.GPU_LOST),
        healthy="0 outside rollouts.",
        query="kube_deployment_status_replicas_unavailable > 0",
    ),
    MetricInfo(
        name="kube_deployment_status_replicas_updated", source=Source.KUBE_STATE_METRICS,
        type=MetricType.GAUGE, unit="replicas", labels=("namespace", "deployment"),
        reveals="Replicas on the newest pod template; its step change dates a rollout.",
        failure_modes=(F.BAD_ROLLOUT,),
        healthy="Equal to spec replicas outside rollouts.",
        query="kube_deployment_status_replicas_updated",
    ),
    MetricInfo(
        name="kube_horizontalpodautoscaler_status_desired_replicas", source=Source.KUBE_STATE_METRICS,
        type=MetricType.GAUGE, unit="replicas", labels=("namespace", "horizontalpodautoscaler"),
        reveals="What the HPA wants. Many changes in 30 minutes: thrash; pinned at max_replicas: capacity "
                "exhausted.",
        failure_modes=(F.AUTOSCALER_THRASH, F.KV_CACHE_SATURATION),
        healthy="A few changes per day following traffic.",
        thresholds=(Threshold(level="warn", value=4, applies_to="changes() over 30m",
                              source="flapping; " + RULE_OF_THUMB),),
        query="changes(kube_horizontalpodautoscaler_status_desired_replicas[30m])",
        caveats=("Compare with kube_horizontalpodautoscaler_spec_max_replicas to see if the HPA is maxed out.",),
    ),
    MetricInfo(
        name="kube_node_status_allocatable", source=Source.KUBE_STATE_METRICS, type=MetricType.GAUGE,
        unit="resource units", labels=("node", "resource", "unit"),
        reveals="Allocatable resources per node. For resource=\"nvidia_com_gpu\", below capacity means the device "
                "plugin lost GPUs (often XID 79).",
        failure_modes=(F.GPU_LOST,),
        healthy="Allocatable GPUs equal capacity.",
        query="kube_node_status_capacity{resource=\"nvidia_com_gpu\"} - "
              "kube_node_status_allocatable{resource=\"nvidia_com_gpu\"} > 0",
        caveats=("kube-state-metrics writes nvidia.com/gpu as nvidia_com_gpu in the resource label.",),
    ),
    MetricInfo(
        name="kube_pod_container_resource_requests", source=Source.KUBE_STATE_METRICS, type=MetricType.GAUGE,
        unit="resource units", labels=(*KSM_POD, "node", "resource", "unit"),
        reveals="Requested resources; resource=\"nvidia_com_gpu\" is GPU allocation, the basis of GPU cost and "
                "of idle-GPU findings when joined with DCGM activity.",
        failure_modes=(F.IDLE_GPUS,),
        healthy="Requests match what the model needs.",
        query="sum by (namespace) (kube_pod_container_resource_requests{resource=\"nvidia_com_gpu\"})",
    ),
    MetricInfo(
        name="kube_pod_status_unschedulable", source=Source.KUBE_STATE_METRICS, type=MetricType.GAUGE,
        unit="boolean", labels=("namespace", "pod"),
        reveals="Pods the scheduler cannot place; with 'Insufficient nvidia.com/gpu' events: GPUs lost or the "
                "pool is full.",
        failure_modes=(F.GPU_LOST, F.AUTOSCALER_THRASH),
        healthy="0.",
        query="sum by (namespace) (kube_pod_status_unschedulable)",
    ),
)

METRICS: tuple[MetricInfo, ...] = (*VLLM, *TRITON, *TGI, *KSERVE, *DCGM, *KUBE_STATE_METRICS)

XIDS: tuple[XidInfo, ...] = (
    XidInfo(code=13, meaning="Graphics engine exception", blame="application_or_driver",
            action="Usually the application (out-of-range access); check the pod's logs. Repeated across pods on "
                   "one GPU: run diagnostics."),
    XidInfo(code=31, meaning="GPU memory page fault", blame="application_or_driver",
            action="Usually an illegal memory access by the application; roll back if it began with a rollout."),
    XidInfo(code=43, meaning="GPU stopped processing (a channel was reset after a fault)", blame="application",
            action="The application's context faulted; the GPU itself stays usable."),
    XidInfo(code=45, meaning="Preemptive cleanup after a previous error", blame="driver",
            action="Follows another XID; look for the first one."),
    XidInfo(code=46, meaning="GPU stopped processing", blame="hardware_or_driver",
            action="Drain the node and reset the GPU; escalate if it recurs."),
    XidInfo(code=48, meaning="Double-bit ECC error (uncorrectable memory error)", blame="hardware",
            action="Drain the node, reset the GPU; recurrence means replacement."),
    XidInfo(code=63, meaning="ECC page retirement or row-remapping recording event", blame="hardware",
            action="Memory was retired or remapped; takes effect after a GPU reset. Drain and reset when "
                   "convenient; watch for recurrence."),
    XidInfo(code=64, meaning="ECC page retirement or row-remapper recording failure", blame="hardware",
            action="The GPU could not protect itself from bad memory: drain the node and plan a replacement."),
    XidInfo(code=74, meaning="NVLink error", blame="hardware",
            action="Drain; reset the GPUs on the node; check NVLink counters; replace on recurrence."),
    XidInfo(code=79, meaning="GPU has fallen off the bus", blame="hardware",
            action="The node lost the GPU (allocatable drops, DCGM series vanish): cordon and drain, reboot or "
                   "replace the node. Never a model rollback."),
    XidInfo(code=92, meaning="High single-bit ECC error rate", blame="hardware",
            action="Memory degrading: schedule a drain and diagnostics."),
    XidInfo(code=94, meaning="Contained ECC error (uncorrectable, contained to the affected application)",
            blame="hardware", action="Restart the affected workload; drain and reset the GPU if it recurs."),
    XidInfo(code=95, meaning="Uncontained ECC error", blame="hardware",
            action="Every application on the GPU is affected: drain the node and reset the GPU."),
)

# The inference-gateway saturation defaults, used across the catalog.
QUEUE_DEPTH_SATURATED = 5
KV_CACHE_SATURATED = 0.8
