"""Tools the agent uses: one module per integration or domain capability.

Tools read (Prometheus, CloudWatch, Kubernetes) or describe changes; they never check policy, write
audit or ask for approval — the agent's guarded runner does that for every call. Nothing here imports
the agent, an entry point or the sandbox.
"""
