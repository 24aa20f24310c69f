"""Probe every configured integration and say, for each, what works, what does not and the fix.

`opsagent doctor` prints these checks; each integration's own `check()` probe (Prometheus,
Kubernetes, CloudWatch) is the first thing asked, and this module adds what only the agent knows:
whether Alertmanager routes reach the agent, whether each Kubernetes identity can do what it must and
cannot do what it must not (SelfSubjectAccessReview, `kubectl auth can-i`), whether the Slack token,
the model provider, the store, the audit log and its sinks accept us.

Nothing here changes anything: every probe is a read, an access review or a no-op write to a scratch
path. A probe never raises; a failure becomes a check with `ok=False` and a fix.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from agent.app import audit_key, audit_target, checkpoint_sinks
from agent.audit.log import AuditLog, CloudWatchLogsCheckpointSink, FileCheckpointSink, S3CheckpointSink
from agent.config import Settings
from agent.storage.store import open_store
from tools.cloudwatch.client import CloudWatchClient
from tools.k8s_read.client import K8sReadClient
from tools.k8s_read.settings import K8sReadSettings
from tools.prometheus.client import PrometheusClient


class Status(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    WARN = "warn"  # works, but something a user should know (an extra permission, a skipped part)
    SKIP = "skip"  # not configured


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    status: Status
    detail: str
    fix: str = ""
    latency_ms: float | None = None


# What each Kubernetes identity must and must not be allowed: (verb, group, resource, subresource,
# namespace). Namespace "" asks cluster-wide, SERVING asks in each of kubernetes.serving_namespaces,
# any other name asks there. The reader reads everything triage needs and writes nothing (no pod logs
# either: they come from CloudWatch); the executor may make exactly the calls its code makes (reads and
# patches Deployments, lists their ReplicaSets, evicts pods and gets and deletes one pod (a restart) in the
# serving namespaces; gets, lists and cordons nodes, lists pods on a node), never `update` or
# `deployments/scale`, never Secrets or other namespaces. tests/unit/test_rbac_from_code.py checks
# EXECUTOR_MUST against the executor's code.
SERVING = "<serving>"
OTHER_NAMESPACE = "kube-system"
Access = tuple[str, str, str, str, str]
READER_MUST: tuple[Access, ...] = (
    ("list", "", "pods", "", ""), ("list", "", "events", "", ""),
    ("list", "", "nodes", "", ""), ("list", "apps", "deployments", "", ""), ("list", "apps", "replicasets", "", ""),
    ("list", "autoscaling", "horizontalpodautoscalers", "", ""),
    ("list", "gateway.networking.k8s.io", "httproutes", "", ""),
)
READER_MUST_NOT: tuple[Access, ...] = (
    ("patch", "apps", "deployments", "", SERVING), ("update", "apps", "deployments", "scale", SERVING),
    ("delete", "", "pods", "", SERVING), ("create", "", "pods", "eviction", SERVING), ("patch", "", "nodes", "", ""),
    ("get", "", "secrets", "", ""), ("get", "", "pods", "log", ""),
    ("patch", "gateway.networking.k8s.io", "httproutes", "", SERVING),
)
EXECUTOR_MUST: tuple[Access, ...] = (
    ("get", "apps", "deployments", "", SERVING), ("patch", "apps", "deployments", "", SERVING),
    ("list", "apps", "replicasets", "", SERVING), ("create", "", "pods", "eviction", SERVING),
    ("get", "", "pods", "", SERVING), ("delete", "", "pods", "", SERVING),
    ("get", "", "nodes", "", ""), ("list", "", "nodes", "", ""), ("patch", "", "nodes", "", ""),
    ("list", "", "pods", "", ""),
    ("get", "argoproj.io", "rollouts", "", SERVING), ("patch", "argoproj.io", "rollouts", "", SERVING),
    ("patch", "argoproj.io", "rollouts", "status", SERVING),
)
EXECUTOR_MUST_NOT: tuple[Access, ...] = (
    ("patch", "apps", "deployments", "", OTHER_NAMESPACE), ("delete", "apps", "deployments", "", SERVING),
    ("delete", "", "pods", "", OTHER_NAMESPACE), ("get", "", "secrets", "", SERVING),
    ("delete", "", "nodes", "", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""), ("delete", "", "namespaces", "", ""),
    ("update", "apps", "deployments", "", SERVING), ("patch", "apps", "deployments", "scale", SERVING),
    ("patch", "gateway.networking.k8s.io", "httproutes", "", SERVING),  # a route's weights: a human's change
)


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, concurrently; the order of the list is fixed (the order `doctor` prints)."""
    probes: list[tuple[str, Callable[[Settings], Awaitable[Check]]]] = [
        ("prometheus", _prometheus), ("alertmanager", _alertmanager),
        ("kubernetes reader", _k8s_reader), ("kubernetes executor", _k8s_executor),
        ("cloudwatch", _cloudwatch), ("slack", _slack), ("model provider", _llm),
        ("store", _store), ("audit", _audit), ("tracing", _tracing),
    ]

    async def guarded(name: str, fn: Callable[[Settings], Awaitable[Check]]) -> Check:
        t0 = time.monotonic()
        try:
            c = await fn(settings)
        except Exception as e:  # a probe bug must not hide the other checks
            c = Check(name=name, status=Status.FAIL, detail=f"the check itself failed: {type(e).__name__}: {e}",
                      fix="report this: the probe raised instead of answering")
        if c.latency_ms is None and c.status != Status.SKIP:
            c = c.model_copy(update={"latency_ms": round((time.monotonic() - t0) * 1000, 1)})
        return c

    return list(await asyncio.gather(*(guarded(n, f) for n, f in probes)))


