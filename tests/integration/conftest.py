"""One real sandbox per test session (per pytest-xdist worker), shared by that worker's integration tests.

The sandbox gets its own state directory and port range, so a developer's own sandbox on the default
ports is left alone: `OPSAGENT_TEST_PORT_BASE` (19000 by default) plus `PORT_STRIDE` times the
xdist worker's number, so `make test`'s workers (`pytest -n 3 --dist loadfile`) each run their own
sandbox side by side. A file's tests stay on one worker (`loadfile`), so a module-scoped fixture such
as test_rollouts' second sandbox starts once. Alertmanager posts to a receiver owned by this session.
At the end every process the sandbox started is stopped, and the suite fails if any is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from deploy.sandbox import faults
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.processes import _alive_as
from deploy.sandbox.receiver import WebhookReceiver
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

PORT_STRIDE = 2000  # a sandbox uses base..base+700; test_rollouts' second sandbox sits at base+1000,
# test_rightsize_moves' at base+1500


def worker_index(worker: str | None = None) -> int:
    """The pytest-xdist worker's number (gw0 → 0, gw2 → 2); 0 when the tests run in one process."""
    name = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


PORT_BASE = int(os.environ.get("OPSAGENT_TEST_PORT_BASE", "19000")) + PORT_STRIDE * worker_index()
PORT_SPAN = 1950  # the worker's sandbox, test_rollouts' (base+1000+443) and test_rightsize_moves' (base+1500+443)


def ephemeral_ports_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """Where the kernel starts handing out ports to `bind(0)` (free_port() in other tests and processes)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def check_port_range(base: int = PORT_BASE, ephemeral: int | None = None) -> None:
    """Fail with the reason when this worker's sandbox ports reach the ephemeral range, where any
    process's `bind(0)` may take one of them first (seen: kube-state-metrics' port taken mid-start)."""
    start = ephemeral_ports_start() if ephemeral is None else ephemeral
    if base + PORT_SPAN > start:
        raise pytest.UsageError(
            f"sandbox ports {base}..{base + PORT_SPAN} (OPSAGENT_TEST_PORT_BASE + {PORT_STRIDE} x worker) reach the "
            f"kernel's ephemeral range from {start}: pick OPSAGENT_TEST_PORT_BASE so that base + {PORT_STRIDE} x "
            f"(workers - 1) + {PORT_SPAN} stays below {start}")


@contextlib.contextmanager
def one_start_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start one sandbox at a time across xdist workers: starting is the CPU-heavy part (the 14-day
    backfill), and three at once on two cores outran the simulator's 300 s readiness limit."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process: nothing to take turns with (and pytest-of-USER is shared by every session)
        return
    root = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers (basetemp/popen-gwN)
    with (root / "sandbox-start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(port=PORT_BASE + 99) as rx:
        yield rx


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver) -> Iterator[dict[str, Any]]:
    check_port_range()
    settings = SandboxSettings(dir=tmp_path_factory.mktemp("sandbox"), port_base=PORT_BASE, webhook_url=webhook.url)
    yield from sandbox_lifetime(settings, tmp_path_factory, "sandbox")


def sandbox_lifetime(settings: SandboxSettings, tmp_path_factory: pytest.TempPathFactory, label: str,
                     must_run: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """A fixture's sandbox: started in turn with the other workers', its status (with `_sandbox`) yielded,
    stopped after, and no process of it left running."""
    sb = Sandbox(settings, progress=lambda m: print(f"[{label}] {m}", flush=True))
    try:
        with one_start_at_a_time(tmp_path_factory):
            status = sb.up()
    except Exception:
        sb.down()
        raise
    procs = sb.sup.procs()
    missing = set(must_run) - {p.name for p in procs}
    assert not missing, f"not run under the Supervisor: {sorted(missing)}"
    status["_sandbox"] = sb
    yield status
    sb.down()
    left = [f"{p.name} (pid {p.pid})" for p in procs if _alive_as(p)]
    assert not left, f"processes left running after sandbox down: {left}"


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return Fleet.load()


@pytest.fixture(scope="session")
def admin(sandbox: dict[str, Any]) -> Iterator[client.ApiClient]:
    api = api_client(Path(sandbox["kubeconfigs"]["admin"]))
    yield api
    api.close()


@pytest.fixture
def clean_faults(admin: client.ApiClient, fleet: Fleet) -> Iterator[None]:
    """Whatever a test injects is cleared afterwards, so tests don't see each other's faults."""
    yield
    faults.clear(admin, fleet)


@pytest.fixture
def namespace(admin: client.ApiClient, fleet: Fleet) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(admin).delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(sandbox: dict[str, Any]) -> Any:
    sb: Sandbox = sandbox["_sandbox"]
    from deploy.sandbox import components

    binary = components.locate(sb.s.cache_dir).kubectl

    def run(identity: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kubeconfig = sandbox["kubeconfigs"][identity]
        return subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args],
                              capture_output=True, text=True, check=check, timeout=60)

    return run


def webhook_auth(sandbox: dict[str, Any]) -> dict[str, str]:
    """The header the sandbox's Alertmanager sends; `opsagent serve --sandbox` answers 401 without it."""
    return {"Authorization": "Bearer " + Path(sandbox["webhook_token_file"]).read_text().strip()}
