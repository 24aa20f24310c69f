"""Tiny Prometheus HTTP helpers for assertions (the product's client lives in tools/prometheus)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def query(base: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = at
    r = httpx.get(f"{base}/api/v1/query", params=params, timeout=30)
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def query_range(base: str, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/query_range",
                  params={"query": promql, "start": start, "end": end, "step": step}, timeout=60)
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def scalar(base: str, promql: str) -> float | None:
    res = query(base, promql)
    return float(res[0]["value"][1]) if res else None


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
