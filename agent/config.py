"""The settings tree, grouped by concern. Built once in an entry point and passed down.

Precedence, highest first: command-line flags (the entry point overrides fields), environment
variables `OPSAGENT_<GROUP>__<FIELD>` (e.g. `OPSAGENT_PROMETHEUS__URL`), a YAML file named by
`--config` or `OPSAGENT_CONFIG`, then the defaults below. No other module reads the environment.
Placeholder secrets are refused outside `env: dev`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tools.cloudwatch.settings import CloudWatchSettings
from tools.prometheus.settings import PrometheusSettings
from tools.rightsize.catalog import DEFAULT_CATALOG

PLACEHOLDERS = {"", "changeme", "change-me", "xxx", "placeholder", "secret", "dev"}


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KubernetesConfig(_Group):
    reader_kubeconfig: Path | None = Field(default=None, description="Read-only identity for triage and chat.")
    executor_kubeconfig: Path | None = Field(default=None, description="Write identity, used only by the executor.")
    cluster: str = Field(default="default", description="Cluster name used in reports and CloudWatch paths.")
    serving_namespaces: list[str] = Field(default_factory=list)


class LlmConfig(_Group):
    provider: Literal["none", "openai", "anthropic", "openai-compatible"] = "none"
    model: str = "gpt-4o-mini"
    base_url: str | None = Field(default=None, description="For openai-compatible endpoints (a team's vLLM).")
    api_key: SecretStr | None = None
    max_steps: int = Field(default=8, ge=1, le=50, description="Tool-calling rounds before the LLM must answer.")
    timeout_s: float = Field(default=60, gt=0, le=600)


class StoreConfig(_Group):
    url: str | None = Field(default=None, description="sqlite:///PATH (single replica) or postgresql://... "
                            "(several replicas). Default: sqlite in state_dir.")
    pool_size: int = Field(default=8, ge=1, le=64, description="Postgres connections each replica keeps for "
                           "incidents (opened as needed). 8 covers the threads intake runs store calls on (6 on "
                           "2 cores) with room for triage and the sweep; replicas × pool_size (+ the ledger's and "
                           "the audit log's 4 each) must stay under the server's max_connections (100 by default).")


class AuditConfig(_Group):
    path: Path | None = Field(default=None, description="Audit database. Default: state_dir/audit.db.")
    key: SecretStr | None = Field(default=None, description="HMAC key for checkpoints (>= 16 bytes). In dev a "
                                  "random key is kept in state_dir/audit.key.")
    checkpoint_file: Path | None = Field(default=None, description="Where signed checkpoints are exported; put "
                                         "it on storage the agent cannot rewrite. Default: state_dir.")
    checkpoint_log_group: str | None = Field(default=None, description="Also export to this CloudWatch Logs group "
                                             "(AWS credentials and endpoint from the `cloudwatch` section).")
    checkpoint_log_stream: str | None = Field(default=None, description="Log stream in that group (default: "
                                              "checkpoints-<kubernetes.cluster>).")
    checkpoint_s3_bucket: str | None = Field(default=None, description="Also export to this S3 bucket (AWS settings "
                                             "from `cloudwatch`); enable Object Lock on it and set retain days.")
    checkpoint_s3_prefix: str = "opsagent/audit-checkpoints/"
    checkpoint_s3_retain_days: int | None = Field(default=None, ge=1, le=3650,
                                                  description="Write checkpoints under Object Lock for this long.")
    checkpoint_s3_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE", description="Object Lock mode: COMPLIANCE (nobody, not even the account root, can "
        "shorten or remove it) or GOVERNANCE (principals with s3:BypassGovernanceRetention can).")
    checkpoint_region: str | None = Field(default=None, description="AWS region of the sinks (default: the "
                                          "`cloudwatch` section's); enough on its own, with IRSA or instance "
                                          "credentials, when CloudWatch evidence is off.")
    checkpoint_endpoint_url: str | None = Field(default=None, description="Endpoint override for the sinks' S3 and "
                                                "CloudWatch Logs (a VPC endpoint, LocalStack, moto).")
    checkpoint_every: int = Field(default=1000, ge=1)
    allow_rewritable_checkpoints: bool = Field(
        default=False, description="Outside env: dev, start without a checkpoint sink the pod cannot rewrite "
        "(S3 under Object Lock: checkpoint_s3_bucket with checkpoint_s3_retain_days). The file sink and "
        "CloudWatch Logs can be emptied by whoever holds the pod's volume or a role with logs:Delete*, and then "
        "a rewrite of the whole audit chain is not detectable. Off: such a start is refused.")

    @property
    def has_locked_sink(self) -> bool:
        """True when checkpoints also go somewhere the agent's pod cannot rewrite (S3 Object Lock)."""
        return bool(self.checkpoint_s3_bucket and self.checkpoint_s3_retain_days)


