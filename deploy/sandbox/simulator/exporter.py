"""The live side: follow the cluster, advance the fleet's series with real time, serve `/metrics`.

`LiveFleet` owns the current placement and `SeriesSet`; each tick it advances counters by the real
elapsed time under the current snapshot. When the snapshot changes (a rollout, a scale-out, a
fault), it rebuilds the series and carries every counter over by series identity, so counters
never go backwards. `MetricsServer` serves the last rendered page on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from deploy.sandbox.fleet import Fleet
from deploy.sandbox.simulator import exposition
from deploy.sandbox.simulator.cluster import ClusterSnapshot
from deploy.sandbox.simulator.placement import Placement
from deploy.sandbox.simulator.series import SeriesKey, SeriesSet

log = logging.getLogger(__name__)
MAX_CLOCK_OFFSET_S = 7 * 86400.0  # a week either way: any hour of any weekday


class LiveFleet:
    """The fleet's series as of the last tick."""

    def __init__(
        self,
        fleet: Fleet,
        snapshot: ClusterSnapshot,
        *,
        t: float,
        state: Mapping[SeriesKey, float] | None = None,
    ) -> None:
        self.fleet = fleet
        self.snapshot = snapshot
        self.placement = Placement(fleet, snapshot)
        self._counters: dict[SeriesKey, float] = dict(state or {})
        self.series = SeriesSet(self.placement, self._counters)
        self._prefixes = exposition.prefixes(self.series.specs)
        self.t = t
        self.clock_offset_s = 0.0
        self._page = b""
        self._lock = threading.Lock()

    def set_clock(self, offset_s: float) -> None:
        """Move the traffic model's clock `offset_s` seconds ahead of real time (0: real time).

        Only demand follows it (a scenario can start at a workload's daily peak or inside a burst);
        samples keep their real timestamps and counters keep counting, so Prometheus sees a traffic
        change, not a time jump."""
        with self._lock:
            self.clock_offset_s = float(offset_s)
            self.placement.demand_offset_s = self.clock_offset_s

    def update(self, snapshot: ClusterSnapshot) -> bool:
        """Follow a new snapshot; returns whether the series were rebuilt."""
        if snapshot == self.snapshot:
            return False
        with self._lock:
            self._counters.update(self.series.state())
            self.snapshot = snapshot
            self.placement = Placement(self.fleet, snapshot, self.clock_offset_s)
            self.series = SeriesSet(self.placement, self._counters)
            self._prefixes = exposition.prefixes(self.series.specs)
        log.info(
            "cluster changed: %d serving pods, %d GPUs, %d series",
            len(self.placement.serving),
            len(self.placement.gpus),
            len(self.series),
        )
        return True

    def tick(self, now: float) -> None:
        """Advance to `now` (epoch seconds) and render the page."""
        with self._lock:
            dt = now - self.t
            if dt <= 0:
                return
            self.series.step(now, dt)
            self.t = now
            self._page = self._render().encode()

    def _render(self) -> str:
        values = self.series.values
        return exposition.render_text(
            (family, [(self._prefixes[i], values[i]) for i in idxs])
            for family, idxs in self.series.families
        )

    @property
    def page(self) -> bytes:
        return self._page

    def state(self) -> dict[SeriesKey, float]:
        with self._lock:
            return {**self._counters, **self.series.state()}


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self._send(200, self.server.fleet.page, exposition.CONTENT_TYPE)
        elif self.path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif self.path == "/clock":
            self._clock_page()
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_PUT(self) -> None:
        """`PUT /clock {"offset_s": N}`: the simulation clock (the sandbox's eval harness sets it)."""
        if self.path != "/clock":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= 1024:
                raise ValueError("a JSON body of at most 1 KiB")
            offset = json.loads(self.rfile.read(length))["offset_s"]
            if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset) \
                    or abs(offset) > MAX_CLOCK_OFFSET_S:
                raise ValueError(f"offset_s: a number of seconds within ±{MAX_CLOCK_OFFSET_S:.0f}")
        except (ValueError, KeyError, TypeError) as e:
            self._send(400, f"bad clock request: {e}\n".encode(), "text/plain; charset=utf-8")
            return
        self.server.fleet.set_clock(float(offset))
        log.info("simulation clock set %+.0f s from real time", offset)
        self._clock_page()

    def _clock_page(self) -> None:
        offset = self.server.fleet.clock_offset_s
        body = json.dumps({"offset_s": offset, "sim_time": time.time() + offset}).encode()
        self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class MetricsServer(ThreadingHTTPServer):
    """`/metrics` and `/healthz` on a loopback address."""

    daemon_threads = True

    def __init__(self, host: str, port: int, fleet: LiveFleet) -> None:
        if host != "127.0.0.1":
            raise ValueError(f"refusing to listen on {host}: the simulator binds loopback only")
        self.fleet = fleet
        super().__init__((host, port), _Handler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        return thread
