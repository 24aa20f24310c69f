"""The local GPU-serving sandbox: real Kubernetes control plane, KWOK GPU nodes, Prometheus,
Alertmanager, moto's CloudWatch and a fleet simulator, all on 127.0.0.1.

Nothing here is imported by the agent: the agent reaches the sandbox only through its endpoints,
as it would reach a real cluster.
"""