class ServerConfig(_Group):
    host: str = Field(default="127.0.0.1",
                      description="Loopback by default; bind a wider address only behind a network policy.")
    port: int = Field(default=8080, ge=1, le=65535)
    triage_lease_s: float = Field(default=60, gt=0, le=3600, description="Seconds a replica's claim on an "
                                  "incident's triage lasts unless renewed (every third of it); after a crash, "
                                  "another replica takes over within this long.")
    triage_sweep_s: float = Field(default=15, gt=0, le=3600, description="How often each replica looks in the "
                                  "store for firing incidents that no triage report covers yet.")
    auth_tokens: SecretStr | None = Field(default=None, description="Bearer tokens accepted on every endpoint "
                                          "but the probes and Slack's (comma-separated: two during a rotation). "
                                          "Alertmanager sends one with http_config.authorization. Required "
                                          "outside env: dev unless basic_auth is set; unset in dev: open.")
    basic_auth: SecretStr | None = Field(default=None, description="user:password pairs accepted as HTTP Basic "
                                         "auth (comma-separated), for Alertmanager's http_config.basic_auth.")
    pipeline_tokens: SecretStr | None = Field(default=None, description="CI pipelines that may request deployments "
                                              "(POST /deployments): NAME=TOKEN pairs, comma-separated, one token "
                                              "per pipeline. Unset: the deployment API answers 401 to everyone.")
    deploy_wait_s: float = Field(default=10, gt=0, le=120, description="POST /deployments answers within this "
                                 "long: a preflight still running then gets 202 with a request id whose GET reports "
                                 "its progress (a pipeline's HTTP client and proxies time out at 30-60 s).")
    max_alerts_per_incident: int = Field(default=1000, ge=1, le=100_000, description="New alerts beyond this "
                                         "are counted, not stored: one group cannot grow an incident (and every "
                                         "brief and report) without bound.")
    fold_window_s: float = Field(default=600, ge=0, le=86400, description="A new Alertmanager group whose firing "
                                 "alerts all name one workload (namespace and deployment, rollout, model_name or "
                                 "model label) joins that workload's open incident when its current episode "
                                 "started within this many seconds of them: one incident for one cause when the "
                                 "route groups by alertname. Alerts naming no workload never join another group.")
    retriage_debounce_s: float = Field(default=10, ge=0, le=3600, description="An incident re-triages at most "
                                       "once per this many seconds; deliveries meanwhile fold into one run.")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20, description="Larger request bodies get "
                                "413 while streaming, before they are buffered. 1 MiB holds thousands of alerts.")

    def credentials(self) -> tuple[list[str], list[str]]:
        """(bearer tokens, user:password pairs), split on commas and whitespace."""
        def split(v: SecretStr | None) -> list[str]:
            return [] if v is None else [t for t in v.get_secret_value().replace(",", " ").split() if t]
        return split(self.auth_tokens), split(self.basic_auth)


class VerificationConfig(_Group):
    """How a change is verified after it is applied (see agent/verify.py)."""

    window_s: float = Field(default=60, gt=0, le=3600, description="Signals watched after the rollout completes.")
    baseline_s: float = Field(default=120, gt=0, le=86400, description="Baseline window before the change.")
    step_s: float = Field(default=5, gt=0, le=300)
    rate_window_s: int = Field(default=30, ge=5, le=3600, description="rate() window; needs >= 3 scrapes.")
    rollout_deadline_s: float = Field(default=180, gt=0, le=7200)
    timeout_s: float = Field(default=600, gt=0, le=14400, description="Give up (inconclusive) after this long.")
    canary_deadline_s: float = Field(default=540, gt=0, le=14400, description="An Argo Rollout not promoted or "
                                     "aborted this long after its template was written is inconclusive (under "
                                     "timeout_s: the sandbox's three-step canary takes about 110 s).")