def exit_code(checks: list[Check]) -> int:
    """0 when nothing failed (warnings and skips included), 1 otherwise: what CI gates on."""
    return 1 if any(c.status == Status.FAIL for c in checks) else 0


# --- Prometheus and Alertmanager ------------------------------------------------------------------------

async def _prometheus(s: Settings) -> Check:
    client = PrometheusClient(s.prometheus)
    try:
        st = await client.check()
    finally:
        await client.aclose()
    if st.ok:
        return Check(name="prometheus", status=Status.OK, latency_ms=st.latency_ms,
                     detail=f"{st.url} answers (Prometheus {st.version or 'version unknown'})")
    fix = (f"Prometheus at {st.url} cannot be reached: check prometheus.url (OPSAGENT_PROMETHEUS__URL), that "
           "Prometheus runs, and that this pod may connect to it (NetworkPolicy, port)")
    if any(code in st.detail for code in ("401", "403")):
        fix = "Prometheus refused our credentials: set prometheus.headers (e.g. Authorization: Bearer …) to valid ones"
    return Check(name="prometheus", status=Status.FAIL, detail=st.detail, fix=fix)


async def _alertmanager(s: Settings) -> Check:
    url = s.alertmanager.url
    if url is None:
        return Check(name="alertmanager", status=Status.SKIP, detail="alertmanager.url is not set",
                     fix="set alertmanager.url to check that Alertmanager routes alerts to this agent")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            resp = await http.get("/api/v2/status")
        resp.raise_for_status()
        original = resp.json()["config"]["original"]
        config = yaml.safe_load(original) or {}
    except (httpx.HTTPError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        return Check(name="alertmanager", status=Status.FAIL, detail=f"cannot read {url}/api/v2/status: {e}",
                     fix=f"check alertmanager.url (now {url}) and that Alertmanager runs and is reachable")
    want = s.alertmanager.webhook_url
    receivers = {}
    for r in config.get("receivers") or []:
        urls = [str(w.get("url", "")) for w in r.get("webhook_configs") or []]
        if any(u == want if want else u.rstrip("/").endswith("/alertmanager") for u in urls):
            receivers[str(r.get("name"))] = urls
    routed = _routed_receivers(config.get("route") or {})
    reaching = sorted(set(receivers) & routed)
    target = want or "http://OPSAGENT:8080/alertmanager"
    snippet = (f"receivers: [{{name: opsagent, webhook_configs: [{{url: {target}, send_resolved: true}}]}}] "
               "and a route (or the root route) with receiver: opsagent")
    if not receivers:
        return Check(name="alertmanager", status=Status.FAIL,
                     detail=f"no receiver in Alertmanager's config posts to {want or 'an /alertmanager URL'}",
                     fix=f"add to Alertmanager's config: {snippet}")
    if not reaching:
        return Check(name="alertmanager", status=Status.FAIL,
                     detail=f"receiver(s) {', '.join(sorted(receivers))} post to the agent but no route uses them",
                     fix=f"route alerts to {sorted(receivers)[0]!r}: {snippet}")
    return Check(name="alertmanager", status=Status.OK,
                 detail=f"{url}: routes reach receiver(s) {', '.join(reaching)} → "
                        f"{', '.join(u for r in reaching for u in receivers[r])}")


def _routed_receivers(route: dict[str, Any]) -> set[str]:
    out = {str(route["receiver"])} if route.get("receiver") else set()
    for child in route.get("routes") or []:
        out |= _routed_receivers(child)
    return out


# --- Kubernetes identities -------------------------------------------------------------------------------

async def _k8s_reader(s: Settings) -> Check:
    kc = s.kubernetes.reader_kubeconfig
    if kc is None:
        return Check(name="kubernetes reader", status=Status.SKIP, detail="kubernetes.reader_kubeconfig is not set",
                     fix="set kubernetes.reader_kubeconfig (the read-only identity) to give triage Kubernetes evidence")
    client = K8sReadClient(K8sReadSettings(kubeconfig=kc, serving_namespaces=tuple(s.kubernetes.serving_namespaces)))
    try:
        st = await client.check()
    finally:
        client.close()
    if not st.ok:
        return Check(name="kubernetes reader", status=Status.FAIL, detail=st.detail, fix=_k8s_fix(st.detail, kc))
    return await _access("kubernetes reader", kc, _expand(READER_MUST, s), _expand(READER_MUST_NOT, s),
                         f"API server {st.server_version}", "the reader ClusterRole (deploy/helm: rbac.yaml)")


async def _k8s_executor(s: Settings) -> Check:
    kc = s.kubernetes.executor_kubeconfig
    if kc is None and s.executor_mode == "socket":
        return await _executor_socket(s)
    if kc is None:
        return Check(name="kubernetes executor", status=Status.SKIP,
                     detail="kubernetes.executor_kubeconfig is not set: changes can be proposed, not executed",
                     fix="set kubernetes.executor_kubeconfig (the write identity) to let approved changes run")
    if not s.kubernetes.serving_namespaces:
        return Check(name="kubernetes executor", status=Status.FAIL,
                     detail="kubernetes.serving_namespaces is empty: the executor's scope cannot be checked",
                     fix="list the namespaces the executor may change in kubernetes.serving_namespaces")
    return await _access("kubernetes executor", kc, _expand(EXECUTOR_MUST, s), _expand(EXECUTOR_MUST_NOT, s), "",
                         "the executor's Role bindings in the serving namespaces (deploy/helm: rbac.yaml)")


async def _executor_socket(s: Settings) -> Check:
    """This process executes nothing itself: is the executor process answering on its socket?"""
    path = s.executor.socket
    if path is None:
        return Check(name="kubernetes executor", status=Status.FAIL,
                     detail="executor.socket is not set: outside env: dev changes execute in the executor process",
                     fix="run `opsagent executor serve --socket PATH` beside serve and set executor.socket")
    t0 = time.monotonic()
    try:  # a connection closed without a byte is a probe: the executor answers nothing and records nothing
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError) as e:
        return Check(name="kubernetes executor", status=Status.FAIL,
                     detail=f"the executor process is not answering on {path}: {type(e).__name__}: {e}",
                     fix="start `opsagent executor serve` (the chart's executor container) and check its log")
    return Check(name="kubernetes executor", status=Status.OK,
                 detail=f"executor process listening on {path}; its write identity is checked there",
                 latency_ms=round((time.monotonic() - t0) * 1000, 1))


