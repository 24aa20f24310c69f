"""Argo Rollouts in the sandbox: its CRDs, its controller, and the fleet's Rollout-managed models.

Only a sandbox started with rollouts (`opsagent sandbox up --rollouts`) runs any of this; the default
sandbox, and so the demo, is unchanged. The fleet overlay (`fleet-rollouts.yaml`) adds a node pool,
model versions and workloads; those workloads become `Rollout` objects whose canary steps are gated by
the project's AnalysisTemplate (`deploy/rollouts/analysis-template.yaml`), pointed at the sandbox's
Prometheus. The controller is the upstream one, built from its Go module by build-components.sh.

This module builds manifests (pure) and applies them through the real API; it must not decide
anything about a deployment: that is the agent's job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.sandbox import pki
from deploy.sandbox.fleet import LABEL_APP, LABEL_MODEL, LABEL_RUNTIME, LABEL_TEAM, Fleet, Workload, pod_template

HERE = Path(__file__).resolve().parent
DEFAULT_OVERLAY = HERE / "fleet-rollouts.yaml"
ANALYSIS_TEMPLATE = HERE.parent / "rollouts" / "analysis-template.yaml"
GROUP, VERSION = "argoproj.io", "v1alpha1"
CRDS = ("rollouts", "analysistemplates", "clusteranalysistemplates", "analysisruns", "experiments")
CANARY_WEIGHTS = (10, 50)  # then 100 %: Argo promotes after the last step
MAX_MODEL_LEN = 16384  # an 8B model at BF16 on one 24 GiB L4 holds one such sequence (the preflight's arithmetic)
QUEUE_MAX = 5  # waiting requests per replica: the Gateway API Inference Extension's saturation default

# The agent's reader identity may watch Rollouts and their analysis (never change them).
READER_ROLE = f"{pki.READER}-rollouts"
READER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": list(CRDS), "verbs": ["get", "list", "watch"]},
]


def merged_fleet(base: Fleet, overlay: Path = DEFAULT_OVERLAY) -> tuple[Fleet, tuple[str, ...]]:
    """Return the fleet with the overlay's pools, versions and workloads, and the Rollout workloads' names."""
    doc = yaml.safe_load(overlay.read_text()) or {}
    unknown = set(doc) - {"pools", "model_versions", "workloads"}
    if unknown:
        raise ValueError(f"{overlay}: unknown keys {sorted(unknown)} (pools, model_versions, workloads)")
    raw = base.model_dump()
    for key in ("pools", "model_versions", "workloads"):
        raw[key] = [*raw[key], *(doc.get(key) or [])]
    fleet = Fleet.model_validate(raw)
    names = tuple(str(w["name"]) for w in doc.get("workloads") or [])
    return fleet, names


def analysis_template() -> dict[str, Any]:
    """The project's AnalysisTemplate, as shipped in deploy/rollouts/."""
    doc: dict[str, Any] = yaml.safe_load(ANALYSIS_TEMPLATE.read_text())
    return doc


def rollout_manifest(fleet: Fleet, w: Workload, prometheus: str) -> dict[str, Any]:
    """A Rollout for workload `w`: the fleet's pod template, a canary gated by the SLO analysis."""
    mv = fleet.version(w.model, w.version)
    assert mv is not None  # the fleet validator guarantees it
    args = [
        {"name": "prometheus-address", "value": prometheus},
        {"name": "namespace", "value": w.namespace},
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        {"name": "ttft-p95-max", "value": f"{w.slo.ttft_p95_s:g}"},
        {"name": "error-share-max", "value": f"{w.slo.error_rate:g}"},
        {"name": "queue-max", "value": str(QUEUE_MAX)},
    ]
    template = pod_template(fleet, w, mv)
    if w.runtime == "vllm":
        # A context the GPU holds (vLLM refuses to start when one full-length sequence does not fit its
        # KV cache): the deployment preflight checks the same arithmetic.
        template["spec"]["containers"][0]["args"] += ["--max-model-len", str(MAX_MODEL_LEN)]
    steps: list[dict[str, Any]] = []
    for weight in CANARY_WEIGHTS:
        steps.append({"setWeight": weight})
        steps.append({"analysis": {"templates": [{"templateName": "gpu-serving-slo"}], "args": args}})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {
            "name": w.name, "namespace": w.namespace,
            "labels": {LABEL_APP: w.name, LABEL_TEAM: w.team, LABEL_RUNTIME: w.runtime, LABEL_MODEL: w.model},
        },
        "spec": {
            "replicas": w.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {LABEL_APP: w.name}},
            "template": template,
            # Without a traffic router the canary's share is its share of the pods: one surge pod at
            # most, so the GPUs a step needs are known in advance.
            "strategy": {"canary": {"maxSurge": 1, "maxUnavailable": 0, "steps": steps}},
        },
    }


