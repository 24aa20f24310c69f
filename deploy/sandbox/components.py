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
ROLLOUTS_VERSION = "v1.10.1"  # v1.10.2 needs go >= 1.26.10
JAEGER_VERSION = "v1.75.0"


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
    jaeger: Path
    rollouts_controller: Path
    prometheus: Path
    promtool: Path
    alertmanager: Path
    python: Path


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
        jaeger=b / f"jaeger-{JAEGER_VERSION}" / "jaeger-all-in-one",
        rollouts_controller=b / f"argo-rollouts-{ROLLOUTS_VERSION}" / "rollouts-controller",
        prometheus=Path(shutil.which("prometheus") or "/usr/bin/prometheus"),
        promtool=Path(shutil.which("promtool") or "/usr/bin/promtool"),
        alertmanager=Path(shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"),
        python=Path(sys.executable),
    )


# What `opsagent sandbox up` (and so the demo) runs. Helm is the chart tests' alone and Jaeger the
# trace tests' alone, so a first `make demo` waits for neither; the Argo Rollouts controller runs only
# in a sandbox started with rollouts (ROLLOUTS_PARTS), which the demo is not.
SANDBOX_PARTS = ("etcd", "kube_apiserver", "kube_controller_manager", "kube_scheduler", "kubectl", "kwok",
                 "kube_state_metrics", "prometheus", "promtool", "alertmanager", "python")
ROLLOUTS_PARTS = (*SANDBOX_PARTS, "rollouts_controller")
DEBIAN_PARTS = ("prometheus", "promtool", "alertmanager")


def ensure(cache_dir: Path, parts: tuple[str, ...] = SANDBOX_PARTS) -> Binaries:
    """Return the binaries, building the Go components among `parts` first if any is missing.

    The build script prints its progress; it builds the components of every missing part (a
    component is the script's unit: `kubernetes` gives the apiserver, controllers and kubectl).
    """
    bins = locate(cache_dir)
    absent = [p for p in parts if not os.access(getattr(bins, p), os.X_OK)]
    go_absent = [p for p in absent if p not in DEBIAN_PARTS and p != "python"]
    if go_absent:
        env = dict(os.environ, OPSAGENT_CACHE_DIR=str(cache_dir), K8S_VERSION=K8S_VERSION,
                   ETCD_VERSION=ETCD_VERSION, KWOK_VERSION=KWOK_VERSION, KSM_VERSION=KSM_VERSION,
                   HELM_VERSION=HELM_VERSION, JAEGER_VERSION=JAEGER_VERSION, ROLLOUTS_VERSION=ROLLOUTS_VERSION)
        names = sorted({build_component(p) for p in go_absent})
        subprocess.run(["bash", str(BUILD_SCRIPT), *names], check=True, env=env)
        bins = locate(cache_dir)
        absent = [p for p in parts if not os.access(getattr(bins, p), os.X_OK)]
    if absent:
        hint = ""
        if any(p in DEBIAN_PARTS for p in absent):
            hint = " (install Debian's prometheus and prometheus-alertmanager: `make setup` does)"
        raise FileNotFoundError("sandbox components missing: "
                                + ", ".join(f"{p} ({getattr(bins, p)})" for p in absent) + hint)
    return bins


def build_component(part: str) -> str:
    """The build script's component that produces a Binaries field (`kube_scheduler` -> `kubernetes`)."""
    if part in ("kube_apiserver", "kube_controller_manager", "kube_scheduler", "kubectl"):
        return "kubernetes"
    if part == "rollouts_controller":
        return "argo-rollouts"
    return part.replace("_", "-")


def rollouts_crds(bins: Binaries) -> Path:
    """The directory of Argo Rollouts' CRDs, copied from the controller's own module at build time."""
    return bins.rollouts_controller.parent / "crds"
