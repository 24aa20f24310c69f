"""What can go wrong reading the Kubernetes API, split into retryable and permanent.

Messages say what was read (verb, resource, namespace, selector) and what the API server answered
(HTTP status, reason, its message), so a model can fix a wrong name or namespace by itself.
"""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from tools.base import ToolError, ToolUnavailable


class K8sReadError(ToolError):
    """Base for every Kubernetes read failure."""


class K8sUnavailable(K8sReadError, ToolUnavailable):
    """The API server could not be reached. Retryable."""


class K8sTimeout(K8sReadError):
    """The API server did not answer in time. Retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class K8sNotFound(K8sReadError):
    """The object or namespace does not exist (404). Permanent."""


class K8sForbidden(K8sReadError):
    """The read-only identity may not read this (401/403). Permanent: ask for RBAC, don't retry."""


def wrap(e: Exception, what: str) -> K8sReadError:
    """Turn a client exception into one of ours, naming `what` was read."""
    if isinstance(e, ApiException):
        said = _api_message(e)
        msg = f"{what}: HTTP {e.status} {e.reason or ''}".rstrip() + (f": {said}" if said else "")
        if e.status == 404:
            return K8sNotFound(msg)
        if e.status in (401, 403):
            return K8sForbidden(msg + " (the agent reads with a read-only identity)")
        return K8sReadError(msg, retryable=e.status in (410, 429, 500, 502, 503, 504))
    if isinstance(e, ReadTimeoutError):
        return K8sTimeout(f"{what}: no answer from the API server in time")
    if isinstance(e, Urllib3Error | ConnectionError):
        return K8sUnavailable(f"{what}: cannot reach the API server: {type(e).__name__}: {e}")
    return K8sReadError(f"{what}: {type(e).__name__}: {e}")


def _api_message(e: ApiException) -> str:
    raw = e.body or ""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    return str(body.get("message", ""))[:300] if isinstance(body, dict) else text[:300]