def _expand(accesses: tuple[Access, ...], s: Settings) -> tuple[Access, ...]:
    """Ask a SERVING access once per serving namespace (cluster-wide when none is configured)."""
    out: list[Access] = []
    for verb, group, resource, sub, ns in accesses:
        spaces = (s.kubernetes.serving_namespaces or [""]) if ns == SERVING else [ns]
        out.extend((verb, group, resource, sub, n) for n in spaces)
    return tuple(out)


async def _access(name: str, kubeconfig: Path, must: tuple[Access, ...], must_not: tuple[Access, ...],
                  prefix: str, role: str) -> Check:
    try:
        answers = await asyncio.to_thread(_can_i, kubeconfig, [*must, *must_not])
    except Exception as e:
        detail = f"{type(e).__name__}: {getattr(e, 'reason', '') or e}"
        return Check(name=name, status=Status.FAIL, detail=f"access review failed: {detail}",
                     fix=_k8s_fix(detail, kubeconfig))
    missing = [_fmt(a) for a in must if not answers[a]]
    extra = [_fmt(a) for a in must_not if answers[a]]
    lead = f"{prefix}; " if prefix else ""
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"cannot {', '.join(missing)}")
        if extra:
            parts.append(f"is allowed what it must not be: {', '.join(extra)}")
        fixes = []
        if missing:
            fixes.append(f"grant {', '.join(missing)} in {role}")
        if extra:
            fixes.append(f"remove {', '.join(extra)} from this identity's roles (kubectl auth can-i --list "
                         f"--kubeconfig {kubeconfig})")
        return Check(name=name, status=Status.FAIL, detail=lead + "; ".join(parts), fix="; ".join(fixes))
    return Check(name=name, status=Status.OK,
                 detail=f"{lead}can {len(must)} of {len(must)} required actions, none of {len(must_not)} forbidden")