class ExecutionConfig(_Group):
    """The guarded executor's own knobs."""

    claim_ttl_s: float = Field(default=30, ge=0, le=3600, description="A claimed, unfinished execution older than "
                               "this was abandoned by a dead process and may be reconciled by another.")
    conflict_retries: int = Field(default=4, ge=0, le=20, description="HTTP 409s retried, each after a re-read "
                                  "that finds the approved spec unchanged.")


class ExecutorConfig(_Group):
    """Where the guarded executor runs: in this process, or in its own (`opsagent executor serve`).

    With a socket, the process that parses webhooks, Slack requests and model output holds no write
    credentials: it asks the executor process, which re-reads the change, its policy decision and its
    approvals from the store and re-checks them itself (docs/security.md).
    """

    socket: Path | None = Field(default=None, description="The executor process's Unix socket. Set: every "
                                "proposal, decision and execution goes through it and this process never builds "
                                "a write client (nor loads `tools.k8s_write`).")
    mode: Literal["auto", "socket", "in-process"] = Field(
        default="auto", description="auto: the socket when `socket` is set; else in-process in env: dev and "
        "refused in env: prod (a prod server must not hold write credentials). in-process: this process "
        "executes (the sandbox demo, a one-shot CLI with the writer's kubeconfig).")
    max_request_bytes: int = Field(default=64 << 10, ge=1024, le=4 << 20, description="Larger socket requests "
                                   "are refused unread. A proposal with its spec and evidence ids is a few KiB.")
    timeout_s: float = Field(default=120, gt=0, le=3600, description="A client waits this long for an answer "
                             "(an execution includes its 409 retries; a write times out at 60 s).")
    socket_group: bool = Field(default=False, description="Socket 0660 and its directory 0750 instead of "
                               "0600/0700: for a client running under another uid in the same group.")


class SlackConfig(_Group):
    enabled: bool = Field(default=False, description="Serve the Slack bot from `opsagent serve`.")
    bot_token: SecretStr | None = Field(default=None, description="Bot token (xoxb-...): posts and edits messages.")
    signing_secret: SecretStr | None = Field(default=None, description="Verifies that requests come from Slack.")
    channel: str = Field(default="#ml-incidents", description="Channel (name or id) where incidents are posted.")
    api_url: str | None = Field(default=None, description="Slack Web API base URL override (tests).")
    socket_mode: bool = Field(default=False, description="Connect over Socket Mode instead of receiving HTTP "
                              "requests (installs without a public URL); needs app_token.")
    app_token: SecretStr | None = Field(default=None, description="App-level token (xapp-...) for Socket Mode.")
    timeout_s: int = Field(default=10, ge=1, le=60, description="Per Web API call, seconds.")
    rate_limit_retries: int = Field(default=3, ge=0, le=10,
                                    description="Retries of a rate-limited (429) call, each after Retry-After.")


class SloConfig(_Group):
    """What "holding the SLO" means for a model when sizing it (the saturation defaults of the Gateway API
    Inference Extension for queue and KV cache)."""

    ttft_p95_s: float = Field(default=1.0, gt=0, description="Time to first token p95, seconds.")
    queue_max: float = Field(default=5, ge=0, description="Requests waiting in any replica's queue.")
    kv_cache_max: float = Field(default=0.8, gt=0, le=1, description="KV-cache usage of any replica (0..1).")


class CloudWatchWorkloadConfig(_Group):
    """A workload measured in CloudWatch: where its GPU utilisation and request counts are published."""

    namespace: str = Field(min_length=1, description="Kubernetes namespace of the workload.")
    name: str = Field(min_length=1, description="Workload (Deployment) name, as the workload label gives it.")
    gpu: bool = Field(default=True, description="Read Container Insights' `pod_gpu_utilization` with PodName = "
                      "the workload's name (how Container Insights aggregates a Deployment's pods).")
    load_balancer: str | None = Field(default=None, description="ALB `LoadBalancer` dimension (the ARN's suffix "
                                      "app/<name>/<id>) whose RequestCount counts its requests.")
    target_group: str | None = Field(default=None, description="ALB `TargetGroup` dimension (the ARN's suffix "
                                     "targetgroup/<name>/<id>) of the workload's Service.")
    prefer: Literal["prometheus", "cloudwatch"] = Field(
        default="prometheus", description="Which source wins when both have a series: `prometheus` uses "
        "CloudWatch only where Prometheus has none; `cloudwatch` makes CloudWatch the source of record.")

    @model_validator(mode="after")
    def _alb_pair(self) -> CloudWatchWorkloadConfig:
        if (self.load_balancer is None) != (self.target_group is None):
            raise ValueError(f"{self.namespace}/{self.name}: ALB request counts need both load_balancer and "
                             "target_group")
        return self


