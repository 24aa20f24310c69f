"""The supervisor stops exactly the processes it started, and never a recycled PID."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.sandbox.processes import StartError, Supervisor, _alive_as


def test_start_record_and_stop(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    proc = sup.start("sleeper", ["/bin/sleep", "60"])
    assert json.loads((tmp_path / "pids.json").read_text())[0]["pid"] == proc.pid
    assert "sleeper" in sup.running()
    # A second supervisor (another CLI invocation) sees and stops it by PID.
    other = Supervisor(tmp_path)
    assert other.stop_all() == ["sleeper"]
    assert not _alive_as(proc)
    assert other.procs() == []
    assert sup.running() == {}


def test_a_recycled_pid_is_not_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "pids.json").write_text(json.dumps([{
            "name": "etcd", "pid": bystander.pid, "argv": ["/opt/bin/etcd"], "log": "x", "started": 0}]))
        assert Supervisor(tmp_path).stop_all() == []
        assert bystander.poll() is None, "a process that is not ours must survive"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_process_that_dies_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    proc = sup.start("broken", ["/bin/sh", "-c", "echo 'bind: address already in use' >&2; exit 3"])
    with pytest.raises(StartError, match="address already in use"):
        sup.wait_ready(proc, lambda: False, timeout=10)