def _can_i(kubeconfig: Path, accesses: list[Access]) -> dict[Access, bool]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        authz = client.AuthorizationV1Api(api)
        out = {}
        for verb, group, resource, sub, ns in accesses:
            attrs = {"verb": verb, "group": group, "resource": resource}
            if sub:
                attrs["subresource"] = sub
            if ns:
                attrs["namespace"] = ns
            review = authz.create_self_subject_access_review(
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                 "spec": {"resourceAttributes": attrs}}, _request_timeout=10)
            out[(verb, group, resource, sub, ns)] = bool(review.status.allowed)
        return out
    finally:
        api.close()


def _fmt(a: Access) -> str:
    verb, group, resource, sub, ns = a
    return f"{verb} {resource}{'/' + sub if sub else ''}{'.' + group if group else ''}{' in ' + ns if ns else ''}"


def _k8s_fix(detail: str, kubeconfig: Path) -> str:
    if "401" in detail or "Unauthorized" in detail:
        return (f"the API server refused the credentials in {kubeconfig} (401): the token or client certificate "
                "is wrong or expired; issue a new one for this identity")
    if "403" in detail or "Forbidden" in detail:
        return (f"the identity in {kubeconfig} is not allowed this read (403): bind it to its ClusterRole "
                "(deploy/helm: rbac.yaml)")
    return (f"cannot reach the API server named in {kubeconfig}: check its server URL, CA and that this pod may "
            "connect to it")


# --- CloudWatch, Slack, the model provider ----------------------------------------------------------------

async def _cloudwatch(s: Settings) -> Check:
    if s.cloudwatch is None:
        return Check(name="cloudwatch", status=Status.SKIP, detail="the cloudwatch section is not set",
                     fix="set cloudwatch.region (and credentials, or IRSA) for CloudWatch evidence")
    client = CloudWatchClient(s.cloudwatch)
    try:
        st = await client.check()
    finally:
        client.close()
    where = st.endpoint or f"AWS {st.region}"
    if st.ok:
        return Check(name="cloudwatch", status=Status.OK, latency_ms=st.latency_ms,
                     detail=f"{where}: CloudWatch metrics and Logs answer")
    fix = (f"check cloudwatch.region / endpoint_url and credentials; the identity needs cloudwatch:ListMetrics, "
           f"cloudwatch:GetMetricData and logs:DescribeLogGroups (metrics {'ok' if st.metrics_ok else 'failing'}, "
           f"logs {'ok' if st.logs_ok else 'failing'})")
    return Check(name="cloudwatch", status=Status.FAIL, detail=st.detail, fix=fix)


