"""Bring the sandbox up and down: the start order, the endpoints, and the readiness of each part.

Start order: etcd → kube-apiserver → kube-controller-manager → kube-scheduler → KWOK →
kube-state-metrics → moto (CloudWatch) → cluster objects (RBAC, GPU nodes, serving Deployments) →
fleet simulator (backfills history into Prometheus's data dir, then serves live metrics) →
Prometheus → Alertmanager. Every process is recorded by PID the moment it starts; `down` stops
exactly those.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from deploy.sandbox import cluster, components, kwok, monitoring, pki, rollouts
from deploy.sandbox.fleet import DEFAULT_FLEET, DEFAULT_PRICES, Fleet, load_prices
from deploy.sandbox.processes import Proc, StartError, Supervisor

log = logging.getLogger(__name__)


class SandboxSettings(BaseModel):
    """Where the sandbox lives and how it is shaped. Built by the CLI and passed down."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(description="State directory: PKI, kubeconfigs, data, logs, pids.json.")
    cache_dir: Path = Field(default_factory=components.default_cache_dir,
                            description="Where the Go-built binaries are cached (outside the repo).")
    port_base: int = Field(default=17000, ge=1024, le=60000,
                           description="Every endpoint is port_base + a fixed offset, on 127.0.0.1.")
    nodes: int | None = Field(default=None, ge=1, le=5000,
                              description="Resize the GPU pools to about this many nodes (scale tests).")
    history_days: float = Field(default=14, ge=0, le=30, description="Backfilled history, days.")
    webhook_url: str = Field(default="http://127.0.0.1:8080/alertmanager",
                             description="Where Alertmanager sends notifications (opsagent serve's default).")
    fleet_file: Path = DEFAULT_FLEET
    price_file: Path = DEFAULT_PRICES
    rollouts: bool = Field(default=False,
                           description="Also run the Argo Rollouts controller and the Rollout-managed models of "
                                       "fleet-rollouts.yaml (off by default: the demo does not need them).")


@dataclass(frozen=True)
class Endpoints:
    etcd: str
    apiserver: str
    prometheus: str
    alertmanager: str
    cloudwatch: str
    simulator: str
    kube_state_metrics: str

    @classmethod
    def for_base(cls, base: int) -> Endpoints:
        h = "127.0.0.1"
        return cls(
            etcd=f"http://{h}:{base + 379}", apiserver=f"https://{h}:{base + 443}",
            prometheus=f"http://{h}:{base + 90}", alertmanager=f"http://{h}:{base + 93}",
            cloudwatch=f"http://{h}:{base + 50}", simulator=f"http://{h}:{base + 400}",
            kube_state_metrics=f"http://{h}:{base + 81}",
        )


# Argo Rollouts' controller (only in a sandbox started with rollouts); its listen address is loopback.
ROLLOUTS_METRICS_OFFSET = 290
ROLLOUTS_HEALTHZ_OFFSET = 291


def _hostport(url: str) -> str:
    return url.split("://", 1)[1]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, t0: float) -> None:
        self.phases[name] = round(time.monotonic() - t0, 2)


