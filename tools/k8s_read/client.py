"""The read-only Kubernetes client: built from a kubeconfig in settings, calls run in a thread.

The official client is synchronous; each call runs in `asyncio.to_thread`. Responses are read as
JSON dicts (`_preload_content=False`), skipping the client's slow model deserialization; the
reduction modules read those dicts. Lists are paginated and capped at `max_list_items`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from pydantic import BaseModel, ConfigDict

from tools.k8s_read.errors import K8sReadError, wrap
from tools.k8s_read.settings import K8sReadSettings

JsonObj = dict[str, Any]


class K8sReadStatus(BaseModel):
    """What `check()` found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    server_version: str | None = None
    latency_ms: float | None = None
    detail: str = ""


class K8sReadClient:
    """Typed API handles over one read-only ApiClient (never built at import time)."""

    def __init__(self, settings: K8sReadSettings) -> None:
        self.settings = settings
        self.api: Any = config.new_client_from_config(config_file=str(settings.kubeconfig), context=settings.context,
                                                      persist_config=False)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.autoscaling = client.AutoscalingV2Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)  # Gateway API routes
        self._version = client.VersionApi(self.api)

    def close(self) -> None:
        self.api.close()

    async def read(self, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JsonObj:
        """One GET, as a JSON object."""

        def call() -> JsonObj:
            resp = fn(*args, _preload_content=False, _request_timeout=self.settings.timeout_s, **kwargs)
            try:
                return dict(json.loads(resp.data))
            finally:
                resp.release_conn()

        try:
            return await asyncio.to_thread(call)
        except K8sReadError:
            raise
        except Exception as e:  # the client raises ApiException, urllib3 errors, JSON errors; all get context
            raise wrap(e, what) from e

    async def list(self, what: str, fn: Callable[..., Any], /, *args: Any, max_items: int | None = None,
                   **kwargs: Any) -> tuple[list[JsonObj], bool]:
        """All items of a list call, page by page, up to `max_items`; returns (items, truncated)."""
        cap = max_items or self.settings.max_list_items
        items: list[JsonObj] = []
        token: str | None = None
        while True:
            page_kwargs = dict(kwargs, limit=min(self.settings.page_size, cap - len(items)))
            if token:
                page_kwargs["_continue"] = token
            page = await self.read(what, fn, *args, **page_kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items, False
            if len(items) >= cap:
                return items[:cap], True

    async def check(self) -> K8sReadStatus:
        """Probe the API server: reachable, authenticated, its version, and that this identity can list pods."""
        t0 = time.monotonic()
        try:
            version = await self.read("GET /version", self._version.get_code)
            await self.read("list pods (health check)", self.core.list_pod_for_all_namespaces, limit=1)
        except K8sReadError as e:
            return K8sReadStatus(ok=False, detail=str(e))
        return K8sReadStatus(ok=True, server_version=str(version.get("gitVersion", "")) or None,
                             latency_ms=round((time.monotonic() - t0) * 1000, 1))
