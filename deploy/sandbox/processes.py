"""Start, track and stop the sandbox's processes by PID.

Every process the sandbox starts is recorded in `pids.json` (name, PID, argv, log file) the moment
it is spawned, so `opsagent sandbox down` — from any shell, after any crash — stops exactly those
processes and nothing else. A PID is only signalled while /proc shows it still runs the recorded
executable, so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class StartError(RuntimeError):
    """A component failed to start or become ready; the message says which and shows its log tail."""


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    argv: list[str]
    log: str
    started: float


def _alive_as(proc: Proc) -> bool:
    """Return whether `proc.pid` is alive and still runs `proc.argv[0]` (not a recycled PID)."""
    want = Path(proc.argv[0]).name
    for attempt in range(3):  # /proc can be briefly unreadable while a process is busy starting
        try:
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, waiting to be reaped
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
            return False
        names: set[str] = set()
        with contextlib.suppress(OSError):
            names |= {Path(p.decode(errors="replace")).name
                      for p in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:2]}
        with contextlib.suppress(OSError):
            names.add(Path(f"/proc/{proc.pid}/exe").readlink().name)
        if want in names or Path(os.path.realpath(proc.argv[0])).name in names:
            return True
        if attempt < 2:
            time.sleep(0.05)
    return False


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    """Spawns detached processes and keeps their PIDs in `state_dir/pids.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.pid_file = state_dir / "pids.json"
        # Children spawned by this very process: right after fork /proc still shows the parent's
        # command line, so their liveness is asked of the Popen handle (which also reaps them).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def procs(self) -> list[Proc]:
        try:
            raw = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return []
        return [Proc(**p) for p in raw]

    def _save(self, procs: Sequence[Proc]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in procs], indent=1))
        tmp.replace(self.pid_file)

    def alive(self, proc: Proc) -> bool:
        child = self._children.get(proc.pid)
        if child is not None:
            return child.poll() is None
        return _alive_as(proc)

    def running(self) -> dict[str, Proc]:
        for child in self._children.values():  # reap children another supervisor stopped
            child.poll()
        return {p.name: p for p in self.procs() if self.alive(p)}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        """Spawn `argv` in its own session (it outlives this command), log to logs/NAME.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        full_env = dict(os.environ) | dict(env or {})
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=full_env, start_new_session=True, cwd=self.state_dir,
            )
        proc = Proc(name=name, pid=popen.pid, argv=list(argv), log=str(log_path), started=time.time())
        self._children[popen.pid] = popen
        self._save([p for p in self.procs() if p.name != name] + [proc])
        log.debug("started %s pid=%d", name, popen.pid)
        return proc

    def wait_ready(
        self, proc: Proc, check: Callable[[], bool], timeout: float, what: str = "ready"
    ) -> float:
        """Poll `check` until it is true; fail fast if the process dies. Returns seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive(proc):
                raise StartError(f"{proc.name} (pid {proc.pid}) exited before it was {what}; "
                                 f"log {proc.log}:\n{log_tail(proc.log)}")
            try:
                if check():
                    return time.monotonic() - t0
            except Exception as e:  # readiness probes fail in many ways while a process starts
                last_err = e
            time.sleep(0.2)
        raise StartError(f"{proc.name} (pid {proc.pid}) was not {what} after {timeout:.0f}s "
                         f"(last probe error: {last_err}); log {proc.log}:\n{log_tail(proc.log)}")

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop one recorded process: SIGTERM, then SIGKILL after `timeout`. True if it was running."""
        procs = self.procs()
        target = next((p for p in procs if p.name == name), None)
        was_running = False
        if target and self.alive(target):
            was_running = True
            _signal(target, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive(target) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive(target):
                log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing", name, target.pid, timeout)
                _signal(target, signal.SIGKILL)
                while self.alive(target):
                    time.sleep(0.05)
        if target and (child := self._children.pop(target.pid, None)) is not None:
            child.wait()
        self._save([p for p in self.procs() if p.name != name])
        return was_running

    def stop_all(self, timeout: float = 10.0) -> list[str]:
        """Stop every recorded process, newest first. Returns the names that were running."""
        stopped = []
        for proc in sorted(self.procs(), key=lambda p: p.started, reverse=True):
            if self.stop(proc.name, timeout):
                stopped.append(proc.name)
        return stopped


def _signal(proc: Proc, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
