"""The sandbox's GPU fleet simulator: the metrics a real GPU serving fleet would export.

It reads what the sandbox cluster is really running (pods, nodes, the faults ConfigMap) and
derives, from a per-workload traffic curve and a per-(model version, GPU) performance model, the
series that vLLM, Triton, dcgm-exporter and kube-state-metrics would publish, plus CloudWatch
(ALB, Container Insights, logs). History is backfilled with the same model and label sets, so
backfilled and live samples join without a gap.

Only the sandbox starts it (`python -m deploy.sandbox.simulator`); nothing else imports it.
"""