class RightsizeCloudWatchConfig(_Group):
    """Workloads whose right-sizing and cost history is (also) read from CloudWatch."""

    cluster_name: str | None = Field(default=None, description="Container Insights `ClusterName` (default: "
                                     "kubernetes.cluster).")
    workloads: list[CloudWatchWorkloadConfig] = Field(default_factory=list, max_length=2000)


class RightsizeConfig(_Group):
    """Right-sizing recommendations and cost reports."""

    price_catalog: Path = Field(default=DEFAULT_CATALOG, description="Node-hour prices and GPU products (YAML).")
    window: str = Field(default="14d", pattern=r"^[0-9]+[hdw]$", description="History to size from.")
    demand_percentile: float = Field(default=0.95, gt=0, le=1,
                                     description="Percentile of peak demand the replicas are sized for.")
    target_utilization: float = Field(default=0.85, gt=0, le=1,
                                      description="Share of the observed capacity at SLO to plan on (headroom).")
    min_replicas: int = Field(default=1, ge=0)
    busy_max: float = Field(default=0.85, gt=0, le=1,
                            description="GPU engine activity treated as full when extrapolating capacity.")
    slo_default: SloConfig = Field(default_factory=SloConfig)
    slo: dict[str, SloConfig] = Field(default_factory=dict, description="Per model name.")
    model_memory_gib: dict[str, float] = Field(default_factory=dict,
                                               description="GPU memory one replica of a model needs, by model name.")
    consider_gpu_types: bool = Field(default=True, description="Recommend other GPU types, counts and MIG.")
    min_shape_saving: float = Field(default=0.1, ge=0, lt=1,
                                    description="A different GPU shape must save this share to be recommended.")
    shape_headroom: float = Field(default=0.85, gt=0, le=1,
                                  description="Capacity on a GPU shape never observed is the observed capacity scaled "
                                              "by relative throughput, times this (below 1: keep headroom for the "
                                              "extrapolation).")
    min_points: int = Field(default=100, ge=1, description="Fewer raw samples: no recommendation (KRR's rule).")
    min_hours: float = Field(default=3.0, gt=0, description="Less history: no recommendation.")
    window_min_hours: int = Field(default=4, ge=1, le=24, description="Shortest scale-down window worth a schedule.")
    window_min_days: int = Field(default=2, ge=1, description="Days of each kind a window must be seen on.")
    scale_to_zero: bool = Field(default=True, description="Allow windows with zero replicas.")
    idle_rps: float = Field(default=0.01, ge=0, description="Peak demand below this is no traffic.")
    resource_headroom: float = Field(default=1.15, ge=1, description="VPA's safety margin on CPU and memory.")
    query_timeout_s: float = Field(default=120, gt=0, le=300, description="Per-query timeout for history.")
    workload_label: str = "app.kubernetes.io/name"
    model_label: str = "model"
    team_label: str = "team"
    schedule: str | None = Field(default=None, description="Cron expression (UTC) for the Slack cost report, "
                                 "e.g. '0 9 * * MON'. None: no scheduled report.")
    schedule_channel: str | None = Field(default=None, description="Slack channel (default: slack.channel).")
    schedule_check_s: float = Field(default=30, gt=0, le=3600, description="How often `opsagent serve` checks "
                                    "whether a tick of the schedule is due (a tick is posted within this long).")
    schedule_lease_s: float = Field(default=600, gt=0, le=86400, description="How long a replica's claim on a tick "
                                    "lasts while it builds and posts; a replica that dies leaves it to another "
                                    "after this long.")
    button_max_age_h: float = Field(default=168, gt=0, le=24 * 90, description="A \"Create change request\" "
                                    "click on a report older than this is refused (its figures are stale).")
    top: int = Field(default=5, ge=1, le=50, description="Savings listed in the Slack report.")
    cloudwatch: RightsizeCloudWatchConfig = Field(
        default_factory=RightsizeCloudWatchConfig, description="Workloads measured in CloudWatch (needs the "
        "`cloudwatch` section for region, endpoint and credentials).")