def apply_crds(kubectl: Path, kubeconfig: Path, crd_dir: Path) -> None:
    """Apply the controller's CRDs (server-side: they are too large for the last-applied annotation)."""
    files = sorted(crd_dir.glob("*-crd.yaml"))
    if not files:
        raise FileNotFoundError(f"no Argo Rollouts CRDs in {crd_dir} (build-components.sh argo-rollouts copies them)")
    _run([str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
          *(f"-f={f}" for f in files)])


def crds_established(api: client.ApiClient) -> bool:
    """Whether the API server serves every Argo Rollouts CRD (`kubectl wait` errs while status is empty)."""
    ext = client.ApiextensionsV1Api(api)
    for name in CRDS:
        conditions = ext.read_custom_resource_definition(f"{name}.{GROUP}").status.conditions or []
        if not any(c.type == "Established" and c.status == "True" for c in conditions):
            return False
    return True


def controller_argv(binary: Path, kubeconfig: Path, metrics_port: int, healthz_port: int) -> list[str]:
    """The controller's command line: the sandbox's API server, loopback ports, no leader election."""
    return [
        str(binary), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
        f"--metricsPort={metrics_port}", f"--healthzPort={healthz_port}",
        "--loglevel=info", "--logformat=text", "--rollout-resync=30",
    ]


def install(api: client.ApiClient, fleet: Fleet, names: Sequence[str], prometheus: str) -> None:
    """Grant the reader identity read access, then create the AnalysisTemplate and the Rollouts."""
    rbac = client.RbacAuthorizationV1Api(api)
    custom = client.CustomObjectsApi(api)
    role = {"metadata": {"name": READER_ROLE}, "rules": READER_RULES}
    _create_or(lambda: rbac.create_cluster_role(role), lambda: rbac.replace_cluster_role(READER_ROLE, role))
    binding = {
        "metadata": {"name": READER_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER_ROLE},
        "subjects": [{"kind": "User", "name": pki.READER, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    _create_or(lambda: rbac.create_cluster_role_binding(binding),
               lambda: rbac.replace_cluster_role_binding(READER_ROLE, binding))
    workloads = [fleet.workload(n) for n in names]
    template = analysis_template()
    for ns in sorted({w.namespace for w in workloads}):
        _create_or(
            lambda ns=ns: custom.create_namespaced_custom_object(GROUP, VERSION, ns, "analysistemplates", template),
            lambda: None)
    for w in workloads:
        body = rollout_manifest(fleet, w, prometheus)
        _create_or(lambda body=body, w=w: custom.create_namespaced_custom_object(
            GROUP, VERSION, w.namespace, "rollouts", body), lambda: None)


def unhealthy_rollouts(api: client.ApiClient, fleet: Fleet, names: Sequence[str]) -> list[str]:
    """Return `namespace/name` of the Rollouts the controller has not yet reported Healthy."""
    custom = client.CustomObjectsApi(api)
    pending = []
    for n in names:
        w = fleet.workload(n)
        try:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, w.namespace, "rollouts", w.name)
        except ApiException:
            pending.append(f"{w.namespace}/{w.name}")
            continue
        if phase(obj) != "Healthy":
            pending.append(f"{w.namespace}/{w.name}")
    return pending


def phase(rollout: Mapping[str, Any]) -> str:
    """The Rollout's phase as the controller reports it (Progressing, Paused, Healthy, Degraded)."""
    status = rollout.get("status") or {}
    if (status.get("observedGeneration") or "") != str((rollout.get("metadata") or {}).get("generation", "")):
        return "Progressing"  # the controller has not seen the latest spec yet
    return str(status.get("phase") or "Progressing")


def _create_or(create: Any, on_conflict: Any) -> None:
    try:
        create()
    except ApiException as e:
        if e.status != 409:
            raise
        on_conflict()


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … failed ({r.returncode}): {r.stderr.strip()[-2000:]}")


__all__ = ["analysis_template", "apply_crds", "controller_argv", "install", "merged_fleet", "rollout_manifest",
           "unhealthy_rollouts"]
