"""The executor's Kubernetes client and its errors."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from tools.base import ToolError


class K8sWriteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kubeconfig: Path = Field(description="The executor identity's kubeconfig (write access, serving namespaces).")
    request_timeout_s: float = Field(default=15, gt=0, le=120)


class Conflict(ToolError):
    """The object changed since it was read (HTTP 409): re-read, re-check, maybe retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class Forbidden(ToolError):
    """The executor identity may not do this (HTTP 403): permanent."""


class NotFound(ToolError):
    """The target does not exist (HTTP 404): permanent."""


def wrap(e: ApiException, what: str) -> ToolError:
    raw = e.body or ""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    with contextlib.suppress(ValueError, AttributeError):
        text = json.loads(text).get("message", text)
    body = text[:300]
    msg = f"{what}: HTTP {e.status} {e.reason}: {body}"
    if e.status == 409:
        return Conflict(msg)
    if e.status == 403:
        return Forbidden(msg)
    if e.status == 404:
        return NotFound(msg)
    return ToolError(msg, retryable=e.status in (429, 500, 502, 503, 504))


class K8sWriteClient:
    """Typed API handles built from the executor kubeconfig (never at import time)."""

    def __init__(self, settings: K8sWriteSettings) -> None:
        self.settings = settings
        self.api: Any = config.new_client_from_config(config_file=str(settings.kubeconfig))
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)  # Argo Rollouts

    @property
    def timeout(self) -> float:
        return self.settings.request_timeout_s

    def close(self) -> None:
        self.api.close()
