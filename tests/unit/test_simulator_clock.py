"""The simulation clock: a scenario can start at a workload's daily peak (or inside a burst) on a sandbox
that runs in real time, through the simulator's `/clock`, and bad requests change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator import model
from deploy.sandbox.simulator.exporter import LiveFleet, MetricsServer
from deploy.sandbox.simulator.synthetic import fleet_snapshot

DAY = 86400.0
T0 = 1_795_000_000.0 - (1_795_000_000.0 % DAY)  # midnight UTC of a weekday (a Monday)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


@pytest.fixture
def server(fleet: Fleet) -> Iterator[tuple[MetricsServer, str]]:
    live = LiveFleet(fleet, fleet_snapshot(fleet, load_prices()), t=T0)
    srv = MetricsServer("127.0.0.1", 0, live)
    srv.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _put(url: str, body: bytes) -> tuple[int, str]:
    r = httpx.put(f"{url}/clock", content=body, headers={"Content-Type": "application/json"}, timeout=5)
    return r.status_code, r.text


def _requests(live: LiveFleet, workload: str) -> float:
    return sum(v for s, v in zip(live.series.specs, live.series.values, strict=True)
               if s.name == "http_requests_total" and dict(s.labels).get("pod", "").startswith(workload))


def test_the_clock_moves_demand_to_the_daily_peak_and_back(server: tuple[MetricsServer, str], fleet: Fleet) -> None:
    srv, url = server
    w = fleet.workload("chat-primary")
    trough_t = T0 + ((w.traffic.peak_hour_utc + 12) % 24) * 3600  # the real time: the workload's trough
    live = srv.fleet
    real = live.placement.workload_demand(w, trough_t)
    status, body = _put(url, json.dumps({"offset_s": w.traffic.peak_hour_utc * 3600 - (trough_t - T0)}).encode())
    assert status == 200, body
    peak = live.placement.workload_demand(w, trough_t)
    assert peak > 1.5 * real  # the peak's demand, at the same real time
    assert peak == pytest.approx(model.demand_rps(w.traffic, T0 + w.traffic.peak_hour_utc * 3600,
                                                  seed=f"{w.namespace}/{w.name}"))
    # The page follows it: a minute at the simulated peak serves more requests than a minute at the trough.
    before = _requests(live, "chat-primary")
    live.tick(live.t + 60)
    at_peak = _requests(live, "chat-primary") - before
    assert _put(url, b'{"offset_s": 0}')[0] == 200
    before = _requests(live, "chat-primary")
    live.tick(live.t + 60)
    assert at_peak > 1.2 * (_requests(live, "chat-primary") - before)
    assert httpx.get(f"{url}/clock", timeout=5).json()["offset_s"] == 0


def test_the_clock_survives_a_cluster_change(server: tuple[MetricsServer, str], fleet: Fleet) -> None:
    srv, url = server
    assert _put(url, b'{"offset_s": 7200}')[0] == 200
    srv.fleet.update(fleet_snapshot(fleet, load_prices(), versions={"chat-primary": "2025.07.0"}))
    assert srv.fleet.placement.demand_offset_s == 7200


@pytest.mark.parametrize("body", [b"", b"not json", b'{"offset": 5}', b'{"offset_s": "5"}', b'{"offset_s": true}',
                                  b'{"offset_s": 1e12}', b'{"offset_s": NaN}', b"x" * 2000])
def test_a_bad_clock_request_is_refused_and_changes_nothing(server: tuple[MetricsServer, str], body: bytes) -> None:
    srv, url = server
    assert _put(url, b'{"offset_s": 3600}')[0] == 200
    status, text = _put(url, body)
    assert status == 400 and "bad clock request" in text
    assert srv.fleet.clock_offset_s == 3600
