"""The simulator's series: the names and labels real exporters publish, and counters that behave."""

from __future__ import annotations

import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator.exporter import LiveFleet, MetricsServer
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.series import SeriesSet
from deploy.sandbox.simulator.synthetic import fleet_snapshot
from tools.rightsize.catalog import PriceCatalog

T0 = 1_795_000_000.0
SCRAPE = {"namespace", "pod", "container", "job", "instance"}


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_prices()


def _labels_by_name(ss: SeriesSet) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for s in ss.specs:
        out[s.name].append(dict(s.labels))
    return out


def test_label_sets_are_what_real_scrapes_give(fleet: Fleet, catalog: PriceCatalog) -> None:
    ss = SeriesSet(Placement(fleet, fleet_snapshot(fleet, catalog)))
    by_name = _labels_by_name(ss)
    for name in (
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
    ):
        for labels in by_name[name]:
            assert set(labels) == SCRAPE | {"model_name", "engine"}
            assert (
                labels["job"] == "vllm"
                and labels["engine"] == "0"
                and labels["instance"].endswith(":8000")
            )
    assert {lb["finished_reason"] for lb in by_name["vllm:request_success_total"]} == {
        "stop",
        "length",
    }
    for labels in by_name["vllm:time_to_first_token_seconds_bucket"]:
        assert set(labels) == SCRAPE | {"model_name", "engine", "le"}
    for labels in by_name["http_requests_total"]:
        assert set(labels) == SCRAPE | {"handler", "method", "status"}
    assert {lb["status"] for lb in by_name["http_requests_total"]} == {"2xx", "4xx", "5xx"}
    for labels in by_name["nv_inference_request_success"]:
        assert set(labels) == SCRAPE | {"model", "version"} and labels["instance"].endswith(":8002")
    assert {lb["reason"] for lb in by_name["nv_inference_request_failure"]} == {"OTHER"}
    for labels in by_name["nv_gpu_utilization"]:
        assert set(labels) == SCRAPE | {"gpu_uuid"}
    dcgm = by_name["DCGM_FI_DEV_GPU_UTIL"]
    assert len(dcgm) == 2 * 8 + 2 * 8 + 4 * 1  # every GPU of every GPU node, allocated or idle
    base = {"gpu", "UUID", "device", "modelName", "Hostname", "job", "instance"}
    assigned = [lb for lb in dcgm if "pod" in lb]
    idle = [lb for lb in dcgm if "pod" not in lb]
    assert assigned and idle
    assert all(set(lb) == base | {"namespace", "pod", "container"} for lb in assigned)
    assert all(set(lb) == base for lb in idle)
    assert all(
        lb["job"] == "dcgm-exporter" and lb["instance"] == f"{lb['Hostname']}:9400" for lb in dcgm
    )
    assert all(lb["device"] == f"nvidia{lb['gpu']}" for lb in dcgm)
    assert {lb["modelName"] for lb in dcgm} == {
        "NVIDIA H100 80GB HBM3",
        "NVIDIA A100-SXM4-40GB".replace("-", " "),
        "NVIDIA L4",
    }
    # nothing a real exporter would not publish
    everywhere = {k for lbs in by_name.values() for lb in lbs for k in lb}
    assert not everywhere & {"model_version", "team", "model-version", "serving_runtime"}


def test_histograms_are_cumulative_and_counters_monotonic(
    fleet: Fleet, catalog: PriceCatalog
) -> None:
    ss = SeriesSet(Placement(fleet, fleet_snapshot(fleet, catalog)))
    previous = None
    for k in range(30):
        ss.step(T0 + 60 * k, 60)
        counters = [v for s, v in zip(ss.specs, ss.values, strict=True) if s.accumulate]
        if previous is not None:
            assert all(b >= a for a, b in zip(previous, counters, strict=True))
        previous = counters
    buckets: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = defaultdict(
        list
    )
    counts = {}
    for s, v in zip(ss.specs, ss.values, strict=True):
        if s.name.endswith("_bucket"):
            labels = dict(s.labels)
            le = float(labels.pop("le"))
            buckets[(s.name[: -len("_bucket")], tuple(sorted(labels.items())))].append((le, v))
        elif s.name.endswith("_count"):
            counts[(s.name[: -len("_count")], tuple(sorted(s.labels)))] = v
    assert buckets
    for key, points in buckets.items():
        values = [v for _, v in sorted(points)]
        assert values == sorted(values), key
        assert values[-1] == pytest.approx(counts[key])
        assert values[-1] > 0


