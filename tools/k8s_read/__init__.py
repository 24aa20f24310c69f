"""Kubernetes reads for triage: serving workloads, pods, events, rollout history, GPU nodes, HPAs.

Uses the read-only identity only (its kubeconfig comes in settings); writes live in `tools.k8s_write`,
reachable only through the guarded executor. Every answer is reduced for a model — bounded lists,
truncated text — and free text from the cluster (labels, annotations, messages, args) is typed
`UntrustedStr`. The reduction functions are pure, over API objects as JSON dicts, so they are tested
on objects built in the test.
"""
