"""The Helm chart against the sandbox's real API server: lint, server-side dry-run, install, RBAC.

Helm and kubectl are the binaries built from their Go modules into the sandbox's tool cache.
`kubectl auth can-i --as=system:serviceaccount:...` asks the real authorizer what each identity
may do, so these tests prove the least-privilege claims of the chart, not its text.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deploy.sandbox import components
from deploy.sandbox.sandbox import Sandbox

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "opsagent"
SERVING = ["llm-prod", "search"]  # the executor's namespaces in these tests
OUTSIDE = ["code", "research", "platform", "kube-system"]
VALUES = ["--set", "rbac.executor.namespaces={" + ",".join(SERVING) + "}",
          "--set", "serve.nodeSelector.opsagent\\.dev/node-pool=general",
          "--set", "config.prometheus.url=http://prometheus.monitoring.svc:9090"]


@pytest.fixture(scope="module")
def helm(sandbox: dict[str, Any]) -> Any:
    sb: Sandbox = sandbox["_sandbox"]
    binary = components.ensure(sb.s.cache_dir).helm
    kubeconfig = sandbox["kubeconfigs"]["admin"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                           timeout=300, check=False)
        if check and r.returncode:
            raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    return run


@pytest.fixture(scope="module")
def release(helm: Any, admin: client.ApiClient) -> Iterator[tuple[str, str]]:
    """The chart installed into a fresh namespace, uninstalled afterwards."""
    ns, name = f"opsagent-{uuid.uuid4().hex[:6]}", "oa"
    helm("install", name, str(CHART), "--namespace", ns, "--create-namespace", *VALUES, "--wait=false")
    yield ns, name
    helm("uninstall", name, "--namespace", ns, "--wait", "--timeout", "120s", check=False)
    client.CoreV1Api(admin).delete_namespace(ns)


def test_the_chart_lints_clean_and_its_schema_refuses_bad_values(helm: Any) -> None:
    ok = helm("lint", str(CHART), "--strict", "--kube-version", "1.34.0", *VALUES)
    assert "0 chart(s) failed" in ok.stdout
    bad = helm("lint", str(CHART), "--set", "rbac.executor.namespaces={Not_A_Namespace}", "--set",
               "env=staging", "--set", "serve.replicsa=2", check=False)
    assert bad.returncode != 0
    for words in ("/env", "/rbac/executor/namespaces", "replicsa"):
        assert words in bad.stdout + bad.stderr, words


def test_the_rendered_chart_passes_the_api_servers_server_side_dry_run(helm: Any, kubectl: Any) -> None:
    rendered = helm("template", "dry", str(CHART), "--namespace", "default", "--kube-version", "1.34.0",
                    *VALUES).stdout
    kinds = sorted({line.split(":", 1)[1].strip() for line in rendered.splitlines() if line.startswith("kind:")})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CronJob", "Deployment", "NetworkPolicy",
                     "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"]
    path = Path(f"/tmp/opsagent-helm-dry-{uuid.uuid4().hex[:6]}.yaml")
    path.write_text(rendered)
    try:
        r = kubectl("admin", "apply", "--dry-run=server", "--server-side", "--field-manager=helm-test", "-f",
                    str(path), check=False)
    finally:
        path.unlink()
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == rendered.count("\nkind:") + rendered.startswith("kind:")


def test_helm_install_creates_everything_and_the_serve_pods_run(release: tuple[str, str],
                                                                admin: client.ApiClient, kubectl: Any) -> None:
    ns, name = release
    core, apps, batch = client.CoreV1Api(admin), client.AppsV1Api(admin), client.BatchV1Api(admin)
    deadline = time.monotonic() + 120
    running: list[str] = []
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=serve").items
        running = [p.metadata.name for p in pods if p.status.phase == "Running"]
        if len(running) == 2:
            break
        time.sleep(1)
    assert len(running) == 2, f"serve pods not Running under KWOK: {[(p.metadata.name, p.status.phase) for p in pods]}"
    dep = apps.read_namespaced_deployment(f"{name}-opsagent", ns)
    assert dep.spec.template.spec.service_account_name == f"{name}-opsagent-reader"
    assert dep.spec.template.spec.security_context.run_as_non_root is True
    cron = batch.read_namespaced_cron_job(f"{name}-opsagent-cost-report", ns)
    assert cron.spec.concurrency_policy == "Forbid"
    assert cron.spec.job_template.spec.template.spec.containers[0].args == ["report", "cost", "--post"]
    cms = {c.metadata.name: c for c in core.list_namespaced_config_map(ns).items}
    assert "default.yaml" in cms[f"{name}-opsagent-policies"].data
    assert "bad-rollout.md" in cms[f"{name}-opsagent-runbooks"].data
    # the CronJob and the serve replicas post on one schedule (the ticks they share a lease on)
    settings = yaml.safe_load(cms[f"{name}-opsagent-config"].data["config.yaml"])
    assert settings["rightsize"]["schedule"] == cron.spec.schedule
    env = {e.name: e for e in dep.spec.template.spec.containers[0].env}
    assert env["OPSAGENT_STORE__URL"].value_from.secret_key_ref.name == "opsagent", "secrets by reference only"
    for sn in SERVING:
        assert json.loads(kubectl("admin", "get", "rolebinding", "-n", sn, f"{name}-opsagent-executor",
                                  "-o", "json").stdout)["subjects"][0]["namespace"] == ns


def can(kubectl: Any, sa: str, verb: str, resource: str, ns: str | None = None) -> bool:
    resource, _, sub = resource.partition("/")  # `can-i` reads "a/b" as type/name; subresources are a flag
    args = ["auth", "can-i", verb, resource, f"--as={sa}", *([f"--subresource={sub}"] if sub else [])]
    args += ["-n", ns] if ns else ["--all-namespaces"] if resource not in ("nodes", "namespaces") else []
    r = kubectl("admin", *args, check=False)
    return r.stdout.strip() == "yes"


WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]


def test_the_reader_can_read_what_triage_needs_and_write_nothing(release: tuple[str, str], kubectl: Any) -> None:
    ns, name = release
    sa = f"system:serviceaccount:{ns}:{name}-opsagent-reader"
    for res in ("pods", "pods/log", "events", "deployments.apps", "replicasets.apps", "nodes",
                "horizontalpodautoscalers.autoscaling"):
        assert can(kubectl, sa, "list", res, "llm-prod"), f"reader cannot list {res}"
    r = kubectl("admin", "auth", "can-i", "--list", f"--as={sa}", "-n", "llm-prod", check=True)
    writes = []
    for line in r.stdout.splitlines()[1:]:  # Resources  Non-Resource URLs  Resource Names  [verbs]
        resource, verbs = line.split()[0], set(line[line.rindex("[") + 1:line.rindex("]")].split())
        if verbs & {*WRITE_VERBS, "*", "escalate", "bind", "impersonate"} and not resource.startswith("selfsubject"):
            writes.append(line)
    assert not writes, f"the reader may write: {writes}"
    for res in ("secrets", "configmaps"):
        assert not can(kubectl, sa, "get", res, "llm-prod"), f"reader can read {res}"


def test_the_executor_is_confined_to_its_namespaces_and_verbs(release: tuple[str, str], kubectl: Any) -> None:
    ns, name = release
    sa = f"system:serviceaccount:{ns}:{name}-opsagent-executor"
    for sn in SERVING:
        assert can(kubectl, sa, "patch", "deployments.apps", sn)
        assert can(kubectl, sa, "update", "deployments.apps/scale", sn)
        assert can(kubectl, sa, "create", "pods/eviction", sn)
        assert not can(kubectl, sa, "delete", "deployments.apps", sn)
        assert not can(kubectl, sa, "create", "deployments.apps", sn)
    assert can(kubectl, sa, "patch", "nodes"), "cordoning needs patch on nodes"
    assert not can(kubectl, sa, "delete", "nodes")
    for other in OUTSIDE:
        for verb in ("patch", "update", "delete"):
            assert not can(kubectl, sa, verb, "deployments.apps", other), f"executor can {verb} in {other}"
        assert not can(kubectl, sa, "create", "pods/eviction", other)
    for sn in [*SERVING, *OUTSIDE, ns]:
        for verb in ("get", "list", "create", "update"):
            assert not can(kubectl, sa, verb, "secrets", sn), f"executor can {verb} secrets in {sn}"
        for res in ("roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io"):
            for verb in ("create", "update", "patch", "delete", "bind", "escalate"):
                assert not can(kubectl, sa, verb, res, sn), f"executor can {verb} {res} in {sn}"
    for res in ("clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
                "namespaces"):
        for verb in ("create", "update", "patch", "delete"):
            assert not can(kubectl, sa, verb, res), f"executor can {verb} {res}"
