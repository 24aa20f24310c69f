"""What the executor socket adds: execution latency in this process vs. through `opsagent executor serve`.

Against a running sandbox (`opsagent sandbox up --dir DIR --port-base N`), on one store:
- executions: a scale of the sandbox's `summarizer` Deployment, proposed and approved untimed, then timed
  from the `execute` call to its result (re-read, policy, approvals, claim, server-side dry run, write).
  In-process (`App.executor()`) and through the socket (`ExecutorClient` → the executor process) alternate,
  so load on the shared machine falls on both alike;
- the hop alone: `record_verification` of an inconclusive verdict (one ledger update and one audit append on
  either side), many times, in-process vs. socket.
Prints median and p95 of each, and the difference. The Deployment's replicas are restored at the end.

Run: uv run python tests/benchmarks/bench_executor_socket.py --sandbox-dir DIR [--executions 20] [--hops 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client

from agent.app import App, build_app
from agent.change.executor.client import ExecutorClient
from agent.change.models import ChangeSpec, ChangeStatus
from agent.entry.commands.common import sandbox_status, settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox.cluster import api_client

ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def line(name: str, xs: list[float]) -> str:
    return f"{name:<34} n={len(xs):<4} median {statistics.median(xs):7.2f} ms   p95 {pct(xs, 0.95):7.2f} ms"


def config(tmp: Path) -> Path:
    """The default policy with the rate limits lifted (a benchmark executes many changes on one target)."""
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    doc["limits"]["rate"] = {"max_changes_per_hour": 100000, "max_changes_per_target_per_hour": 100000}
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.yaml").write_text(yaml.safe_dump(doc))
    f = tmp / "settings.yaml"
    f.write_text(yaml.safe_dump({"policies_dir": str(tmp / "policies"),
                                 "executor": {"socket": str(tmp / "run" / "executor" / "executor.sock")}}))
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandbox-dir", type=Path, required=True)
    ap.add_argument("--executions", type=int, default=20, help="per mode")
    ap.add_argument("--hops", type=int, default=300, help="per mode")
    a = ap.parse_args()
    status = sandbox_status(a.sandbox_dir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-executor-socket-"))
    cfg = config(tmp)
    state = tmp / "state"
    settings = settings_for(cfg, status, state_dir=str(state))
    local = build_app(settings.model_copy(update={"executor": settings.executor.model_copy(
        update={"mode": "in-process"})}))
    sock = settings.executor.socket
    assert sock is not None
    with (tmp / "executor.log").open("ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "opsagent"), "executor", "serve", "--sandbox",
                                 "--sandbox-dir", str(a.sandbox_dir), "--state-dir", str(state), "--config",
                                 str(cfg)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    admin = api_client(Path(status["kubeconfigs"]["admin"]))
    apps = client.AppsV1Api(admin)
    target = ObjectRef(kind="Deployment", name="summarizer", namespace="research")
    before = apps.read_namespaced_deployment(target.name, target.namespace).spec.replicas
    try:
        deadline = time.monotonic() + 240
        while not sock.is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the executor process did not start: {(tmp / 'executor.log').read_text()[-800:]}")
            time.sleep(0.2)
        remote = ExecutorClient(sock, local.ledger, timeout_s=120)
        asyncio.run(run(local, remote, target, before, a.executions, a.hops))
    finally:
        proc.terminate()
        proc.wait(30)
        apps.patch_namespaced_deployment_scale(target.name, target.namespace, {"spec": {"replicas": before}})
        local.close()
        admin.close()


async def run(local: App, remote: ExecutorClient, target: ObjectRef, base: int, n: int, hops: int) -> None:
    ex = local.executor()
    times: dict[str, list[float]] = {"in-process": [], "socket": []}
    for i in range(2 * n):
        mode = "in-process" if i % 2 == 0 else "socket"
        spec = ChangeSpec(action=ActionKind.SCALE, cluster=local.settings.kubernetes.cluster, target=target,
                          params={"replicas": base + 1 + (i % 2)})
        ch = await ex.propose(spec, reason="benchmark", requester="bench")
        ex.approve(ch.id, "bob")
        t0 = time.perf_counter()
        result = await (ex.execute(ch.id) if mode == "in-process" else remote.execute(ch.id))
        times[mode].append((time.perf_counter() - t0) * 1000)
        assert result.status == ChangeStatus.APPLIED and result.applied_now, (mode, result)
        done = local.ledger.get(ch.id)
        assert done is not None
        ex.record_verification(done, "pass", "benchmark")  # finished: the same state next time is a new request
    # the hop alone: the same ledger update + audit append on either side of the socket
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=local.settings.kubernetes.cluster, target=target,
                      params={"replicas": base + 1})
    ch = await ex.propose(spec, reason="benchmark hop", requester="bench")
    ex.approve(ch.id, "bob")
    await ex.execute(ch.id)
    applied = local.ledger.get(ch.id)
    assert applied is not None and applied.status == ChangeStatus.APPLIED
    hop: dict[str, list[float]] = {"in-process": [], "socket": []}
    for i in range(2 * hops):
        mode = "in-process" if i % 2 == 0 else "socket"
        t0 = time.perf_counter()
        (ex if mode == "in-process" else remote).record_verification(applied, "inconclusive", "bench")
        hop[mode].append((time.perf_counter() - t0) * 1000)
    print(line("execute, in-process", times["in-process"]))
    print(line("execute, via the executor socket", times["socket"]))
    print(delta(times))
    print(line("record verdict, in-process", hop["in-process"]))
    print(line("record verdict, via the socket", hop["socket"]))
    print(delta(hop))


def delta(t: dict[str, list[float]]) -> str:
    med = statistics.median(t["socket"]) - statistics.median(t["in-process"])
    p95 = pct(t["socket"], 0.95) - pct(t["in-process"], 0.95)
    return f"{'  socket - in-process':<34}        median {med:+7.2f} ms   p95 {p95:+7.2f} ms"


if __name__ == "__main__":
    main()
