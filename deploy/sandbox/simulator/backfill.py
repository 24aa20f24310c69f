"""Write weeks of Prometheus history for the pods and nodes running now, as TSDB blocks.

The history is what the live exporter would have produced had the current pods run all along:
the same `SeriesSet` is stepped from `end - days` to `end`, so names, labels and the model are the
live ones, and the counters it leaves behind are where the live exporter continues (no reset, no
gap). kube-state-metrics' series are added with ksm's own label sets.

Speed and memory: the range is cut at `promtool`'s block boundaries (54 h, the largest block size
Prometheus itself compacts to with a month or two of retention) and each piece becomes one
OpenMetrics file, so only one piece of values is in memory at a time and `promtool` parses each
file once (a file that spans several blocks is re-parsed for every block). Pieces are handed to
`promtool` in the background while the next one is generated.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path

from deploy.sandbox.simulator import exposition
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.ksm import DEFAULT_ALLOWLIST, ksm_series
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.series import Family, SeriesKey, SeriesSet

log = logging.getLogger(__name__)

BLOCK_HOURS = 54  # 2h × 3³: a size in promtool's and Prometheus' block-range ladder
# About two minutes of work on two cores (promtool takes ~3 µs a sample with these label sets).
MAX_SAMPLES = 40_000_000


class BackfillError(RuntimeError):
    """promtool refused the generated history; the message carries its output."""


@dataclass
class BackfillResult:
    """What was written, and where the live exporter continues from."""

    start: float  # first sample, epoch seconds
    end: float  # last sample, epoch seconds
    step: float
    series: int
    samples: int
    state: dict[SeriesKey, float]  # counter values at `end`
    timings: dict[str, float] = field(default_factory=dict)
    blocks: int = 0


def timeline(end: float, days: float, step: float) -> list[float]:
    """Sample times: `step`-aligned, the last at or before `end`, covering `days` days."""
    last = math.floor(end / step) * step
    n = max(1, int(days * 86400 // step))
    return [last - (n - 1 - k) * step for k in range(n)]


class BackfillCancelled(RuntimeError):
    """The backfill was asked to stop (SIGTERM) before it finished."""


class PromtoolRunner:
    """Runs promtool imports and remembers each child by PID, so a stop can end them."""

    def __init__(self, promtool: Path, data_dir: Path, block_hours: int = BLOCK_HOURS) -> None:
        self.promtool, self.data_dir, self.block_hours = promtool, data_dir, block_hours
        self._running: dict[int, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def run(self, path: Path) -> str:
        """`promtool tsdb create-blocks-from openmetrics` on one file; returns its output."""
        cmd = [
            str(self.promtool),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={self.block_hours}h",
            str(path),
            str(self.data_dir),
        ]
        with self._lock:  # started under the lock, so `terminate_all` cannot miss it
            if self._closed:
                raise BackfillCancelled(f"not importing {path.name}: the backfill was stopped")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._running[proc.pid] = proc
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
        if proc.returncode != 0:
            tail = (err or out).strip()[-2000:]
            raise BackfillError(f"{' '.join(cmd)} failed with exit code {proc.returncode}: {tail}")
        return out

    def terminate_all(self) -> None:
        """Refuse new imports and terminate the running ones (no-op once all have finished)."""
        with self._lock:
            self._closed = True
            procs = list(self._running.values())
        for proc in procs:
            proc.terminate()  # by PID, only our own children
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _write_piece(
    path: Path,
    series: SeriesSet,
    prefixes: list[str],
    columns: list[tuple[float, ...]],
    stamps: list[str],
    ksm: list[tuple[Family, list[tuple[str, float]]]],
) -> int:
    """One complete OpenMetrics file: every family once, its series contiguous, then `# EOF`."""
    samples = 0
    with path.open("w", buffering=1 << 20) as out:
        for family, idxs in series.families:
            out.write(exposition.openmetrics_header(family))
            for i in idxs:
                samples += exposition.write_openmetrics_series(out, prefixes[i], columns[i], stamps)
        for family, items in ksm:
            if not items:
                continue
            out.write(exposition.openmetrics_header(family))
            for prefix, v in items:
                samples += exposition.write_openmetrics_series(
                    out, prefix, [v] * len(stamps), stamps
                )
        out.write(exposition.OPENMETRICS_EOF)
    return samples


def backfill(
    placement: Placement,
    snapshot: ClusterSnapshot,
    *,
    end: float,
    days: float,
    step: float = 120.0,
    work_dir: Path,
    data_dir: Path | None,
    promtool: Path = Path("/usr/bin/promtool"),
    ksm_instance: str | None = None,
    ksm_allowlist: str = DEFAULT_ALLOWLIST,
    block_hours: int = BLOCK_HOURS,
    progress: Callable[[str], None] = log.info,
    keep_files: bool = False,
    max_samples: int = MAX_SAMPLES,
    stop: threading.Event | None = None,
) -> BackfillResult:
    """Generate history over `days` days ending at `end` and, if `data_dir` is set, import it.

    Without `data_dir` the OpenMetrics files are left in `work_dir` (for tests and inspection).
    A fleet so large that the history would exceed `max_samples` keeps its days but gets a
    coarser step (whole minutes), so a scaled-up sandbox still starts in bounded time.
    Setting `stop` ends the work early (running promtools are terminated): `BackfillCancelled`.
    """
    t_start = time.monotonic()
    series = SeriesSet(placement)
    prefixes = exposition.prefixes(series.specs)
    ksm: list[tuple[Family, list[tuple[str, float]]]] = []
    if ksm_instance:
        for family, labelled in ksm_series(snapshot, ksm_instance, ksm_allowlist):
            texts = [(exposition.series_text(family.name, labels), v) for labels, v in labelled]
            ksm.append((family, texts))
    n_series = len(series) + sum(len(items) for _, items in ksm)
    if n_series * days * 86400 / step > max_samples:
        coarser = math.ceil(n_series * days * 86400 / max_samples / 60) * 60
        progress(
            f"backfill: {n_series} series at {step:g}s would exceed {max_samples / 1e6:.0f}M "
            f"samples; using a {coarser}s step"
        )
        step = float(coarser)
    times = timeline(end, days, step)
    block_s = block_hours * 3600
    pieces: dict[int, list[float]] = {}
    for t in times:
        pieces.setdefault(int(t // block_s), []).append(t)
    progress(
        f"backfill: {n_series} series × {len(times)} steps of {step:g}s "
        f"({len(times) * n_series / 1e6:.1f}M samples) in {len(pieces)} pieces"
    )

    work_dir.mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    runner = PromtoolRunner(promtool, data_dir, block_hours) if data_dir is not None else None
    pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 2))
    futures: list[tuple[Path, Future[str]]] = []
    gen_s = tail_s = 0.0
    samples = 0
    try:
        for n, (piece, piece_times) in enumerate(sorted(pieces.items()), 1):
            if stop.is_set():
                raise BackfillCancelled(f"stopped after {n - 1} of {len(pieces)} pieces")
            t0 = time.monotonic()
            rows = []
            for k, t in enumerate(piece_times):
                if k % 256 == 0 and stop.is_set():
                    raise BackfillCancelled(f"stopped in piece {n} of {len(pieces)}")
                series.step(t, step)
                rows.append(list(series.values))
            columns = list(zip(*rows, strict=True))
            del rows
            stamps = [str(int(t)) if t == int(t) else repr(t) for t in piece_times]
            path = work_dir / f"history-{piece:06d}.om"
            samples += _write_piece(path, series, prefixes, columns, stamps, ksm)
            del columns
            gen_s += time.monotonic() - t0
            size_mb = path.stat().st_size / 1e6
            progress(
                f"backfill: piece {n}/{len(pieces)} written ({size_mb:.0f} MB, {gen_s:.1f}s so far)"
            )
            if runner is not None:
                futures.append((path, pool.submit(runner.run, path)))
        t_wait = time.monotonic()
        for path, fut in futures:
            while not stop.is_set():
                try:
                    fut.result(timeout=0.5)
                    break
                except FuturesTimeout:
                    continue
            if stop.is_set():
                raise BackfillCancelled("stopped while promtool was importing")
            if not keep_files:
                path.unlink(missing_ok=True)
        tail_s = time.monotonic() - t_wait
    except BackfillCancelled:
        for path, _fut in futures:  # a stopped backfill leaves no half-imported pieces behind
            path.unlink(missing_ok=True)
        raise
    finally:
        if runner is not None:
            runner.terminate_all()
        pool.shutdown(wait=True, cancel_futures=True)
    total = time.monotonic() - t_start
    timings = {
        "generate_s": round(gen_s, 2),
        "promtool_tail_s": round(tail_s, 2),
        "total_s": round(total, 2),
    }
    progress(
        f"backfill: {samples / 1e6:.1f}M samples, generation {gen_s:.1f}s, "
        f"promtool finished {tail_s:.1f}s after generation, total {total:.1f}s"
    )
    return BackfillResult(
        start=times[0],
        end=times[-1],
        step=step,
        series=n_series,
        samples=samples,
        state=series.state(),
        timings=timings,
        blocks=len(futures),
    )
