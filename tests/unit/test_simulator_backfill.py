"""Backfilled history: the live series' own names and labels, counters that continue into live
samples, and files that the real promtool imports and the real Prometheus answers queries from."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from deploy.sandbox.fleet import Fleet, load_prices
from deploy.sandbox.simulator.backfill import BackfillCancelled, backfill, timeline
from deploy.sandbox.simulator.exporter import LiveFleet
from deploy.sandbox.simulator.exposition import series_text
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.series import SeriesSpec
from deploy.sandbox.simulator.synthetic import fleet_snapshot

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus_installed() -> None:
    # Fails rather than skips: set-up installs the package, so its absence is a set-up defect.
    assert PROMTOOL and PROMETHEUS, "Debian's prometheus is not installed: `make setup` (deploy/setup.sh) installs it"


needs_prometheus = pytest.mark.usefixtures("prometheus_installed")
END = 1_795_000_000.0
KSM = "127.0.0.1:17081"
_LINE = re.compile(r"^(\S+?(?:\{.*\})?) (\S+) (\d+)$")


@pytest.fixture(scope="module")
def small_fleet() -> Fleet:
    """Two workloads (one vLLM, one Triton) on two pools: quick to backfill, still every runtime."""
    fleet = Fleet.load()
    keep = {"chat-lite", "embed-api"}
    pools = [
        p.model_copy(update={"nodes": 1}) if p.name == "a100" else p
        for p in fleet.pools
        if p.name in {"l4", "a100"}
    ]
    return fleet.model_copy(
        update={"workloads": [w for w in fleet.workloads if w.name in keep], "pools": pools}
    )


def _read_om(directory: Path) -> dict[str, list[tuple[float, int]]]:
    series: dict[str, list[tuple[float, int]]] = {}
    for path in sorted(directory.glob("*.om")):
        text = path.read_text()
        assert text.endswith("# EOF\n")
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = _LINE.match(line)
            assert m, line
            series.setdefault(m.group(1), []).append((float(m.group(2)), int(m.group(3))))
    return series


def test_history_ends_where_the_live_exporter_continues(small_fleet: Fleet, tmp_path: Path) -> None:
    catalog = load_prices()
    snap = fleet_snapshot(small_fleet, catalog)
    placement = Placement(small_fleet, snap)
    result = backfill(
        placement,
        snap,
        end=END,
        days=0.5,
        step=120,
        work_dir=tmp_path,
        data_dir=None,
        ksm_instance=KSM,
        progress=lambda _m: None,
    )
    history = _read_om(tmp_path)
    stamps = timeline(END, 0.5, 120)
    assert result.end == stamps[-1] <= END and result.start == stamps[0]
    assert all([t for _, t in points] == [int(t) for t in stamps] for points in history.values())

    live = LiveFleet(small_fleet, snap, t=result.end, state=result.state)
    live.tick(result.end + 30)
    page = live.page.decode()
    live_series = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if not line.startswith("#")
    }
    fleet_history = {k: v for k, v in history.items() if 'job="kube-state-metrics"' not in k}
    # the same series, byte for byte
    assert set(fleet_history) == set(live_series)
    # counters continue from the last backfilled value: no reset, no gap
    counter_names = [s.key for s in live.series.specs if s.accumulate]
    assert counter_names
    for spec in live.series.specs:
        last = fleet_history[_text(spec)][-1][0]
        if spec.accumulate:
            assert result.state[spec.key] == last
            assert live_series[_text(spec)] >= last
    # kube-state-metrics history carries its own label sets
    ksm = [k for k in history if 'job="kube-state-metrics"' in k]
    gpu_requests = [
        k
        for k in ksm
        if k.startswith("kube_pod_container_resource_requests") and 'resource="nvidia_com_gpu"' in k
    ]
    assert len(gpu_requests) == 2 + 2  # chat-lite ×2, embed-api ×2
    assert all('unit="integer"' in k and f'instance="{KSM}"' in k for k in gpu_requests)
    labels = next(k for k in ksm if k.startswith("kube_pod_labels{") and "chat-lite" in k)
    for label in (
        "label_model=",
        "label_model_version=",
        "label_serving_runtime=",
        "label_team=",
        "label_app_kubernetes_io_name=",
    ):
        assert label in labels


def _text(spec: SeriesSpec) -> str:
    return series_text(spec.name, spec.labels)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus_on(tmp_path: Path) -> Iterator[tuple[Path, Callable[[Path], str]]]:
    """Start the real Prometheus on a data dir (after the test has filled it); stop it by PID."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(data: Path) -> str:
        port = _free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1m\n")
        log = (tmp_path / "prometheus.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            [
                PROMETHEUS or "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("Prometheus did not become ready")

    yield tmp_path, start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


@needs_prometheus
def test_promtool_imports_history_and_prometheus_answers_range_queries(
    small_fleet: Fleet, prometheus_on: tuple[Path, Callable[[Path], str]]
) -> None:
    tmp_path, start = prometheus_on
    catalog = load_prices()
    snap = fleet_snapshot(small_fleet, catalog)
    end = time.time()
    data = tmp_path / "data"
    result = backfill(
        Placement(small_fleet, snap),
        snap,
        end=end,
        days=3,
        step=120,
        work_dir=tmp_path / "work",
        data_dir=data,
        promtool=Path(PROMTOOL or "promtool"),
        ksm_instance=KSM,
        progress=lambda _m: None,
    )
    assert result.blocks >= 2 and any(data.glob("*/meta.json"))
    assert not list((tmp_path / "work").glob("*.om"))  # imported pieces are removed
    url = start(data)
    for promql, expect in (
        ("avg(DCGM_FI_DEV_GPU_UTIL)", 1),
        ('sum by (namespace) (rate(vllm:generation_tokens_total{job="vllm"}[10m]))', 1),
        ('sum(kube_pod_container_resource_requests{resource="nvidia_com_gpu"})', 1),
        (
            "histogram_quantile(0.95, sum by (le) "
            "(rate(vllm:time_to_first_token_seconds_bucket[10m])))",
            1,
        ),
    ):
        r = httpx.get(
            f"{url}/api/v1/query_range",
            timeout=30,
            params={"query": promql, "start": result.start, "end": result.end, "step": 3600},
        )
        r.raise_for_status()
        res = r.json()["data"]["result"]
        assert len(res) == expect, promql
        points = res[0]["values"]
        assert len(points) >= 3 * 24 - 1, f"{promql}: {len(points)} hourly points"
        assert all(float(v) >= 0 for _, v in points)
    r = httpx.get(
        f"{url}/api/v1/query",
        params={
            "query": 'sum(kube_pod_container_resource_requests{resource="nvidia_com_gpu"})',
            "time": result.end,
        },
        timeout=30,
    )
    assert float(r.json()["data"]["result"][0]["value"][1]) == 4


def test_a_huge_fleet_keeps_its_days_with_a_coarser_step(
    small_fleet: Fleet, tmp_path: Path
) -> None:
    catalog = load_prices()
    snap = fleet_snapshot(small_fleet, catalog)
    result = backfill(
        Placement(small_fleet, snap),
        snap,
        end=END,
        days=1,
        step=120,
        work_dir=tmp_path,
        data_dir=None,
        progress=lambda _m: None,
        max_samples=100_000,
    )
    assert result.step > 120 and result.step % 60 == 0
    assert result.samples <= 100_000
    assert result.end - result.start >= 86400 - 2 * result.step


def test_a_stop_request_ends_the_backfill(small_fleet: Fleet, tmp_path: Path) -> None:
    snap = fleet_snapshot(small_fleet, load_prices())
    stop = threading.Event()
    stop.set()
    with pytest.raises(BackfillCancelled):
        backfill(
            Placement(small_fleet, snap),
            snap,
            end=END,
            days=1,
            work_dir=tmp_path,
            data_dir=tmp_path / "data",
            progress=lambda _m: None,
            stop=stop,
        )
