"""What can go wrong talking to Prometheus, split into retryable and permanent.

Every message names what was tried (the query and its time range) and what Prometheus said (HTTP
status, error type, an excerpt of the body), so a model can correct a bad query by itself.
"""

from __future__ import annotations

from tools.base import ToolError, ToolUnavailable


class PrometheusError(ToolError):
    """Base for every Prometheus failure."""


class PrometheusUnavailable(PrometheusError, ToolUnavailable):
    """Prometheus could not be reached (connection refused, DNS, TLS). Retryable."""


class PrometheusTimeout(PrometheusError):
    """The query did not finish in time, on our side or Prometheus'. Retryable with a narrower query."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the query (bad syntax, bad parameters, execution error). Permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class PrometheusResponseError(PrometheusError):
    """Any other unexpected answer: 5xx and 429 are retryable, 401/403/404 are not."""
