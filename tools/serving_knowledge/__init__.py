"""What serving metrics mean: vLLM (old and new names), Triton, TGI, KServe, DCGM, kube-state-metrics.

One place, as typed frozen data (`catalog`), so runbooks, the Prometheus tools (vLLM renames) and a
model asking "what does this metric tell me?" all read the same facts.
"""
