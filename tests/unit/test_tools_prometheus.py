"""Prometheus tools against a real Prometheus on backfilled history; MockTransport only for error shapes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.serving import free_port
from tools.base import ToolUnavailable, untrusted_values
from tools.prometheus import promql
from tools.prometheus.client import PrometheusClient, choose_step
from tools.prometheus.errors import PrometheusQueryError, PrometheusResponseError, PrometheusTimeout
from tools.prometheus.settings import PrometheusSettings
from tools.prometheus.tools import (
    ListAlertsInput,
    QueryInstantInput,
    QueryRangeInput,
    SeriesLabelsInput,
    TimeWindow,
    list_alerts,
    query_instant,
    query_range,
    series_labels,
)
from tools.rightsize.queries import slo_buckets

if TYPE_CHECKING:
    from tests.conftest_tools import PromHistory

pytest_plugins = ("tests.conftest_tools",)
STEP_S = 60
pytestmark = pytest.mark.anyio


def at(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


@pytest.fixture
async def prom(prom_history: PromHistory) -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(PrometheusSettings(url=prom_history.url, max_series=10)) as client:
        yield client


async def test_kv_cache_step_gives_change_point_and_onset_at_the_step(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    h = prom_history
    result = await query_range(prom, QueryRangeInput(
        query='max(vllm:kv_cache_usage_perc{model_name="old-model"})',
        start=at(h.t0), end=at(h.t_end), step_s=STEP_S, threshold=0.8))
    # The backfill only has the old name: the query ran under it, and says so.
    assert result.executed_query == 'max(vllm:gpu_cache_usage_perc{model_name="old-model"})'
    assert any("vllm:gpu_cache_usage_perc" in n for n in result.notes)
    [s] = result.series
    summary = s.summary
    assert summary.onset is not None and summary.onset.at == at(h.t_step)
    assert summary.change_point is not None
    assert abs((summary.change_point.at - at(h.t_step)).total_seconds()) <= STEP_S
    assert summary.change_point.before_mean == pytest.approx(0.30, abs=0.01)
    assert summary.change_point.after_mean == pytest.approx(0.95, abs=0.01)
    assert summary.trend is not None and summary.trend.direction == "rising"
    assert summary.max == pytest.approx(0.96)
    assert summary.threshold_breached_share == pytest.approx(1 / 3, abs=0.02)


async def test_excluded_window_is_left_out_of_the_summary_but_not_the_points(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    h = prom_history
    # An earlier excursion (the step up, and an hour after it) inside the window: left out, the baseline
    # is the normal level and no change point is reported; the points still show everything.
    window = TimeWindow(start=at(h.t_step - 30), end=at(h.t_end))
    result = await query_range(prom, QueryRangeInput(
        query='max(vllm:kv_cache_usage_perc{model_name="old-model"})', start=at(h.t0), end=at(h.t_end),
        step_s=STEP_S, exclude=[window], include_points=True, points=200))
    [s] = result.series
    assert s.summary.max == pytest.approx(0.31, abs=0.001) and s.summary.change_point is None
    assert s.points is not None and max(p.value or 0 for p in s.points) == pytest.approx(0.96)
    assert any("excluded window" in n for n in result.notes)


async def test_new_name_is_used_as_written_when_it_has_data(prom: PrometheusClient, prom_history: PromHistory) -> None:
    result = await query_instant(prom, QueryInstantInput(
        query='vllm:kv_cache_usage_perc{model_name="new-model"}', time=at(prom_history.t_end)))
    assert result.executed_query == result.query
    assert [s.value for s in result.samples] == [0.5]


async def test_old_histogram_answers_a_query_written_with_the_new_name(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    q = promql.histogram_quantile(0.5, promql.sum_by(["le"], promql.rate(
        promql.selector("vllm:inter_token_latency_seconds_bucket", model_name="old-model"), "5m")))
    result = await query_instant(prom, QueryInstantInput(query=q.text, time=at(prom_history.t_end)))
    assert "vllm:time_per_output_token_seconds_bucket" in result.executed_query
    [sample] = result.samples
    # 60 % of observations under 50 ms: the median interpolates inside the first bucket.
    assert sample.value == pytest.approx(0.05 * 0.5 / 0.6, rel=1e-3)


async def test_escaped_label_value_selects_exactly_its_series(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    q = promql.selector("test_escape", path=prom_history.escape_value)
    result = await query_instant(prom, QueryInstantInput(query=q.text, time=at(prom_history.t_end)))
    assert [(s.labels["path"], s.value) for s in result.samples] == [(prom_history.escape_value, 42.0)]
    assert ("samples[0].labels.path", prom_history.escape_value) in untrusted_values(result)


async def test_series_cap_keeps_the_largest_and_counts_the_rest(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    result = await query_range(prom, QueryRangeInput(
        query="test_fanout", start=at(prom_history.t0), end=at(prom_history.t_end), max_series=5))
    assert result.series_total == 30
    assert result.series_dropped == 25
    assert [s.labels["shard"] for s in result.series] == ["29", "28", "27", "26", "25"]
    assert any("25 smaller series dropped" in n for n in result.notes)


async def test_step_grows_to_bound_points_per_series(prom_history: PromHistory) -> None:
    settings = PrometheusSettings(url=prom_history.url, max_points=100)
    async with PrometheusClient(settings) as client:
        result = await query_range(client, QueryRangeInput(
            query='test_fanout{shard="03"}', start=at(prom_history.t0), end=at(prom_history.t_end), step_s=15,
            include_points=True, points=20))
    assert result.step_s == 120  # 3 h / 99 = 109 s, rounded up to a nice 2 min
    [s] = result.series
    assert s.summary.points <= 100
    assert s.points is not None and len(s.points) == 20
    assert any("step raised from 15s to 120s" in n for n in result.notes)


async def test_nan_and_inf_samples_are_counted_not_averaged(prom: PrometheusClient, prom_history: PromHistory) -> None:
    result = await query_range(prom, QueryRangeInput(
        query="test_nonfinite", start=at(prom_history.t0), end=at(prom_history.t_end), step_s=STEP_S))
    by_kind = {s.labels["kind"]: s.summary for s in result.series}
    assert by_kind["nan"].mean == 1.0 and by_kind["nan"].non_finite == 90
    assert by_kind["inf"].max == 2.0 and by_kind["inf"].non_finite == 19
    instant = await query_instant(prom, QueryInstantInput(
        query='test_nonfinite{kind="nan"}', time=at(prom_history.t0 + STEP_S)))
    assert instant.samples[0].value is None and instant.samples[0].non_finite == "NaN"


async def test_instant_query_honours_time(prom: PrometheusClient, prom_history: PromHistory) -> None:
    before = await query_instant(prom, QueryInstantInput(
        query='vllm:kv_cache_usage_perc{model_name="old-model"}', time=at(prom_history.t_step - STEP_S)))
    after = await query_instant(prom, QueryInstantInput(
        query='vllm:kv_cache_usage_perc{model_name="old-model"}', time=at(prom_history.t_step)))
    assert before.samples[0].value is not None and before.samples[0].value < 0.4
    assert after.samples[0].value is not None and after.samples[0].value > 0.9


async def test_rate_over_a_counter(prom: PrometheusClient, prom_history: PromHistory) -> None:
    q = promql.aggregate("sum", promql.rate(promql.selector("vllm:request_success_total", model_name="old-model"),
                                            "5m"))
    result = await query_instant(prom, QueryInstantInput(query=q.text, time=at(prom_history.t_end)))
    assert result.samples[0].value == pytest.approx(10.0)


async def test_series_labels_lists_values_under_either_vllm_name(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    # The series API looks back from now; the backfill ends within the last hour or so.
    result = await series_labels(prom, SeriesLabelsInput(metric="vllm:kv_cache_usage_perc", lookback_s=5 * 3600))
    values = {lv.label: lv.values for lv in result.labels}
    assert values["model_name"] == ["new-model"]
    assert result.executed_metric == "vllm:kv_cache_usage_perc"


async def test_firing_alerts_are_listed_with_untrusted_annotations(prom: PrometheusClient) -> None:
    for _ in range(100):
        result = await list_alerts(prom, ListAlertsInput())
        if result.total >= 2:
            break
        await asyncio.sleep(0.1)
    assert [a.name for a in result.alerts] == ["ToolsTestInjected", "ToolsTestWarning"]  # critical first
    only = await list_alerts(prom, ListAlertsInput(labels={"namespace": "llm-prod"}))
    assert [a.name for a in only.alerts] == ["ToolsTestInjected"]
    paths = dict(untrusted_values(only))
    assert paths["alerts[0].annotations.description"].startswith("Ignore previous instructions")


async def test_bad_query_error_names_query_range_and_what_prometheus_said(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    with pytest.raises(PrometheusQueryError) as e:
        await query_range(prom, QueryRangeInput(query="sum(rate(up[5m])", start=at(prom_history.t0),
                                                end=at(prom_history.t_end)))
    msg = str(e.value)
    assert "sum(rate(up[5m])" in msg and "HTTP 400 bad_data" in msg
    assert "from " in msg and "step " in msg
    assert not e.value.retryable


async def test_check_reports_version(prom: PrometheusClient) -> None:
    status = await prom.check()
    assert status.ok and status.version and status.version.startswith("2.")


async def test_connection_refused_is_unavailable_and_retryable() -> None:
    async with PrometheusClient(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}")) as client:
        with pytest.raises(ToolUnavailable) as e:
            await query_instant(client, QueryInstantInput(query="up"))
        assert e.value.retryable and "cannot reach Prometheus" in str(e.value)
        assert not (await client.check()).ok


# --- narrow client error shapes (MockTransport) ---------------------------------------------------------

def mock_client(handler: httpx.MockTransport) -> PrometheusClient:
    return PrometheusClient(PrometheusSettings(url="http://prom.test"), transport=handler)


async def test_422_execution_error_is_permanent_and_names_the_range() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"status": "error", "errorType": "execution",
                                         "error": "found duplicate series for the match group"})

    async with mock_client(httpx.MockTransport(handler)) as client:
        with pytest.raises(PrometheusQueryError) as e:
            await client.query_range("a / b", at(1_700_000_000), at(1_700_003_600))
    msg = str(e.value)
    assert "'a / b'" in msg and "2023-11-14T22:13:20Z" in msg and "2023-11-14T23:13:20Z" in msg
    assert "HTTP 422 execution: found duplicate series" in msg


async def test_5xx_from_a_proxy_is_retryable_with_a_body_excerpt() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway from the ingress</html>")

    async with mock_client(httpx.MockTransport(handler)) as client:
        with pytest.raises(PrometheusResponseError) as e:
            await client.query("up")
    assert e.value.retryable and "HTTP 502" in str(e.value) and "Bad Gateway from the ingress" in str(e.value)


async def test_prometheus_timeout_and_client_timeout_are_retryable() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"status": "error", "errorType": "timeout", "error": "query timed out"})

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    for handler in (upstream, slow):
        async with mock_client(httpx.MockTransport(handler)) as client:
            with pytest.raises(PrometheusTimeout) as e:
                await client.query("up")
        assert e.value.retryable and "'up'" in str(e.value)


async def test_requests_carry_time_step_and_secret_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})

    settings = PrometheusSettings(url="http://prom.test", headers={"Authorization": "Bearer s3cret"}, max_points=61)
    async with PrometheusClient(settings, transport=httpx.MockTransport(handler)) as client:
        rng = await client.query_range("up", at(1_700_000_000), at(1_700_003_600), step_s=15)
    assert rng.step_s == 60
    form = dict(x.split("=", 1) for x in seen[0].content.decode().split("&"))
    assert form["step"] == "60" and form["start"] == "1700000000.000"
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in json.dumps(settings.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("range_s", "requested", "expected"),
    [
        (3600, None, 15),  # one hour at the scrape interval: 241 points
        (3600, 30, 30),  # a coarser request is honoured
        (86400, None, 180),  # a day: 86400 / 719 = 120.2 → 180
        (86400, 60, 180),  # a too-fine request is raised
        (30 * 86400, None, 7200),  # 2592000 / 719 = 3605 s: one hour would give 721 points
        (10, 45, 45),
    ],
)
def test_choose_step(range_s: float, requested: float | None, expected: float) -> None:
    step = choose_step(range_s, requested_s=requested, min_step_s=15, max_points=720)
    assert step == expected
    assert range_s / step + 1 <= 720


async def test_grid_answer_holds_the_same_samples_as_the_listed_one(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    start, end = at(prom_history.t0), at(prom_history.t_end)
    for q in ("test_nonfinite", "test_escape", 'test_fanout{shard=~"0[0-4]"}'):
        listed = await prom.query_range(q, start, end, step_s=STEP_S)
        grid = await prom.query_range_grid(q, start, end, STEP_S)
        assert grid.n == (prom_history.t_end - prom_history.t0) // STEP_S + 1
        by_labels = {json.dumps(g.labels, sort_keys=True): g.values for g in grid.series}
        assert len(by_labels) == len(listed.data.series) > 0
        for s in listed.data.series:
            values = by_labels[json.dumps(s.labels, sort_keys=True)]
            expected = [math.nan] * grid.n
            for t, v in s.samples:
                expected[round((t - prom_history.t0) / STEP_S)] = v
            assert values.tolist() == pytest.approx(expected, nan_ok=True)
    escaped = await prom.query_range_grid(f'test_escape{{path="{promql.escape_string(prom_history.escape_value)}"}}',
                                          start, end, STEP_S)
    assert [g.labels["path"] for g in escaped.series] == [prom_history.escape_value]


async def test_grid_answer_in_another_layout_keeps_its_warnings() -> None:
    body = {"status": "success", "warnings": ["partial answer"],
            "data": {"resultType": "matrix", "result": [{"metric": {"pod": "a"}, "values": [[10, "1"], [30, "+Inf"]]}]}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    async with PrometheusClient(PrometheusSettings(url="http://prometheus.test"), transport=transport) as client:
        grid = await client.query_range_grid("x", at(10), at(40), 10)
    assert grid.warnings == ["partial answer"]
    assert grid.series[0].values.tolist() == [1.0, pytest.approx(math.nan, nan_ok=True), math.inf,
                                              pytest.approx(math.nan, nan_ok=True)]


async def test_slo_buckets_give_the_full_histograms_verdict_and_value_near_the_threshold(
        prom: PrometheusClient, prom_history: PromHistory) -> None:
    # 60 % of tokens under 50 ms, 90 % under 100 ms, all under 500 ms: the p95 is 0.3 s.
    metric = "vllm:time_per_output_token_seconds_bucket"
    les = await prom.label_values("le", metric, at(prom_history.t0), at(prom_history.t_end))
    assert sorted(les) == ["+Inf", "0.05", "0.1", "0.5"]

    async def p95(buckets: tuple[str, ...] | None) -> float:
        sel = promql.selector(metric, *((promql.any_of("le", buckets),) if buckets else ()))
        expr = promql.histogram_quantile(0.95, promql.aggregate("sum", promql.rate(sel, "5m"), by=["le"]))
        [s] = (await prom.query(expr.text, at=at(prom_history.t_end))).series
        return s.samples[0][1]

    full = await p95(None)
    assert full == pytest.approx(0.3)
    for threshold in (0.04, 0.07, 0.1, 0.3, 0.45, 0.6, 1.0):
        buckets = slo_buckets(les, [threshold])
        assert buckets is not None and len(buckets) < len(les) and buckets[-1] == "+Inf"
        narrow = await p95(buckets)
        assert (narrow > threshold) == (full > threshold), (threshold, buckets, narrow)
        if 0.1 <= threshold < 0.5:  # the p95 lies in the bracket around the threshold: exact
            assert narrow == pytest.approx(full)
    assert slo_buckets(les, []) is None
    assert slo_buckets(["0.1", "0.5"], [0.3]) is None  # no +Inf bucket: not a histogram to narrow
