"""Deployment assets and the local sandbox (a real control plane, Prometheus and a fleet simulator)."""
