"""The Helm chart against the sandbox's real API server: lint, server-side dry-run, install, RBAC.

Helm and kubectl are the binaries built from their Go modules into the sandbox's tool cache.
`kubectl auth can-i --as=system:serviceaccount:...` asks the real authorizer what each identity
may do, so these tests prove the least-privilege claims of the chart, not its text.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client

from agent.app import checkpoint_sinks
from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import AuditLog, CloudWatchLogsCheckpointSink, FileCheckpointSink, S3CheckpointSink
from agent.config import load_settings
from deploy.sandbox import components
from deploy.sandbox.sandbox import Sandbox

pytest_plugins = ("tests.conftest_tools",)

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "opsagent"
SERVING = ["llm-prod", "search"]  # the executor's namespaces in these tests
OUTSIDE = ["code", "research", "platform", "kube-system"]
VALUES = ["--set", "rbac.executor.namespaces={" + ",".join(SERVING) + "}",
          "--set", "serve.nodeSelector.opsagent\\.dev/node-pool=general",
          "--set", "config.prometheus.url=http://prometheus.monitoring.svc:9090",
          # no Object Lock bucket in the sandbox: env prod renders only when this is said out loud
          "--set", "auditCheckpoints.allowRewritable=true"]


@pytest.fixture(scope="module")
def helm(sandbox: dict[str, Any]) -> Any:
    sb: Sandbox = sandbox["_sandbox"]
    binary = components.ensure(sb.s.cache_dir, ("helm",)).helm
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
                     "Role", "RoleBinding", "Secret", "Service", "ServiceAccount", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding"]
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
    # the pod runs as the executor so that its token is projected into the executor container alone
    assert dep.spec.template.spec.service_account_name == f"{name}-opsagent-executor"
    assert [c.name for c in dep.spec.template.spec.containers] == ["serve", "executor"]
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
    for res in ("pods", "events", "deployments.apps", "replicasets.apps", "nodes",
                "horizontalpodautoscalers.autoscaling"):
        assert can(kubectl, sa, "list", res, "llm-prod"), f"reader cannot list {res}"
    assert not can(kubectl, sa, "get", "pods/log", "llm-prod"), "no tool reads logs: the reader has no pods/log"
    r = kubectl("admin", "auth", "can-i", "--list", f"--as={sa}", "-n", "llm-prod", check=True)
    writes = []
    for line in r.stdout.splitlines()[1:]:  # Resources  Non-Resource URLs  Resource Names  [verbs]
        resource, verbs = line.split()[0], set(line[line.rindex("[") + 1:line.rindex("]")].split())
        if verbs & {*WRITE_VERBS, "*", "escalate", "bind", "impersonate"} and not resource.startswith("selfsubject"):
            writes.append(line)
    assert not writes, f"the reader may write: {writes}"
    for res in ("secrets", "configmaps"):
        assert not can(kubectl, sa, "get", res, "llm-prod"), f"reader can read {res}"


def allowed(admin: client.ApiClient, user: str, verb: str, resource: str, ns: str, sub: str = "",
            group: str = "argoproj.io") -> bool:
    """The API server's own answer (a SubjectAccessReview) for a resource whose CRD may not be installed."""
    review = client.AuthorizationV1Api(admin).create_subject_access_review({"spec": {
        "user": user, "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                             "subresource": sub, "namespace": ns}}})
    return bool(review.status.allowed)


def test_the_executor_is_confined_to_its_namespaces_and_verbs(release: tuple[str, str], kubectl: Any,
                                                              admin: client.ApiClient) -> None:
    ns, name = release
    sa = f"system:serviceaccount:{ns}:{name}-opsagent-executor"
    for sn in SERVING:
        assert can(kubectl, sa, "patch", "deployments.apps", sn)
        assert not can(kubectl, sa, "update", "deployments.apps", sn), "changes are patches, never updates"
        assert not can(kubectl, sa, "patch", "deployments.apps/scale", sn)
        assert can(kubectl, sa, "create", "pods/eviction", sn)
        assert not can(kubectl, sa, "delete", "deployments.apps", sn)
        assert not can(kubectl, sa, "create", "deployments.apps", sn)
        # Argo Rollouts' CRDs are not installed here (kubectl's can-i needs discovery): ask the authorizer.
        assert allowed(admin, sa, "patch", "rollouts", sn), "a deployment patches the Rollout's template"
        for verb in ("update", "delete", "create"):
            assert not allowed(admin, sa, verb, "rollouts", sn), f"executor can {verb} rollouts in {sn}"
        assert allowed(admin, sa, "patch", "rollouts", sn, "status"), "promote and abort"
        assert not allowed(admin, sa, "update", "rollouts", sn, "status")
    assert can(kubectl, sa, "patch", "nodes"), "cordoning needs patch on nodes"
    assert can(kubectl, sa, "list", "nodes"), "the fleet limit counts the GPU nodes already unschedulable"
    assert not can(kubectl, sa, "watch", "nodes") and not can(kubectl, sa, "update", "nodes")
    assert not can(kubectl, sa, "delete", "nodes")
    for sn in SERVING:  # what the code does not call (tests/unit/test_rbac_from_code.py derives the rest)
        assert not can(kubectl, sa, "list", "deployments.apps", sn)
        assert can(kubectl, sa, "delete", "pods", sn) and can(kubectl, sa, "get", "pods", sn), "a pod restart"
        assert not can(kubectl, sa, "deletecollection", "pods", sn) and not can(kubectl, sa, "update", "pods", sn)
    for other in OUTSIDE:
        for verb in ("patch", "update", "delete"):
            assert not can(kubectl, sa, verb, "deployments.apps", other), f"executor can {verb} in {other}"
        assert not can(kubectl, sa, "create", "pods/eviction", other)
        assert not can(kubectl, sa, "delete", "pods", other), f"executor can delete pods in {other}"
    for other in OUTSIDE:
        assert not allowed(admin, sa, "patch", "rollouts", other), f"executor can patch rollouts in {other}"
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


def _node_change(kubectl: Any, who: str, release: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A server-side dry run (admission runs, nothing is stored) as the chart's executor ServiceAccount, the
    sandbox's executor (its own token) or the admin."""
    if who == "chart":
        sa = f"system:serviceaccount:{release[0]}:{release[1]}-opsagent-executor"
        return kubectl("admin", *args, "--dry-run=server", f"--as={sa}", check=False)
    return kubectl("executor" if who == "sandbox" else "admin", *args, "--dry-run=server", check=False)


@pytest.mark.parametrize("who", ["chart", "sandbox"])
def test_the_executor_may_cordon_a_node_but_change_nothing_else_on_it(
        who: str, release: tuple[str, str], kubectl: Any, admin: client.ApiClient) -> None:
    """RBAC grants `patch nodes`; the admission policy (the chart's, and the sandbox's copy for its own
    executor) refuses every Node change but spec.unschedulable, judged by the real API server."""
    node = client.CoreV1Api(admin).list_node().items[0].metadata.name
    deadline = time.monotonic() + 30  # a new policy takes a moment to reach the API server's admission chain
    while True:
        relabel = _node_change(kubectl, who, release, "label", "node", node, "opsagent-test=1")
        if relabel.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert relabel.returncode != 0 and "may change only spec.unschedulable of a Node, not metadata.labels" in \
        relabel.stderr, relabel.stderr
    taint = _node_change(kubectl, who, release, "taint", "node", node, "opsagent-test=1:NoSchedule")
    assert taint.returncode != 0 and "not spec.taints" in taint.stderr, taint.stderr
    annotate = _node_change(kubectl, who, release, "annotate", "node", node, "opsagent-test=1")
    assert annotate.returncode != 0 and "not metadata.annotations" in annotate.stderr, annotate.stderr
    cordon = _node_change(kubectl, who, release, "cordon", node)
    assert cordon.returncode == 0, cordon.stderr
    # the admin is not the executor: the policy leaves everyone else alone
    assert _node_change(kubectl, "admin", release, "label", "node", node, "opsagent-test=1").returncode == 0


# ---- audit checkpoint sinks from chart values (helm template only: no cluster needed) ----------------
@pytest.fixture(scope="module")
def helm_template() -> Any:
    binary = components.locate(components.default_cache_dir()).helm
    if not binary.exists():
        pytest.fail(f"helm is not built at {binary}: run deploy/sandbox/build-components.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), "template", "t", str(CHART), "--kube-version", "1.34.0", *args],
                              capture_output=True, text=True, timeout=120, check=False)

    return run


def _rendered(out: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, Any]]:
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


SINK_VALUES = ["--set", "config.cluster=prod-eu", "--set", "auditCheckpoints.region=eu-west-1",
               "--set", "auditCheckpoints.cloudwatchLogs.logGroup=/opsagent/audit-checkpoints",
               "--set", "auditCheckpoints.cloudwatchLogs.logStream=prod-eu-serve",
               "--set", "auditCheckpoints.s3.bucket=opsagent-audit", "--set", "auditCheckpoints.s3.prefix=prod-eu/",
               "--set", "auditCheckpoints.s3.objectLock.mode=GOVERNANCE",
               "--set", "auditCheckpoints.s3.objectLock.retainDays=400",
               "--set", "secrets.awsAccessKeyIdKey=aws-access-key-id",
               "--set", "secrets.awsSecretAccessKeyKey=aws-secret-access-key"]


def test_checkpoint_sink_values_render_into_settings_that_build_those_sinks(
        helm_template: Any, moto_reset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _rendered(helm_template(*SINK_VALUES, "--set", f"auditCheckpoints.endpointUrl={moto_reset}"))
    config = tmp_path / "config.yaml"
    config.write_text(docs[("ConfigMap", "t-opsagent-config")]["data"]["config.yaml"])
    env = {e["name"]: e for e in docs[("Deployment", "t-opsagent")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, key in (("AWS_ACCESS_KEY_ID", "aws-access-key-id"), ("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "opsagent", "key": key}
        monkeypatch.setenv(name, "from-the-secret")  # what the pod's environment holds

    # The pod's settings: the rendered file, plus the secrets its environment supplies; a writable state dir.
    settings = load_settings(config, audit={"key": "3f9a1c7e5b2d8f4a6c0e9b1d3f5a7c9e"},
                             server={"auth_tokens": "webhook-token-from-the-secret-0123"},
                             state_dir=str(tmp_path / "state"))
    a = settings.audit
    assert (a.checkpoint_region, a.checkpoint_endpoint_url) == ("eu-west-1", moto_reset)
    assert (a.checkpoint_s3_bucket, a.checkpoint_s3_prefix, a.checkpoint_s3_lock_mode,
            a.checkpoint_s3_retain_days) == ("opsagent-audit", "prod-eu/", "GOVERNANCE", 400)
    assert settings.cloudwatch is None  # the sinks do not switch CloudWatch evidence on

    s3 = boto3.client("s3", endpoint_url=moto_reset, region_name="eu-west-1", aws_access_key_id="t",
                      aws_secret_access_key="t")
    s3.create_bucket(Bucket="opsagent-audit", ObjectLockEnabledForBucket=True,
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    sinks = checkpoint_sinks(settings)
    assert [type(x) for x in sinks] == [FileCheckpointSink, CloudWatchLogsCheckpointSink, S3CheckpointSink]
    log = AuditLog(tmp_path / "audit.db", b"k" * 32, sinks, checkpoint_every=2)
    log.append_many([AuditEvent(at=dt.datetime.now(dt.UTC), kind=AuditKind.EXECUTION, actor="executor",
                                action=f"execute chg-{i}", inputs_hash=f"{i:064x}", decision="applied")
                     for i in range(2)])
    log.close()
    key = s3.list_objects_v2(Bucket="opsagent-audit", Prefix="prod-eu/")["Contents"][0]["Key"]
    head = s3.head_object(Bucket="opsagent-audit", Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=399)
    logs = boto3.client("logs", endpoint_url=moto_reset, region_name="eu-west-1", aws_access_key_id="t",
                        aws_secret_access_key="t")
    events = logs.get_log_events(logGroupName="/opsagent/audit-checkpoints", logStreamName="prod-eu-serve")["events"]
    assert len(events) == 1 and '"seq": 2' in events[0]["message"]
    assert all(x.latest() is not None and x.latest().seq == 2 for x in sinks)


def test_irsa_role_annotates_the_pods_service_account_and_no_sink_values_leave_the_file_alone(
        helm_template: Any, tmp_path: Path) -> None:
    role = "arn:aws:iam::123456789012:role/opsagent-audit"
    docs = _rendered(helm_template("--set", f"aws.roleArn={role}", "--set", "auditCheckpoints.allowRewritable=true",
                                   "--set", "serviceAccounts.reader.annotations.team=platform"))
    reader = docs[("ServiceAccount", "t-opsagent-reader")]
    assert reader["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role, "team": "platform"}
    # the serve pods run as the executor ServiceAccount (its projected token): the role is theirs too
    assert docs[("Deployment", "t-opsagent")]["spec"]["template"]["spec"]["serviceAccountName"] == "t-opsagent-executor"
    assert docs[("ServiceAccount", "t-opsagent-executor")]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": role}
    config = tmp_path / "config.yaml"
    config.write_text(docs[("ConfigMap", "t-opsagent-config")]["data"]["config.yaml"])
    settings = load_settings(config, audit={"key": "3f9a1c7e5b2d8f4a6c0e9b1d3f5a7c9e"},
                             server={"auth_tokens": "webhook-token-from-the-secret-0123"},
                             state_dir=str(tmp_path / "state"))
    assert [type(x) for x in checkpoint_sinks(settings)] == [FileCheckpointSink]


@pytest.mark.parametrize(("values", "complaint"), [
    (["auditCheckpoints.s3.bucket=Audit_Bucket", "auditCheckpoints.region=eu-west-1"], "/auditCheckpoints/s3/bucket"),
    (["auditCheckpoints.s3.bucket=opsagent-audit"], "/auditCheckpoints/region"),
    (["auditCheckpoints.cloudwatchLogs.logGroup=/opsagent/cp", "auditCheckpoints.region=Ireland"],
     "/auditCheckpoints/region"),
    (["auditCheckpoints.s3.objectLock.mode=STRICT"], "/auditCheckpoints/s3/objectLock/mode"),
    (["auditCheckpoints.s3.objectLock.retainDays=-1"], "/auditCheckpoints/s3/objectLock/retainDays"),
    (["auditCheckpoints.endpointUrl=s3.internal"], "/auditCheckpoints/endpointUrl"),
    (["aws.roleArn=opsagent-role"], "/aws/roleArn"),
    (["auditCheckpoints.s3.retention=30"], "retention"),
])
def test_the_schema_refuses_bad_sink_values(helm_template: Any, values: list[str], complaint: str) -> None:
    out = helm_template(*(a for v in values for a in ("--set", v)))
    assert out.returncode != 0 and complaint in out.stderr, out.stderr


def test_only_the_executor_container_holds_the_write_identity(helm_template: Any, tmp_path: Path) -> None:
    """Issue 15 item 8: the container that parses webhooks, Slack and model output has no write credential.

    The pod mounts no token automatically; the executor ServiceAccount's token is a projected volume that
    only the executor container mounts; serve gets the reader's token and the executor's socket (a shared
    emptyDir); the reader's rules only read."""
    docs = _rendered(helm_template("--set", "rbac.executor.namespaces={llm-prod}",
                                   "--set", "secrets.slackBotTokenKey=slack-bot-token",
                                   "--set", "secrets.llmApiKeyKey=llm-api-key",
                                   "--set", "auditCheckpoints.allowRewritable=true"))
    pod = docs[("Deployment", "t-opsagent")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "t-opsagent-executor"
    volumes = {v["name"]: v for v in pod["volumes"]}
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"serve", "executor"}
    mounts = {n: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for n, c in containers.items()}

    # the write identity: a projected token of the pod's ServiceAccount, mounted in the executor alone
    projected = [n for n, v in volumes.items()
                 if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))]
    assert projected == ["executor-token"]
    assert "executor-token" in mounts["executor"] and "executor-token" not in mounts["serve"]
    assert not [d for (kind, _), d in docs.items() if kind == "Secret" and d["metadata"].get("annotations", {})
                .get("kubernetes.io/service-account.name") == "t-opsagent-executor"], "no long-lived writer token"
    # serve reads with the reader's token and reaches the executor over the shared socket directory
    assert volumes["reader-token"]["secret"]["secretName"] == "t-opsagent-reader-token"
    assert docs[("Secret", "t-opsagent-reader-token")]["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "t-opsagent-reader"}
    assert "reader-token" in mounts["serve"] and "reader-token" not in mounts["executor"]
    assert "emptyDir" in volumes["executor-socket"]
    assert mounts["serve"]["executor-socket"] == mounts["executor"]["executor-socket"] == "/run/opsagent"

    # settings: serve resolves to the socket and has no writer kubeconfig; the executor has one
    env = {n: {e["name"]: e for e in c["env"]} for n, c in containers.items()}
    assert "OPSAGENT_KUBERNETES__EXECUTOR_KUBECONFIG" not in env["serve"]
    writer_kc = env["executor"]["OPSAGENT_KUBERNETES__EXECUTOR_KUBECONFIG"]["value"]
    assert writer_kc == "/etc/opsagent/config/executor.kubeconfig"
    assert {"OPSAGENT_SLACK__BOT_TOKEN", "OPSAGENT_LLM__API_KEY"} <= set(env["serve"])
    assert not {"OPSAGENT_SLACK__BOT_TOKEN", "OPSAGENT_LLM__API_KEY"} & set(env["executor"]), \
        "the executor parses neither Slack nor model output: it gets neither secret"
    config = tmp_path / "config.yaml"
    cm = docs[("ConfigMap", "t-opsagent-config")]["data"]
    config.write_text(cm["config.yaml"])
    secrets = {"audit": {"key": "3f9a1c7e5b2d8f4a6c0e9b1d3f5a7c9e"},
               "server": {"auth_tokens": "webhook-token-from-the-secret-0123"}, "state_dir": str(tmp_path / "s")}
    serve = load_settings(config, **secrets)
    assert serve.executor_mode == "socket" and serve.kubernetes.executor_kubeconfig is None
    assert str(serve.executor.socket).startswith("/run/opsagent/")
    executor = load_settings(config, **secrets, kubernetes={
        **yaml.safe_load(cm["config.yaml"])["kubernetes"],
        "executor_kubeconfig": writer_kc})
    assert executor.kubernetes.executor_kubeconfig is not None
    writer = yaml.safe_load(cm["executor.kubeconfig"])["users"][0]["user"]["tokenFile"]
    assert writer.startswith(mounts["executor"]["executor-token"] + "/")

    # the reader ServiceAccount (serve's identity) is bound to read-only rules
    bound = {d["roleRef"]["name"] for (kind, _), d in docs.items() if kind in ("RoleBinding", "ClusterRoleBinding")
             and any(s["name"] == "t-opsagent-reader" for s in d["subjects"])}
    verbs = {v for (kind, name), d in docs.items() if kind in ("Role", "ClusterRole") and name in bound
             for rule in d["rules"] for v in rule["verbs"]}
    assert bound and verbs <= {"get", "list", "watch"}, verbs