def test_counters_carry_over_a_rollout_and_new_pods_start_from_zero(
    fleet: Fleet, catalog: PriceCatalog
) -> None:
    before = fleet_snapshot(fleet, catalog)
    live = LiveFleet(fleet, before, t=T0)
    for k in range(1, 6):
        live.tick(T0 + 2 * k)
    state = live.state()
    after = fleet_snapshot(fleet, catalog, versions={"chat-primary": "2025.07.0"})
    assert live.update(after)
    live.tick(T0 + 12)
    now = live.state()
    # untouched workloads continue where they were
    kept = [k for k in state if ("namespace", "search") in k[1] or ("namespace", "code") in k[1]]
    assert kept and all(now[k] >= state[k] for k in kept)
    # the rolled-out pods are new series, starting near zero
    new_pods = {
        dict(s.labels)["pod"]
        for s in live.series.specs
        if s.name == "vllm:prompt_tokens_total" and dict(s.labels)["namespace"] == "llm-prod"
    }
    old_pods = {dict(k[1])["pod"] for k in state if k[0] == "vllm:prompt_tokens_total"}
    assert new_pods - old_pods
    for s, v in zip(live.series.specs, live.series.values, strict=True):
        if s.name == "vllm:prompt_tokens_total" and dict(s.labels)["pod"] in new_pods - old_pods:
            assert v < state[next(k for k in state if k[0] == s.name)]


def test_bad_rollout_shows_as_5xx_and_slow_first_tokens(
    fleet: Fleet, catalog: PriceCatalog
) -> None:
    def error_share_and_slow(version: str) -> tuple[float, float]:
        live = LiveFleet(
            fleet, fleet_snapshot(fleet, catalog, versions={"chat-primary": version}), t=T0
        )
        live.tick(T0 + 600)
        ok = err = slow = total = 0.0
        for s, v in zip(live.series.specs, live.series.values, strict=True):
            labels = dict(s.labels)
            if not labels.get("pod", "").startswith("chat-primary"):
                continue
            if s.name == "http_requests_total":
                ok += v if labels["status"] == "2xx" else 0
                err += v if labels["status"] == "5xx" else 0
            if s.name == "vllm:time_to_first_token_seconds_bucket" and labels["le"] == "1.0":
                slow -= v
            if s.name == "vllm:time_to_first_token_seconds_count":
                slow += v
                total += v
        return err / (ok + err), slow / total

    good_err, good_slow = error_share_and_slow("2025.06.1")
    bad_err, bad_slow = error_share_and_slow("2025.07.0")
    assert good_err < 0.01 < 0.05 < bad_err
    assert good_slow < 0.05 < 0.5 < bad_slow  # share of first tokens slower than 1 s


def test_live_page_is_valid_exposition_served_on_loopback(
    fleet: Fleet, catalog: PriceCatalog
) -> None:
    live = LiveFleet(fleet, fleet_snapshot(fleet, catalog), t=T0)
    live.tick(T0 + 2)
    server = MetricsServer("127.0.0.1", 0, live)
    server.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["vllm:time_to_first_token_seconds"].type == "histogram"
    assert families["vllm:num_preemptions"].type == "counter"
    assert families["DCGM_FI_DEV_XID_ERRORS"].type == "gauge"
    samples = sum(len(f.samples) for f in families.values())
    assert samples == len(live.series)
    with pytest.raises(ValueError, match="loopback"):
        MetricsServer("0.0.0.0", 0, live)  # noqa: S104 (the point of the test)