def _http_ok(url: str, *, token: str | None = None, ca: Path | None = None, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(url)  # noqa: S310
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    # Loopback URLs built by this module, never user input.
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except urllib.error.HTTPError as e:  # not ready yet (e.g. 500): the error holds the socket; close it
        e.close()
        return False


class Sandbox:
    """Operations on one sandbox state directory."""

    def __init__(self, settings: SandboxSettings, progress: Callable[[str], None] = print) -> None:
        self.s = settings
        self.dir = settings.dir
        self.sup = Supervisor(self.dir)
        self.ep = Endpoints.for_base(settings.port_base)
        self.progress = progress
        self.pki = pki.Pki(self.dir / "pki")

    @property
    def agent_targets_file(self) -> Path:
        """The `opsagent serve` addresses (host:port) Prometheus scrapes: monitoring.write_agent_targets."""
        return self.dir / "prometheus" / "opsagent-targets.json"

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        running = self.sup.running()
        recorded = {p.name: p for p in self.sup.procs()}
        info: dict[str, Any] = {}
        try:
            info = json.loads((self.dir / "status.json").read_text())
        except (OSError, ValueError):
            info = {}
        comps = {name: {"pid": p.pid, "running": name in running, "log": p.log} for name, p in recorded.items()}
        up = bool(comps) and all(c["running"] for c in comps.values()) and info.get("ready", False)
        return {
            "state": "up" if up else ("degraded" if running else "down"),
            "dir": str(self.dir),
            "endpoints": vars(self.ep),
            "kubeconfigs": {
                "admin": str(self.pki.kubeconfig(pki.ADMIN)),
                "reader": str(self.pki.kubeconfig(pki.READER)),
                "executor": str(self.pki.kubeconfig(pki.EXECUTOR)),
            },
            "webhook_url": info.get("webhook_url"),
            "agent_targets": str(self.agent_targets_file),
            "webhook_token_file": str(self.dir / "webhook-token"),
            "cluster": info.get("cluster"),
            "serving_namespaces": info.get("serving_namespaces", []),
            "components": comps,
            "timings": info.get("timings", {}),
        }

    # ---- down -----------------------------------------------------------------------------------
    def down(self) -> list[str]:
        stopped = self.sup.stop_all()
        status_file = self.dir / "status.json"
        if status_file.exists():
            doc = json.loads(status_file.read_text())
            doc["ready"] = False
            status_file.write_text(json.dumps(doc, indent=1))
        return stopped

    # ---- up -------------------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        if self.sup.running():
            st = self.status()
            if st["state"] == "up":
                self.progress("sandbox already up")
                return st
            self.progress("sandbox partly running: stopping it first")
            self.down()
        t_all = time.monotonic()
        tm = Timings()
        fleet = Fleet.load(self.s.fleet_file).scaled(self.s.nodes)
        catalog = load_prices(self.s.price_file)
        # With rollouts the fleet gains the overlay's pool and Rollout workloads; the simulator and KWOK
        # read it from the state directory, while bootstrap still creates Deployments for the rest only.
        rollout_names: tuple[str, ...] = ()
        deployments_fleet = fleet
        if self.s.rollouts:
            fleet, rollout_names = rollouts.merged_fleet(fleet)
            deployments_fleet = fleet.model_copy(
                update={"workloads": [w for w in fleet.workloads if w.name not in rollout_names]})

        t0 = time.monotonic()
        self.progress("checking components (builds the control plane from Go modules on first use)")
        bins = components.ensure(self.s.cache_dir,
                                 components.ROLLOUTS_PARTS if self.s.rollouts else components.SANDBOX_PARTS)
        tm.record("components", t0)

        # A sandbox always starts clean: old data would confuse history and faults.
        for sub in ("etcd", "prometheus", "alertmanager", "pki", "simulator", "kwok"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        p = pki.create(self.dir / "pki", self.ep.apiserver)
        admin_token = _token(p.kubeconfig(pki.ADMIN))
        admin_kc = p.kubeconfig(pki.ADMIN)
        self._write_status(fleet, tm, ready=False)
        fleet_file = self.s.fleet_file
        if self.s.rollouts:
            fleet_file = self.dir / "fleet.yaml"
            fleet_file.write_text(yaml.safe_dump(fleet.model_dump(), sort_keys=False))

        try:
            self._start_control_plane(bins, p, admin_token, tm, fleet_file)
            if self.s.rollouts:
                self._start_rollouts(bins, admin_kc, tm)
            t0 = time.monotonic()
            self.progress("creating namespaces, RBAC, GPU nodes and serving Deployments")
            api = cluster.api_client(admin_kc)
            try:
                cluster.bootstrap(api, deployments_fleet, catalog)
                names = [n for pool in fleet.pools for n in _node_names(fleet, pool)]
                cluster.wait_for(lambda: cluster.nodes_ready(api, names), 120, "KWOK to mark the GPU nodes Ready")
                cluster.wait_for(lambda: not cluster.unavailable_deployments(api, deployments_fleet), 180,
                                 "serving Deployments to become Available")
                if rollout_names:
                    rollouts.install(api, fleet, rollout_names, self.ep.prometheus)
                    cluster.wait_for(lambda: not rollouts.unhealthy_rollouts(api, fleet, rollout_names), 180,
                                     "Argo Rollouts to report the Rollouts Healthy")
            finally:
                api.close()
            tm.record("cluster_objects", t0)

            self._start_monitoring(bins, fleet, admin_kc, tm, fleet_file)
        except Exception:
            self.progress("start-up failed; stopping what was started")
            self.down()
            raise
        tm.phases["total"] = round(time.monotonic() - t_all, 2)
        self._write_status(fleet, tm, ready=True)
        self.progress(f"sandbox up in {tm.phases['total']:.1f}s")
        return self.status()

    def _start_rollouts(self, bins: components.Binaries, admin_kc: Path, tm: Timings) -> None:
        t0 = time.monotonic()
        self.progress("applying Argo Rollouts' CRDs and starting its controller")
        rollouts.apply_crds(bins.kubectl, admin_kc, components.rollouts_crds(bins))
        api = cluster.api_client(admin_kc)
        try:
            cluster.wait_for(lambda: rollouts.crds_established(api), 60, "Argo Rollouts' CRDs to be Established")
        finally:
            api.close()
        base = self.s.port_base
        ctl = self.sup.start("argo-rollouts", rollouts.controller_argv(
            bins.rollouts_controller, admin_kc, metrics_port=base + ROLLOUTS_METRICS_OFFSET,
            healthz_port=base + ROLLOUTS_HEALTHZ_OFFSET))
        self.sup.wait_ready(ctl, lambda: _http_ok(f"http://127.0.0.1:{base + ROLLOUTS_HEALTHZ_OFFSET}/healthz"), 60)
        tm.record("argo_rollouts", t0)

    def _start_control_plane(self, bins: components.Binaries, p: pki.Pki, token: str, tm: Timings,
                             fleet_file: Path) -> None:
        ep, d = self.ep, self.dir
        base = self.s.port_base
        t0 = time.monotonic()
        self.progress("starting etcd")
        etcd = self.sup.start("etcd", [
            str(bins.etcd), "--name=sandbox", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={ep.etcd}", f"--advertise-client-urls={ep.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{base + 380}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{base + 380}",
            f"--initial-cluster=sandbox=http://127.0.0.1:{base + 380}",
            "--unsafe-no-fsync", "--watch-progress-notify-interval=5s", "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ])
        self.sup.wait_ready(etcd, lambda: _http_ok(f"{ep.etcd}/health"), 30)
        tm.record("etcd", t0)

        t0 = time.monotonic()
        self.progress("starting kube-apiserver")
        apiserver = self.sup.start("kube-apiserver", [
            str(bins.kube_apiserver),
            f"--etcd-servers={ep.etcd}",
            "--bind-address=127.0.0.1", f"--secure-port={_port(ep.apiserver)}",
            "--advertise-address=192.0.2.1", "--endpoint-reconciler-type=none",
            f"--cert-dir={p.dir}", f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
            "--authorization-mode=Node,RBAC", f"--token-auth-file={p.token_file}",
            "--allow-privileged=true", "--enable-priority-and-fairness=false",
            "--profiling=false", "--storage-media-type=application/vnd.kubernetes.protobuf",
        ])
        self.sup.wait_ready(apiserver, lambda: _http_ok(f"{ep.apiserver}/readyz", token=token, ca=p.ca_cert), 90)
        tm.record("kube-apiserver", t0)

        kc = str(p.kubeconfig(pki.ADMIN))
        t0 = time.monotonic()
        self.progress("starting kube-controller-manager and kube-scheduler")
        kcm = self.sup.start("kube-controller-manager", [
            str(bins.kube_controller_manager), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={base + 257}",
            f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca_cert}",
            "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--node-monitor-grace-period=40s",
        ])
        sched = self.sup.start("kube-scheduler", [
            str(bins.kube_scheduler), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={base + 259}",
        ])
        self.sup.wait_ready(kcm, lambda: _tls_healthz(base + 257), 60)
        self.sup.wait_ready(sched, lambda: _tls_healthz(base + 259), 60)
        tm.record("controllers", t0)

        t0 = time.monotonic()
        self.progress("starting KWOK (GPU nodes) and kube-state-metrics")
        kwok_cfg = kwok.write_config(d / "kwok" / "kwok.yaml", Fleet.load(fleet_file))
        kw = self.sup.start("kwok", [
            str(bins.kwok), f"--kubeconfig={kc}", f"--config={kwok_cfg}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{base + 247}", "--cidr=10.244.0.0/16", "--node-ip=10.0.0.1",
        ])
        self.sup.wait_ready(kw, lambda: _http_ok(f"http://127.0.0.1:{base + 247}/healthz"), 30)
        ksm_labels = ("pods=[model,model-version,serving-runtime,team,app.kubernetes.io/name],"
                      "deployments=[model,serving-runtime,team,app.kubernetes.io/name],"
                      "nodes=[nvidia.com/gpu.product,nvidia.com/mig.config,node.kubernetes.io/instance-type,opsagent.dev/node-pool]")
        ksm = self.sup.start("kube-state-metrics", [
            str(bins.kube_state_metrics), f"--kubeconfig={kc}",
            "--host=127.0.0.1", f"--port={_port(self.ep.kube_state_metrics)}",
            "--telemetry-host=127.0.0.1", f"--telemetry-port={base + 82}",
            f"--metric-labels-allowlist={ksm_labels}",
        ])
        self.sup.wait_ready(ksm, lambda: _http_ok(f"{self.ep.kube_state_metrics}/healthz"), 30)
        tm.record("kwok_ksm", t0)

    def _start_monitoring(self, bins: components.Binaries, fleet: Fleet, admin_kc: Path, tm: Timings,
                          fleet_file: Path) -> None:
        d, ep = self.dir, self.ep
        t0 = time.monotonic()
        self.progress("starting moto (CloudWatch) on loopback")
        moto = self.sup.start("moto", [str(bins.python), "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(_port(ep.cloudwatch))])
        self.sup.wait_ready(moto, lambda: _http_ok(f"{ep.cloudwatch}/moto-api/"), 60)
        tm.record("moto", t0)

        t0 = time.monotonic()
        self.progress(f"starting the fleet simulator (backfilling {self.s.history_days:g} days of history)")
        prom_data = d / "prometheus" / "data"
        prom_data.mkdir(parents=True, exist_ok=True)
        sim_state = d / "simulator"
        sim_state.mkdir(parents=True, exist_ok=True)
        sim = self.sup.start("fleet-simulator", [
            str(bins.python), "-m", "deploy.sandbox.simulator",
            f"--kubeconfig={admin_kc}", f"--fleet={fleet_file}", f"--prices={self.s.price_file}",
            f"--listen={_hostport(ep.simulator)}", f"--ksm-instance={_hostport(ep.kube_state_metrics)}",
            f"--backfill-days={self.s.history_days}", f"--backfill-data-dir={prom_data}",
            f"--promtool={bins.promtool}", f"--cloudwatch-endpoint={ep.cloudwatch}",
            f"--alertmanager={ep.alertmanager}", f"--state-dir={sim_state}",
        ])
        ready_file = sim_state / "simulator-ready.json"
        self.sup.wait_ready(sim, ready_file.exists, 300, "serving metrics")
        tm.record("simulator_backfill", t0)

        t0 = time.monotonic()
        self.progress("starting Prometheus and Alertmanager")
        rules = monitoring.write_yaml(d / "prometheus" / "rules.yaml", monitoring.sandbox_rules())
        # The agent Alertmanager posts to is the one whose /metrics Prometheus scrapes (tests list theirs).
        agent_targets = self.agent_targets_file
        if not agent_targets.exists():
            monitoring.write_agent_targets(agent_targets, [urllib.parse.urlsplit(self.s.webhook_url).netloc])
        prom_cfg = monitoring.write_yaml(d / "prometheus" / "prometheus.yml", monitoring.prometheus_config(
            cluster=fleet.cluster, alertmanager=_hostport(ep.alertmanager), simulator=_hostport(ep.simulator),
            kube_state_metrics=_hostport(ep.kube_state_metrics), rules_file=rules, agent_targets=agent_targets,
            agent_token_file=self.webhook_token_file()))
        am_cfg = monitoring.write_yaml(d / "alertmanager" / "alertmanager.yml",
                                       monitoring.alertmanager_config(self.s.webhook_url, self.webhook_token_file()))
        am = self.sup.start("alertmanager", [
            str(bins.alertmanager), f"--config.file={am_cfg}", f"--storage.path={d / 'alertmanager'}",
            f"--web.listen-address={_hostport(ep.alertmanager)}", "--cluster.listen-address=",
            f"--web.external-url={ep.alertmanager}",
        ])
        prom = self.sup.start("prometheus", [
            str(bins.prometheus), f"--config.file={prom_cfg}", f"--storage.tsdb.path={prom_data}",
            f"--web.listen-address={_hostport(ep.prometheus)}", "--storage.tsdb.retention.time=60d",
            "--rules.alert.resend-delay=1s", "--web.enable-lifecycle", f"--web.external-url={ep.prometheus}",
            "--query.lookback-delta=5m",
        ])
        self.sup.wait_ready(am, lambda: _http_ok(f"{ep.alertmanager}/-/ready"), 30)
        self.sup.wait_ready(prom, lambda: _http_ok(f"{ep.prometheus}/-/ready"), 90)
        self.sup.wait_ready(prom, lambda: _targets_up(ep.prometheus), 60, "scraping every target")
        tm.record("prometheus_alertmanager", t0)

    def _write_status(self, fleet: Fleet, tm: Timings, ready: bool) -> None:
        doc = {
            "ready": ready, "cluster": fleet.cluster, "serving_namespaces": fleet.serving_namespaces,
            "webhook_url": self.s.webhook_url, "timings": tm.phases, "port_base": self.s.port_base,
        }
        (self.dir / "status.json").write_text(json.dumps(doc, indent=1))

    def webhook_token_file(self) -> Path:
        """The Bearer token Alertmanager sends and `opsagent serve` accepts (made once per sandbox dir)."""
        path = self.dir / "webhook-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path

    def component(self, name: str) -> Proc | None:
        return self.sup.running().get(name)


def _node_names(fleet: Fleet, pool: Any) -> list[str]:
    from deploy.sandbox.fleet import node_name

    return [node_name(pool, i) for i in range(pool.nodes)]


def _token(kubeconfig: Path) -> str:
    import yaml

    doc = yaml.safe_load(kubeconfig.read_text())
    return str(doc["users"][0]["user"]["token"])


def _tls_healthz(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the components' self-signed serving certs; loopback only
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2, context=ctx) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError as e:  # not ready yet (500): the error holds the TLS socket; close it
        e.close()
        return False


def _targets_up(prometheus: str) -> bool:
    with urllib.request.urlopen(f"{prometheus}/api/v1/targets?state=active", timeout=3) as r:  # noqa: S310
        targets = json.load(r)["data"]["activeTargets"]
    # The sandbox's own parts; the opsagent job lists agents that may not run yet (`opsagent serve`).
    targets = [t for t in targets if t.get("labels", {}).get("job") != "opsagent"]
    return bool(targets) and all(t["health"] == "up" for t in targets)


__all__ = ["Endpoints", "Sandbox", "SandboxSettings", "StartError"]
