"""An async Prometheus HTTP API client with bounds on time, points and errors that explain themselves.

Every range query goes through `choose_step`, so no caller can ask for more points per series than
the settings allow. Every failure is one of `tools.prometheus.errors`, naming the query, its time
range and what Prometheus answered. The client is built by the caller from `PrometheusSettings` and
closed by it; nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from tools.prometheus.errors import (
    PrometheusError,
    PrometheusQueryError,
    PrometheusResponseError,
    PrometheusTimeout,
    PrometheusUnavailable,
)
from tools.prometheus.settings import PrometheusSettings

log = logging.getLogger(__name__)

# Steps a human reads easily; an automatic step is rounded up to one of these (then to whole days).
NICE_STEPS_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
                21600, 43200, 86400)
_BODY_EXCERPT = 300

ResultType = Literal["vector", "matrix", "scalar", "string"]


@dataclass(frozen=True)
class Series:
    """One series: its labels (including __name__ if kept) and its (unix seconds, value) samples."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


@dataclass(frozen=True)
class QueryData:
    """A parsed query answer. Vectors are series with one sample; a scalar is one series without labels."""

    result_type: ResultType
    series: list[Series]
    warnings: list[str] = field(default_factory=list)
    string_value: str | None = None
    skipped_histograms: int = 0  # native-histogram samples, which the summaries do not read


@dataclass(frozen=True)
class RangeData:
    data: QueryData
    start: dt.datetime
    end: dt.datetime
    step_s: float


@dataclass(frozen=True)
class GridSeries:
    """One series of a range answer laid on the query's time grid: `values[k]` is the sample at
    `start + k × step`, NaN where the series had none."""

    labels: dict[str, str]
    values: np.ndarray


@dataclass(frozen=True)
class GridData:
    """A range answer as arrays on one time grid (`query_range_grid`), for callers that read
    thousands of series: no per-sample Python objects."""

    start: float
    step_s: float
    n: int
    series: list[GridSeries]
    warnings: list[str] = field(default_factory=list)


