"""CloudWatch: metrics (GetMetricData) and log evidence (FilterLogEvents, Logs Insights).

Split by concern: `settings`, `errors`, `client` (boto3 clients built from settings, calls run in a
thread, errors wrapped), `metrics` (period choice, batching, pagination), `logs` (bounded log search and
Insights polling), `queries` (escaping for filter patterns and Insights), `tools` (the ToolSpecs).
"""
