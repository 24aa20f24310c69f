"""Prometheus: the PromQL builder, an async HTTP client, series summaries and the read tools.

Split by concern: `settings` (what the caller configures), `errors` (what can go wrong, retryable or
not), `promql` (building and rewriting expressions safely), `compat` (vLLM's renamed metrics),
`client` (HTTP, bounds on time and points), `summary` (what a model reads), `tools` (the ToolSpecs).
"""