class PrometheusStatus(BaseModel):
    """What `check()` found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    url: str
    version: str | None = None
    latency_ms: float | None = None
    detail: str = ""


def choose_step(range_s: float, *, requested_s: float | None, min_step_s: float, max_points: int) -> float:
    """Pick a range-query step that keeps every series at or under `max_points` points.

    A requested step is honoured when it already keeps the bound; otherwise (or without one) the step
    is max(scrape interval, range / (max_points − 1)) rounded up to a nice value.
    """
    if range_s <= 0:
        raise ValueError("the range must have a positive length")
    floor = range_s / max(max_points - 1, 1)
    if requested_s is not None and requested_s >= floor:
        return float(requested_s)
    want = max(requested_s or 0.0, min_step_s, floor)
    for nice in NICE_STEPS_S:
        if nice >= want:
            return float(nice)
    return float(math.ceil(want / 86400) * 86400)


def describe_range(start: dt.datetime, end: dt.datetime, step_s: float | None = None) -> str:
    text = f"from {_iso(start)} to {_iso(end)}"
    return f"{text} (step {step_s:g}s)" if step_s is not None else text


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: pass an aware datetime (UTC)")
    return f"{t.timestamp():.3f}"


class PrometheusClient:
    """Talks to one Prometheus (or a compatible API: Thanos, Mimir, VictoriaMetrics)."""

    def __init__(self, settings: PrometheusSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        # httpx's pooled connections belong to the event loop that opened them; a client used from a
        # second loop (a CLI running asyncio.run twice, a test) gets a fresh pool instead of a dead one.
        self._clients: dict[int, httpx.AsyncClient] = {}

    @property
    def _http(self) -> httpx.AsyncClient:
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            headers = {k: v.get_secret_value() for k, v in self.settings.headers.items()}
            if not self.settings.gzip:
                headers.setdefault("Accept-Encoding", "identity")
            client = httpx.AsyncClient(base_url=self.settings.url.rstrip("/"),
                                       timeout=httpx.Timeout(self.settings.timeout_s), headers=headers,
                                       verify=self.settings.verify_tls, transport=self._transport)
            self._clients = {loop: client}  # the previous loop is gone; its pool cannot be reused
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients = {}

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- queries ---------------------------------------------------------------------------------

    async def query(self, expr: str, at: dt.datetime | None = None) -> QueryData:
        """Evaluate `expr` at one instant (`/api/v1/query`); `at` defaults to now."""
        params = {"query": expr, "timeout": f"{self.settings.timeout_s:g}s"}
        what = f"instant query {expr!r}"
        if at is not None:
            params["time"] = _ts(at)
            what += f" at {_iso(at)}"
        body = await self._request("POST", "/api/v1/query", params, what)
        return _parse_query_data(body, what)

    async def query_range(self, expr: str, start: dt.datetime, end: dt.datetime,
                    step_s: float | None = None) -> RangeData:
        """Evaluate `expr` over [start, end] (`/api/v1/query_range`) with a bounded step."""
        if end <= start:
            raise PrometheusQueryError(f"range query {expr!r}: end {_iso(end)} is not after start {_iso(start)}")
        step = choose_step((end - start).total_seconds(), requested_s=step_s,
                           min_step_s=self.settings.scrape_interval_s, max_points=self.settings.max_points)
        what = f"range query {expr!r} {describe_range(start, end, step)}"
        params = {"query": expr, "start": _ts(start), "end": _ts(end), "step": f"{step:g}",
                  "timeout": f"{self.settings.timeout_s:g}s"}
        body = await self._request("POST", "/api/v1/query_range", params, what)
        return RangeData(data=_parse_query_data(body, what), start=start, end=end, step_s=step)

    async def query_range_grid(self, expr: str, start: dt.datetime, end: dt.datetime, step_s: float) -> GridData:
        """`query_range` for wide answers: each series as a NumPy array on the grid start, start + step, … end.

        The step is taken as given (it must already respect `max_points`), so the grid is known
        before the answer arrives and samples are placed by index, not matched by timestamp.
        """
        if end <= start:
            raise PrometheusQueryError(f"range query {expr!r}: end {_iso(end)} is not after start {_iso(start)}")
        n = int((end - start).total_seconds() // step_s) + 1
        if n > self.settings.max_points:
            raise PrometheusQueryError(f"range query {expr!r} {describe_range(start, end, step_s)}: {n} points per "
                                       f"series exceed max_points={self.settings.max_points}; use a coarser step")
        what = f"range query {expr!r} {describe_range(start, end, step_s)}"
        params = {"query": expr, "start": _ts(start), "end": _ts(end), "step": f"{step_s:g}",
                  "timeout": f"{self.settings.timeout_s:g}s"}
        resp = await self._send("POST", "/api/v1/query_range", params, what)
        if resp.is_success and (fast := _parse_grid_fast(resp.content, start.timestamp(), step_s, n)) is not None:
            return fast
        return _parse_grid(_check_response(resp, what), what, start.timestamp(), step_s, n)

    async def metric_names(self, match: str, start: dt.datetime, end: dt.datetime) -> list[str]:
        """Metric names with at least one series matching `match` in [start, end]."""
        params = {"match[]": match, "start": _ts(start), "end": _ts(end)}
        what = f"metric names matching {match} {describe_range(start, end)}"
        body = await self._request("GET", "/api/v1/label/__name__/values", params, what)
        data = body.get("data")
        return [str(x) for x in data] if isinstance(data, list) else []

    async def label_values(self, label: str, match: str, start: dt.datetime, end: dt.datetime) -> list[str]:
        """Values of `label` on the series matching `match` in [start, end] (an index look-up)."""
        params = {"match[]": match, "start": _ts(start), "end": _ts(end)}
        what = f"values of label {label!r} on {match} {describe_range(start, end)}"
        body = await self._request("GET", f"/api/v1/label/{label}/values", params, what)
        data = body.get("data")
        return [str(x) for x in data] if isinstance(data, list) else []

    async def series(self, match: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, str]]:
        """Label sets of the series matching `match` in [start, end] (`/api/v1/series`)."""
        params = {"match[]": match, "start": _ts(start), "end": _ts(end)}
        what = f"series matching {match} {describe_range(start, end)}"
        body = await self._request("POST", "/api/v1/series", params, what)
        data = body.get("data")
        if not isinstance(data, list):
            return []
        return [{str(k): str(v) for k, v in item.items()} for item in data if isinstance(item, dict)]

    async def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts from `/api/v1/alerts`, as Prometheus returns them."""
        body = await self._request("GET", "/api/v1/alerts", {}, "list alerts")
        data = body.get("data")
        alerts = data.get("alerts") if isinstance(data, dict) else None
        return [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []

    async def check(self) -> PrometheusStatus:
        """Probe Prometheus: reachable, answering the API, and which version."""
        t0 = time.monotonic()
        try:
            body = await self._request("GET", "/api/v1/status/buildinfo", {}, "health check")
        except PrometheusError as e:
            return PrometheusStatus(ok=False, url=self.settings.url, detail=str(e))
        data = body.get("data")
        version = str(data.get("version")) if isinstance(data, dict) and data.get("version") else None
        return PrometheusStatus(ok=True, url=self.settings.url, version=version,
                                latency_ms=round((time.monotonic() - t0) * 1000, 1))

    # --- transport -------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        return _check_response(await self._send(method, path, params, what), what)

    async def _send(self, method: str, path: str, params: Mapping[str, str], what: str) -> httpx.Response:
        try:
            if method == "POST":
                resp = await self._http.post(path, data=dict(params))
            else:
                resp = await self._http.get(path, params=dict(params))
        except httpx.TimeoutException as e:
            raise PrometheusTimeout(
                f"{what}: no answer from Prometheus at {self.settings.url} within {self.settings.timeout_s:g}s "
                f"({type(e).__name__}); narrow the time range or the series selected"
            ) from e
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.UnsupportedProtocol) as e:
            raise PrometheusUnavailable(f"{what}: cannot reach Prometheus at {self.settings.url}: {e}") from e
        except httpx.HTTPError as e:
            raise PrometheusResponseError(f"{what}: request failed: {type(e).__name__}: {e}", retryable=True) from e
        return resp