async def _slack(s: Settings) -> Check:
    if not s.slack.enabled:
        return Check(name="slack", status=Status.SKIP, detail="slack.enabled is false",
                     fix="see docs/slack.md to install the app (deploy/slack/manifest.yaml)")
    if s.slack.bot_token is None:
        return Check(name="slack", status=Status.FAIL, detail="slack.enabled but slack.bot_token is not set",
                     fix="set slack.bot_token to the app's Bot User OAuth Token (xoxb-…)")
    from slack_sdk.errors import SlackApiError, SlackClientError
    from slack_sdk.web.async_client import AsyncWebClient

    kwargs: dict[str, Any] = {"token": s.slack.bot_token.get_secret_value(), "timeout": s.slack.timeout_s}
    if s.slack.api_url:
        kwargs["base_url"] = s.slack.api_url.rstrip("/") + "/"
    client = AsyncWebClient(**kwargs)
    try:
        resp = await client.auth_test()
    except SlackApiError as e:
        err = str(e.response.get("error", e))
        fix = {"invalid_auth": "slack.bot_token is not a valid token: copy the Bot User OAuth Token (xoxb-…) from "
                               "the app's OAuth & Permissions page",
               "token_revoked": "the token was revoked: reinstall the app to the workspace and copy the new token",
               "account_inactive": "the app was uninstalled or its workspace deactivated: reinstall it",
               }.get(err, "check slack.bot_token")
        return Check(name="slack", status=Status.FAIL, detail=f"auth.test refused the token: {err}", fix=fix)
    except (SlackClientError, OSError, TimeoutError) as e:
        return Check(name="slack", status=Status.FAIL, detail=f"cannot reach Slack: {type(e).__name__}: {e}",
                     fix="allow HTTPS egress to slack.com (or check slack.api_url)")
    missing = [] if s.slack.signing_secret is not None or s.slack.socket_mode else ["slack.signing_secret"]
    detail = f"auth.test ok: bot {resp.get('user')} in {resp.get('team')}; posts to {s.slack.channel}"
    if missing:
        return Check(name="slack", status=Status.FAIL, detail=detail + "; no signing secret",
                     fix="set slack.signing_secret (Basic Information → Signing Secret): requests cannot be verified")
    return Check(name="slack", status=Status.OK, detail=detail)


