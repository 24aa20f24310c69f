"""What can go wrong talking to CloudWatch, split into retryable and permanent.

Messages name the operation, what was asked (metric or log group, time range, query) and what AWS
answered (error code, message, HTTP status), so a model can fix its request.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from tools.base import ToolError, ToolUnavailable

_THROTTLING = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
               "LimitExceededException"}


class CloudWatchError(ToolError):
    """Base for every CloudWatch failure."""


class CloudWatchUnavailable(CloudWatchError, ToolUnavailable):
    """The endpoint could not be reached. Retryable."""


class CloudWatchTimeout(CloudWatchError):
    """A call or an Insights query did not finish in time. Retryable, ideally with a narrower request."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class CloudWatchThrottled(CloudWatchError):
    """AWS throttled us or a concurrency limit was hit (Insights allows few concurrent queries). Retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class CloudWatchRequestError(CloudWatchError):
    """AWS refused the request: validation, not found, access denied (permanent) or a 5xx (retryable)."""


class CloudWatchConfigError(CloudWatchError):
    """No credentials or no region: a set-up problem, permanent."""


def wrap(e: Exception, what: str) -> CloudWatchError:
    """Turn a boto3/botocore exception into one of ours, naming `what` was tried."""
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", ""))[:300]
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        said = f"{code} (HTTP {status}): {message}" if message else f"{code} (HTTP {status})"
        if code in _THROTTLING or status == 429:
            return CloudWatchThrottled(f"{what}: throttled by AWS: {said}")
        return CloudWatchRequestError(f"{what}: AWS refused it: {said}", retryable=status >= 500)
    if isinstance(e, ReadTimeoutError):
        return CloudWatchTimeout(f"{what}: no answer in time: {e}")
    if isinstance(e, EndpointConnectionError | ConnectionError):
        return CloudWatchUnavailable(f"{what}: cannot reach the endpoint: {e}")
    if isinstance(e, NoCredentialsError | NoRegionError):
        return CloudWatchConfigError(f"{what}: {e}")
    if isinstance(e, BotoCoreError):
        return CloudWatchRequestError(f"{what}: {type(e).__name__}: {e}")
    return CloudWatchRequestError(f"{what}: {type(e).__name__}: {e}")