def _check_response(resp: httpx.Response, what: str) -> dict[str, Any]:
    body: Any = None
    try:
        body = orjson.loads(resp.content)  # several times faster than the stdlib on answers of tens of MB
    except ValueError:
        body = None
    excerpt = resp.text[:_BODY_EXCERPT].strip()
    if isinstance(body, dict) and body.get("status") == "success" and resp.is_success:
        for w in body.get("warnings") or []:
            log.info("prometheus warning for %s: %s", what, w)
        return body
    error_type = str(body.get("errorType", "")) if isinstance(body, dict) else ""
    error = str(body.get("error", "")) if isinstance(body, dict) else ""
    said = f"HTTP {resp.status_code}"
    if error_type or error:
        said += f" {error_type}: {error}".rstrip(": ")
    elif excerpt:
        said += f": {excerpt}"
    if error_type in ("timeout", "canceled"):
        raise PrometheusTimeout(f"Prometheus gave up on {what}: {said}; narrow the range or the selector")
    if resp.status_code in (400, 422) or error_type in ("bad_data", "execution"):
        raise PrometheusQueryError(f"Prometheus rejected {what}: {said}")
    retryable = resp.status_code >= 500 or resp.status_code == 429
    if resp.is_success:
        said += " (the body is not a Prometheus API answer)"
    raise PrometheusResponseError(f"{what} failed: {said}", retryable=retryable)