async def _llm(s: Settings) -> Check:
    cfg = s.llm
    if cfg.provider == "none":
        return Check(name="model provider", status=Status.SKIP, detail="llm.provider is none: the rules reasoner",
                     fix="set llm.provider, llm.model and llm.api_key to diagnose with a model")
    from agent.triage.reasoners.chat import base_url

    base = base_url(cfg).rstrip("/")
    key = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
    if cfg.provider == "anthropic":
        url, headers = f"{base}/v1/models", {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url, headers = f"{base}/models", {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=min(cfg.timeout_s, 15)) as http:
            resp = await http.get(url, headers=headers)
    except httpx.HTTPError as e:
        return Check(name="model provider", status=Status.FAIL, detail=f"cannot reach {url}: {type(e).__name__}: {e}",
                     fix="check llm.base_url and egress to the provider")
    if resp.status_code in (401, 403):
        return Check(name="model provider", status=Status.FAIL,
                     detail=f"{cfg.provider} refused the key: HTTP {resp.status_code} from {url}",
                     fix="set llm.api_key (OPSAGENT_LLM__API_KEY) to a valid key for this provider")
    if resp.status_code != 200:
        return Check(name="model provider", status=Status.FAIL, detail=f"HTTP {resp.status_code} from {url}",
                     fix="check llm.base_url: it should be the API root that serves /models")
    try:
        ids = {str(m.get("id")) for m in resp.json().get("data", [])}
    except ValueError:
        ids = set()
    if ids and cfg.model not in ids:
        return Check(name="model provider", status=Status.FAIL,
                     detail=f"{base} answers but does not serve model {cfg.model!r}",
                     fix=f"set llm.model to one it serves: {', '.join(sorted(ids)[:8])}")
    return Check(name="model provider", status=Status.OK, detail=f"{cfg.provider} at {base} serves {cfg.model}")


# --- store, audit, tracing --------------------------------------------------------------------------------

async def _store(s: Settings) -> Check:
    def probe() -> int:
        store = open_store(s.store_url)
        try:
            return len(store.incidents(None, 1))
        finally:
            store.close()

    where = s.store_url.split("@")[-1]  # never print a password from a postgresql:// URL
    try:
        await asyncio.to_thread(probe)
    except Exception as e:
        return Check(name="store", status=Status.FAIL, detail=f"{where}: {type(e).__name__}: {e}",
                     fix="check store.url: the database must exist and accept this user (SQLite: a writable directory)")
    return Check(name="store", status=Status.OK, detail=f"{where} opens and answers")


async def _audit(s: Settings) -> Check:
    def probe() -> str:
        sinks = checkpoint_sinks(s)
        log = AuditLog(audit_target(s), audit_key(s), sinks, checkpoint_every=s.audit.checkpoint_every)
        try:
            report = log.verify()
        finally:
            log.close()
        if not report.ok:
            raise ValueError(f"the audit chain does not verify ({report.records} records): {report.problems[:3]}")
        names = []
        for sink in sinks:
            if isinstance(sink, FileCheckpointSink):
                sink.path.parent.mkdir(parents=True, exist_ok=True)
                names.append(f"file {sink.path}")
            elif isinstance(sink, CloudWatchLogsCheckpointSink):
                sink.client.describe_log_streams(logGroupName=sink.group, limit=1)
                names.append(f"CloudWatch Logs {sink.group}")
            elif isinstance(sink, S3CheckpointSink):
                sink.client.head_bucket(Bucket=sink.bucket)
                names.append(f"S3 {sink.bucket}")
        return f"chain verifies; checkpoint sinks: {', '.join(names)}"

    try:
        detail = await asyncio.to_thread(probe)
    except Exception as e:
        return Check(name="audit", status=Status.FAIL, detail=f"{type(e).__name__}: {e}",
                     fix="check audit.path and audit.key; for the sinks, that audit.checkpoint_log_group / "
                         "checkpoint_s3_bucket exist and the identity may write to them")
    return Check(name="audit", status=Status.OK, detail=detail)


async def _tracing(s: Settings) -> Check:
    t = s.tracing
    if not t.enabled:
        return Check(name="tracing", status=Status.SKIP, detail="tracing.enabled is false",
                     fix="set tracing.enabled and tracing.endpoint (OTLP/HTTP) to export traces")
    url = t.endpoint.rstrip("/") + "/v1/traces"
    try:  # an empty export request: a collector answers 200 (or 400 for the empty body) when it is there
        async with httpx.AsyncClient(timeout=t.timeout_s) as http:
            headers = {k: v.get_secret_value() for k, v in t.headers.items()}
            headers["Content-Type"] = "application/x-protobuf"
            resp = await http.post(url, content=b"", headers=headers)
    except httpx.HTTPError as e:
        return Check(name="tracing", status=Status.FAIL, detail=f"cannot reach {url}: {type(e).__name__}: {e}",
                     fix="check tracing.endpoint: the OTLP/HTTP port of Jaeger or the collector (usually 4318)")
    if resp.status_code in (401, 403, 404):
        return Check(name="tracing", status=Status.FAIL, detail=f"HTTP {resp.status_code} from {url}",
                     fix="check tracing.endpoint (the base URL, without /v1/traces) and tracing.headers")
    return Check(name="tracing", status=Status.OK, detail=f"{url} accepts OTLP (HTTP {resp.status_code})")
