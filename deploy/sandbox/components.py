"""Where the sandbox's binaries come from: the Go build cache, Debian packages and the venv.

The control plane is compiled from the upstream Go modules by `build-components.sh` into a
version-keyed cache outside the repository; this module finds (or builds) those binaries and the
Debian-packaged Prometheus/Alertmanager, and says exactly what is missing when something is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-components.sh"

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
KSM_VERSION = "v2.15.0"
HELM_VERSION = "v3.22.0"


def default_cache_dir() -> Path:
    return Path(os.environ.get("OPSAGENT_CACHE_DIR") or Path.home() / ".cache" / "opsagent")


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kube_state_metrics: Path
    helm: Path
    prometheus: Path
    promtool: Path
    alertmanager: Path
    python: Path

    def missing(self) -> list[str]:
        return [f"{name} ({path})" for name, path in vars(self).items() if not os.access(path, os.X_OK)]


def locate(cache_dir: Path) -> Binaries:
    b = cache_dir / "bin"
    k8s = b / f"kubernetes-{K8S_VERSION}"
    return Binaries(
        etcd=b / f"etcd-{ETCD_VERSION}" / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        kwok=b / f"kwok-{KWOK_VERSION}" / "kwok",
        kube_state_metrics=b / f"kube-state-metrics-{KSM_VERSION}" / "kube-state-metrics",
        helm=b / f"helm-{HELM_VERSION}" / "helm",
        prometheus=Path(shutil.which("prometheus") or "/usr/bin/prometheus"),
        promtool=Path(shutil.which("promtool") or "/usr/bin/promtool"),
        alertmanager=Path(shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"),
        python=Path(sys.executable),
    )


def ensure(cache_dir: Path) -> Binaries:
    """Return the binaries, building the Go components first if any is missing (prints progress)."""
    bins = locate(cache_dir)
    go_missing = [m for m in bins.missing() if not m.startswith(("prometheus", "promtool", "alertmanager"))]
    if go_missing:
        env = dict(os.environ, OPSAGENT_CACHE_DIR=str(cache_dir), K8S_VERSION=K8S_VERSION,
                   ETCD_VERSION=ETCD_VERSION, KWOK_VERSION=KWOK_VERSION, KSM_VERSION=KSM_VERSION,
                   HELM_VERSION=HELM_VERSION)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, env=env)
        bins = locate(cache_dir)
    if missing := bins.missing():
        hint = ""
        if any(m.startswith(("prometheus", "promtool", "alertmanager")) for m in missing):
            hint = " (install Debian's prometheus and prometheus-alertmanager: `make setup` does)"
        raise FileNotFoundError("sandbox components missing: " + ", ".join(missing) + hint)
    return bins