def _parse_query_data(body: Mapping[str, Any], what: str) -> QueryData:
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusResponseError(f"{what}: answer has no data object")
    result_type = data.get("resultType")
    result = data.get("result")
    warnings = [str(w) for w in body.get("warnings") or []]
    if result_type == "scalar" and isinstance(result, list):
        return QueryData("scalar", [Series({}, [_sample(result)])], warnings)
    if result_type == "string" and isinstance(result, list):
        return QueryData("string", [], warnings, string_value=str(result[1]))
    if result_type not in ("vector", "matrix") or not isinstance(result, list):
        raise PrometheusResponseError(f"{what}: unexpected result type {result_type!r}")
    series: list[Series] = []
    skipped = 0
    for item in result:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        if result_type == "vector":
            if "value" not in item:
                skipped += 1
                continue
            series.append(Series(labels, [_sample(item["value"])]))
        else:
            skipped += len(item.get("histograms") or [])
            samples = [_sample(v) for v in item.get("values") or []]
            if samples:
                series.append(Series(labels, samples))
    return QueryData(result_type, series, warnings, skipped_histograms=skipped)


_MATRIX_HEAD = b'{"status":"success","data":{"resultType":"matrix","result":['
_SERIES_HEAD = b'{"metric":'
_VALUES_HEAD = b',"values":['


def _parse_grid_fast(raw: bytes, start: float, step: float, n: int) -> GridData | None:
    """Prometheus' compact matrix JSON read without a Python object per sample, or None when the
    body is laid out in any other way (warnings, native histograms, another server's spacing), for
    the general parser to handle.

    Each series' `"values":[[t,"v"],…]` is stripped of brackets and quotes and read by NumPy in one
    pass. The markers searched for cannot occur inside label values: JSON escapes their quotes.
    """
    if not raw.startswith(_MATRIX_HEAD):
        return None
    parts = raw[len(_MATRIX_HEAD):].split(_SERIES_HEAD)
    if parts[0] != b"":
        return None
    series: list[GridSeries] = []
    last = len(parts) - 1
    for k, part in enumerate(parts[1:], start=1):
        i = part.find(_VALUES_HEAD)
        j = part.find(b"]]}", i)
        tail = part[j + 3:] if j >= 0 else b"?"
        if i < 0 or j < 0 or (tail != b"," if k < last else tail != b"]}}"):
            return None
        text = part[i + len(_VALUES_HEAD):j + 1].translate(None, b'[]"')
        try:
            labels = orjson.loads(part[:i])
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy only warns when it stops short of the end
                flat = np.fromstring(text, sep=",")
        except (ValueError, DeprecationWarning):
            return None
        if not isinstance(labels, dict) or flat.size % 2 or flat.size != text.count(b",") + 1:
            return None
        idx = np.rint((flat[0::2] - start) / step).astype(np.int64)
        out = np.full(n, np.nan)
        ok = (idx >= 0) & (idx < n)
        out[idx[ok]] = flat[1::2][ok]
        series.append(GridSeries({str(a): str(b) for a, b in labels.items()}, out))
    return GridData(start, step, n, series)


def _parse_grid(body: Mapping[str, Any], what: str, start: float, step: float, n: int) -> GridData:
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise PrometheusResponseError(f"{what}: expected a matrix answer, got {kind!r}")
    warnings = [str(w) for w in body.get("warnings") or []]
    series: list[GridSeries] = []
    for item in data["result"]:
        values = item.get("values") or []
        if not values:
            continue
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        try:
            ts, vs = zip(*values, strict=True)
            idx = np.rint((np.asarray(ts, dtype=float) - start) / step).astype(np.int64)
            xs = np.asarray(vs, dtype=float)  # Prometheus sends values as strings; numpy reads NaN and ±Inf too
        except (TypeError, ValueError) as e:
            raise PrometheusResponseError(f"{what}: malformed samples for series {labels}: {e}") from e
        out = np.full(n, np.nan)
        ok = (idx >= 0) & (idx < n)
        out[idx[ok]] = xs[ok]
        series.append(GridSeries(labels, out))
    return GridData(start, step, n, series, warnings)


def _sample(pair: Sequence[Any]) -> tuple[float, float]:
    # Prometheus sends values as strings; float() reads "NaN", "+Inf" and "-Inf" as well.
    return float(pair[0]), float(pair[1])
