"""`make test`'s xdist workers each run a sandbox on their own ports: the ranges never overlap, and a
base whose ports reach the kernel's ephemeral range is refused with the reason before anything starts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.integration import conftest as it


def test_each_worker_gets_its_own_port_range() -> None:
    ranges = [(19000 + it.PORT_STRIDE * it.worker_index(f"gw{i}"),
               19000 + it.PORT_STRIDE * it.worker_index(f"gw{i}") + it.PORT_SPAN) for i in range(4)]
    for (a0, a1), (b0, _) in itertools.pairwise(ranges):
        assert a1 < b0, f"worker ranges overlap: {a0}..{a1} and {b0}"
    assert it.worker_index("master") == 0 and it.worker_index(None) in (0, it.worker_index())


def test_default_workers_stay_below_the_ephemeral_range() -> None:
    it.check_port_range(19000 + it.PORT_STRIDE * 2, ephemeral=32768)  # make test's three workers


def test_a_base_in_the_ephemeral_range_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="ephemeral range from 32768"):
        it.check_port_range(41000, ephemeral=32768)
    (tmp_path / "range").write_text("40000\t60999\n")
    assert it.ephemeral_ports_start(tmp_path / "range") == 40000
    assert it.ephemeral_ports_start(tmp_path / "missing") == 32768


def test_sandbox_starts_take_turns_across_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers of one run entering the start lock at once: the second waits until the first is out."""
    import threading
    import time

    class Factory:  # the two workers' TempPathFactory: basetemp/popen-gwN under the run's basetemp
        def __init__(self, name: str) -> None:
            self.dir = tmp_path / f"popen-{name}"
            self.dir.mkdir()

        def getbasetemp(self) -> Path:
            return self.dir

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    spans: list[tuple[float, float]] = []

    def start(name: str) -> None:
        with it.one_start_at_a_time(Factory(name)):  # type: ignore[arg-type]
            t0 = time.monotonic()
            time.sleep(0.3)
            spans.append((t0, time.monotonic()))

    threads = [threading.Thread(target=start, args=(f"gw{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    (_, a1), (b0, _) = sorted(spans)
    assert a1 <= b0, "two sandbox starts overlapped"