class AlertmanagerConfig(_Group):
    """Where Alertmanager is, so `opsagent doctor` can check that its routes reach this agent."""

    url: str | None = Field(default=None, description="Alertmanager base URL (e.g. http://alertmanager:9093). "
                            "None: the route check is skipped.")
    webhook_url: str | None = Field(default=None, description="The URL Alertmanager must post to (this agent's "
                                    "/alertmanager as Alertmanager reaches it). None: any URL ending in /alertmanager.")


class TracingConfig(_Group):
    """OpenTelemetry traces of triages and changes (docs/observability.md). Off by default: with
    `enabled: false` no exporter, processor or thread exists and spans are the API's no-ops."""

    enabled: bool = Field(default=False, description="Export traces over OTLP/HTTP.")
    endpoint: str = Field(default="http://127.0.0.1:4318", description="OTLP/HTTP collector base URL; "
                          "/v1/traces is appended (Jaeger, an OpenTelemetry Collector, Tempo).")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Sent with every export "
                                          "(an API key for a hosted backend).")
    service_name: str = Field(default="opsagent", min_length=1, description="service.name of every span.")
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Share of triages and changes traced "
                                "(parent-based: a trace is kept or dropped whole). 1: incidents are rare.")
    timeout_s: float = Field(default=10, gt=0, le=60, description="Per export request.")
    ui_url: str | None = Field(default=None, description="Jaeger UI base URL (e.g. https://jaeger.example): "
                               "Slack messages and incident reports link to the incident's traces there.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSAGENT_", env_nested_delimiter="__", extra="forbid")

    env: Literal["dev", "prod"] = "dev"
    state_dir: Path = Field(default=Path.home() / ".local" / "state" / "opsagent",
                            description="Local state: the SQLite store, the audit log and its key in dev.")
    actor: str = Field(default="cli", description="Who is at the keyboard, as the requester of changes the CLI "
                       "proposes (`rightsize apply`). Never an approver: `changes approve` asks the cluster who "
                       "you are (docs/security.md).")
    runbooks_dir: Path = Field(default=Path(__file__).resolve().parents[1] / "runbooks")
    policies_dir: Path = Field(default=Path(__file__).resolve().parents[1] / "policies")
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    cloudwatch: CloudWatchSettings | None = Field(default=None, description="None: CloudWatch evidence is off.")
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    rightsize: RightsizeConfig = Field(default_factory=RightsizeConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: keyword arguments (CLI flags), `OPSAGENT_*` variables, the YAML file, defaults."""
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite://{self.state_dir / 'opsagent.db'}"

    @property
    def audit_path(self) -> Path:
        return self.audit.path or self.state_dir / "audit.db"

    @property
    def checkpoint_file(self) -> Path:
        return self.audit.checkpoint_file or self.state_dir / "audit-checkpoints.jsonl"

    @property
    def executor_mode(self) -> Literal["socket", "in-process"]:
        """Where changes execute: `executor.mode`, with auto resolved (the socket in env: prod)."""
        e = self.executor
        if e.mode == "auto":
            return "socket" if e.socket is not None or self.env == "prod" else "in-process"
        return e.mode

    def without_write_credentials(self) -> Settings:
        """These settings with the writer's kubeconfig removed: what a socket client keeps."""
        k8s = self.kubernetes.model_copy(update={"executor_kubeconfig": None})
        return self.model_copy(update={"kubernetes": k8s})

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_prod(self) -> Settings:
        if self.env == "dev":
            return self
        if self.audit.key is None:
            raise ValueError("audit.key must be set outside env: dev (the checkpoint signing key)")
        for name, secret in (("llm.api_key", self.llm.api_key), ("slack.bot_token", self.slack.bot_token),
                             ("slack.signing_secret", self.slack.signing_secret),
                             ("slack.app_token", self.slack.app_token), ("audit.key", self.audit.key)):
            if secret is not None and secret.get_secret_value().lower() in PLACEHOLDERS:
                raise ValueError(f"{name} is a placeholder; set a real secret or use env: dev")
        tokens, pairs = self.server.credentials()
        if not tokens and not pairs:
            raise ValueError("server.auth_tokens or server.basic_auth must be set outside env: dev (the webhook "
                             "and /incidents would accept anyone)")
        for t in tokens:
            problem = "a placeholder" if t.lower() in PLACEHOLDERS else weak_key(t, min_length=24, distinct=8)
            if problem:
                raise ValueError(f"server.auth_tokens: a token is too weak ({problem}): each "
                                 "token needs at least 24 characters, not a pattern; `openssl rand -hex 24`")
        pipelines = (self.server.pipeline_tokens.get_secret_value() if self.server.pipeline_tokens else "")
        for item in pipelines.replace(",", " ").split():
            token = item.partition("=")[2]
            problem = "a placeholder" if token.lower() in PLACEHOLDERS else weak_key(token, min_length=24, distinct=8)
            if problem:
                raise ValueError(f"server.pipeline_tokens: a pipeline's token is too weak ({problem}): each needs "
                                 "at least 24 characters, not a pattern; `openssl rand -hex 24`")
        for pair in pairs:
            if ":" not in pair:
                raise ValueError("server.basic_auth: each entry is user:password")
            if problem := weak_key(pair.partition(":")[2], min_length=16, distinct=8):
                raise ValueError(f"server.basic_auth: a password is too weak ({problem}): at least 16 characters, "
                                 "not a pattern")
        if problem := weak_key(self.audit.key.get_secret_value()):
            raise ValueError(f"audit.key is too weak ({problem}): a checkpoint forged with a guessed key "
                             "would hide tampering; use `openssl rand -hex 32` from a Secret the pod cannot write")
        if self.slack.enabled and not self.slack.socket_mode and self.slack.signing_secret is None:
            raise ValueError("slack.signing_secret must be set outside env: dev when the Slack bot receives HTTP "
                             "requests: without it nothing tells Slack's requests from anyone's")
        if self.slack.signing_secret is not None and (
                problem := weak_key(self.slack.signing_secret.get_secret_value(), distinct=8)):
            raise ValueError(f"slack.signing_secret is too weak ({problem}): Slack's are 32 random hex characters "
                             "(the app's Basic Information page); a guessable one lets anyone forge clicks")
        if not self.audit.has_locked_sink and not self.audit.allow_rewritable_checkpoints:
            raise ValueError("audit: outside env: dev the signed checkpoints need a sink the agent's pod cannot "
                             "rewrite: set audit.checkpoint_s3_bucket (a bucket with Object Lock) and "
                             "audit.checkpoint_s3_retain_days. The checkpoint file and CloudWatch Logs can be "
                             "emptied from the pod's side, and then a rewritten audit chain verifies; to accept "
                             "that knowingly set audit.allow_rewritable_checkpoints: true")
        return self


def weak_key(key: str, *, min_length: int = 32, distinct: int = 12) -> str | None:
    """Why `key` is too weak for a signing or shared secret outside dev, or None (at least `min_length`
    characters, at least `distinct` different ones, not a pattern repeated)."""
    if len(key) < min_length:
        return f"{len(key)} characters, at least {min_length} needed"
    if len(set(key)) < distinct:
        return f"only {len(set(key))} distinct characters"
    for n in range(1, len(key) // 2 + 1):
        if key == (key[:n] * (len(key) // n + 1))[: len(key)]:
            return f"a {n}-character pattern repeated"
    return None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: defaults < YAML file < environment < explicit overrides (from CLI flags).

    The sources are pydantic-settings' own (`Settings.settings_customise_sources`), merged field by field
    before the whole tree is validated once: a check that spans sources (a prod `env` from the
    environment, the `audit.key` from the file) sees them all.
    """
    if config_file is not None:
        try:  # a clear error for an unreadable or malformed file, before pydantic-settings reads it
            loaded = yaml.safe_load(config_file.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read settings file {config_file}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"settings file {config_file} must hold a mapping, not {type(loaded).__name__}")

    class FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return FromFile(**overrides)
