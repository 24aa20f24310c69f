"""The composition root: build every long-lived part from settings, once, for an entry point.

Entry points (CLI, `serve`, the scheduler, evals) call `build_app(settings)` and use what it holds.
The triage runner is built without write credentials and with a READ ceiling; only `executor()`
builds the write client, from the executor identity's kubeconfig.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent import postmortem
from agent.audit.events import AuditEvent, AuditKind
from agent.audit.log import (
    AuditLog,
    CheckpointSink,
    CloudWatchLogsCheckpointSink,
    FileCheckpointSink,
    S3CheckpointSink,
)
from agent.change import class_evidence
from agent.change.deploy import DeployOutcome, DeployRequest, plan_deployment, request_deployment
from agent.change.flow import ChangeFlow, FlowEvent, FlowState, OnEvent
from agent.change.ledger import Ledger
from agent.change.models import ChangeRequest, ChangeSpec, ChangeStage, ChangeStatus
from agent.change.rollout_watch import watch_rollout
from agent.change.verdict import Outcome
from agent.change.verify import Verification, VerifySettings, failing_pods, failing_replicas, verify
from agent.config import LlmConfig, Settings
from agent.guard.runner import ToolRunner
from agent.models import ActionKind, Incident, TriageReport
from agent.policy.evaluate import capacity_drop_limit, load_policy
from agent.policy.model import Policy
from agent.postmortem import PostIncidentReport
from agent.rightsize.changes import predicted_cost_delta
from agent.storage.db import is_postgres
from agent.storage.store import Store, db_target, open_store
from agent.telemetry import trace_id, tracer
from agent.triage.graph import build_triage_graph
from agent.triage.reasoners.llm import LlmReasoner
from agent.triage.reasoners.rules import RulesReasoner
from agent.triage.runbooks import Runbook, load_dir
from agent.triage.state import PriorChange, Reasoner, TriageContext
from tools.base import Risk, ToolSpec
from tools.cloudwatch.client import CloudWatchClient, aws_session
from tools.cloudwatch.settings import CloudWatchSettings
from tools.k8s_read.client import K8sReadClient
from tools.k8s_read.settings import K8sReadSettings
from tools.prometheus.client import PrometheusClient
from tools.registry import default_tools
from tools.rightsize.catalog import PriceCatalog
from tools.serving_knowledge.knowledge import ServingKnowledge

if TYPE_CHECKING:  # imported where it is built: a process that executes over the socket never loads it
    from agent.change.executor.core import Executor
    from agent.change.state import FlowExecutor

log = logging.getLogger(__name__)


def audit_key(settings: Settings) -> bytes:
    if settings.audit.key is not None:
        return settings.audit.key.get_secret_value().encode()
    path = settings.state_dir / "audit.key"  # dev only: Settings refuses a missing key outside dev
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


@dataclass(frozen=True)
class ProbeResult:
    """One dependency's health, as `/readyz` and `opsagent doctor` report it."""

    name: str  # store | prometheus | k8s_read | cloudwatch
    ok: bool
    detail: str = ""  # what upstream said when it failed; version or endpoint when it did not
    latency_ms: float | None = None
    required: bool = False  # the process can do nothing useful without it (the store)


# A change in one of these states was written to the cluster.
EXECUTED = {ChangeStatus.EXECUTING, ChangeStatus.APPLIED, ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK}


def prior_changes_of(incident: Incident, changes: list[ChangeRequest]) -> list[PriorChange]:
    """The changes executed for the incident's current firing episode.

    The episode began when the latest of its firing alerts started: an incident whose resolution was never
    delivered can fire again days later, its old alerts still marked firing beside the new one (a sandbox
    torn down before the resolution, a lost notification). A change made before that belongs to an
    earlier episode and says nothing about whether this one's remediation helped. An alert that keeps
    firing after a change keeps its start time, so a remediation that did not help still counts.
    """
    firing = [a.starts_at for a in incident.alerts if a.status == "firing"]
    since = max(firing) if firing else None
    return [PriorChange(action=c.spec.action.value, target=c.spec.target, status=c.status.value)
            for c in changes if c.status in EXECUTED and (since is None or c.created_at >= since)]


@dataclass
class App:
    settings: Settings
    store: Store
    runbooks: list[Runbook]
    policy: Policy
    ledger: Ledger
    audit: AuditLog
    tools: list[ToolSpec[Any, Any]]
    clients: dict[str, Any]
    reasoner: Reasoner
    _executor: Executor | None = field(default=None, repr=False)
    _flow_locks: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False)
    _checkpoints_ready: bool = field(default=False, repr=False)
    _health: tuple[float, list[ProbeResult]] | None = field(default=None, repr=False)
    _health_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def health(self, *, max_age_s: float = 10.0, timeout_s: float = 5.0) -> list[ProbeResult]:
        """Probe the store and every configured integration (its `check()`), in parallel, each bounded by
        `timeout_s`; a result younger than `max_age_s` is reused, and concurrent callers share one probe,
        so a busy `/readyz` costs the upstreams one request per integration every `max_age_s`."""
        async with self._health_lock:
            if self._health is not None and time.monotonic() - self._health[0] < max_age_s:
                return self._health[1]
            results = list(await asyncio.gather(self._probe_store(timeout_s), *(
                self._probe(name, client, timeout_s) for name, client in self.clients.items()
                if callable(getattr(client, "check", None)))))
            self._health = (time.monotonic(), results)
            return results

    async def _probe_store(self, timeout_s: float) -> ProbeResult:
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.incidents, None, 1), timeout_s)
        except Exception as e:
            return ProbeResult("store", False, f"{type(e).__name__}: {e}", required=True)
        return ProbeResult("store", True, "", round((time.monotonic() - t0) * 1000, 1), required=True)

    @staticmethod
    async def _probe(name: str, client: Any, timeout_s: float) -> ProbeResult:
        t0 = time.monotonic()
        try:
            status = await asyncio.wait_for(client.check(), timeout_s)
        except Exception as e:  # a probe that raises or hangs is a failed probe, never a failed /readyz
            return ProbeResult(name, False, f"{type(e).__name__}: {e}" if str(e) else f"no answer in {timeout_s} s")
        detail = getattr(status, "detail", "") or ""
        return ProbeResult(name, bool(status.ok), str(detail), getattr(status, "latency_ms", None)
                           or round((time.monotonic() - t0) * 1000, 1))

    def triage_runner(self) -> ToolRunner:
        return ToolRunner(self.tools, self.clients, self.audit, max_risk=Risk.READ,
                          timeout_s=self.settings.prometheus.timeout_s + 5)

    def flow(self, on_event: OnEvent | None = None) -> ChangeFlow:
        """The change flow (approval interrupt → guarded execution → verification) on this app's executor."""
        verify_fn = functools.partial(self._verify, on_event=on_event) \
            if ("prometheus" in self.clients and "k8s_read" in self.clients) else None
        return ChangeFlow(self.change_executor(), self.checkpointer, verify=verify_fn, on_event=on_event,
                          locks=self._flow_locks)

    def change_executor(self) -> FlowExecutor:
        """Who proposes, decides and executes: the executor process over its socket (`executor.socket`), or
        this process's own executor (`executor()`, with the writer's kubeconfig) in dev and one-shot CLIs."""
        if self.settings.executor_mode == "in-process":
            return self.executor()
        path = self.settings.executor.socket
        if path is None:
            raise ValueError("executor.socket is not set: outside env: dev changes execute in the executor "
                             "process (`opsagent executor serve --socket PATH`); set executor.socket to its "
                             "socket, or executor.mode: in-process for a process that may hold write credentials")
        from agent.change.executor.client import ExecutorClient

        return ExecutorClient(path, self.ledger, timeout_s=self.settings.executor.timeout_s)

    async def _verify(self, ch: ChangeRequest, applied_at: dt.datetime,
                      on_event: OnEvent | None = None) -> Verification:
        v = self.settings.verification
        if ch.spec.target.kind == "Rollout":
            async def progress(message: str, canary: bool) -> None:
                # Each step is audited and shown where the change's progress goes (its Slack thread).
                self.audit.append(AuditEvent(at=dt.datetime.now(dt.UTC), kind=AuditKind.VERIFICATION,
                                             actor="executor:watch", action=f"watch {ch.id}", decision="progress",
                                             reason=message, inputs_hash=ch.spec_digest,
                                             incident_id=ch.incident_id))
                if on_event is not None:
                    await on_event(FlowEvent(ch.id, ChangeStage.VERIFYING, message, canary=canary))

            prom = self.clients.get("prometheus")

            async def compare(stable: str, canary: str) -> str:
                assert prom is not None and ch.spec.target.namespace
                return await class_evidence.compare(prom, ch.spec.target.namespace, ch.spec.target.name,
                                                    stable=stable, canary=canary)

            return await watch_rollout(ch, self.clients["k8s_read"], on_progress=progress,
                                       deadline_s=v.canary_deadline_s, compare=compare if prom is not None else None)
        vs = VerifySettings(window_s=v.window_s, baseline_s=v.baseline_s, step_s=v.step_s,
                            rate_window_s=v.rate_window_s, rollout_deadline_s=v.rollout_deadline_s)
        try:
            return await asyncio.wait_for(verify(ch, applied_at, self.clients["prometheus"],
                                                 self.clients["k8s_read"], vs), timeout=v.timeout_s)
        except TimeoutError:
            return Verification(ch.id, Outcome.INCONCLUSIVE, f"verification timed out after {v.timeout_s:.0f}s")

    async def propose_changes(self, report: TriageReport, flow: ChangeFlow | None = None) -> list[FlowState]:
        """Turn a triage report's executable proposals into change requests and open their flows.

        Each becomes a `ChangeRequest` through the executor (dry-run diff, fingerprint, blast radius,
        policy); its flow then waits at the approval interrupt, or runs at once when policy allows it
        without approval. Page-a-human and no-action proposals are not changes.
        """
        flow = flow or self.flow()
        out = []
        for p in report.proposals:
            if p.target is None or p.kind in (ActionKind.PAGE_HUMAN, ActionKind.NONE):
                continue
            spec = ChangeSpec(action=p.kind, cluster=self.settings.kubernetes.cluster, target=p.target,
                              params=p.params)
            out.append(await flow.propose(spec, reason=p.reason, requester=f"agent:{report.reasoner}",
                                          incident_id=report.incident_id, evidence=[e.id for e in report.evidence]))
        return out

    async def deploy(self, req: DeployRequest, *, requester: str, via: str, on_event: OnEvent | None = None,
                     why: str = "", evidence: list[str] | None = None,
                     on_proposed: Callable[[ChangeRequest], Awaitable[None]] | None = None) -> DeployOutcome:
        """Plan a deployment (read the target, its pool and the soak; run the preflight) and propose it.

        The one path every surface takes (CLI, Slack, CI API): a failed preflight is refused and audited,
        a passing one goes through `ChangeFlow.propose()`. Raises TargetNotFound, DeployRefused, ValueError.
        """
        reader = self.clients.get("k8s_read")
        if reader is None:
            raise ValueError("kubernetes.reader_kubeconfig is not set: the target cannot be read")
        catalog = PriceCatalog.load(self.settings.rightsize.price_catalog)
        plan = await plan_deployment(req, reader=reader, catalog=catalog, cluster=self.settings.kubernetes.cluster,
                                     prom=self.clients.get("prometheus"))
        return await request_deployment(plan, flow=self.flow(on_event=on_event), audit=self.audit,
                                        requester=requester, via=via, why=why, evidence=evidence,
                                        on_proposed=on_proposed)

    def executor(self) -> Executor:
        """The guarded executor in this process, with the write client (the executor process, dev, the CLI)."""
        if self._executor is None:
            from agent.change.executor.core import Executor
            from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings

            kc = self.settings.kubernetes.executor_kubeconfig
            if kc is None:
                raise ValueError("kubernetes.executor_kubeconfig is not set: changes cannot be executed")
            write = K8sWriteClient(K8sWriteSettings(kubeconfig=kc))
            catalog = PriceCatalog.load(self.settings.rightsize.price_catalog)

            def cost(spec: ChangeSpec, obj: dict[str, Any] | None) -> float | None:
                return predicted_cost_delta(spec, obj, catalog)

            failing = None
            if "prometheus" in self.clients:
                async def failing(spec: ChangeSpec, obj: dict[str, Any]) -> int | None:
                    pod = spec.target.kind == "Pod"
                    meta = obj["metadata"] if pod else (obj["spec"]["template"].get("metadata") or {})
                    model = (meta.get("labels") or {}).get("model", "")
                    # Its own client, closed in this event loop: the executor runs in whichever loop its
                    # caller has (the CLI and tests start several), and a pool left in a finished loop leaks.
                    prom = PrometheusClient(self.settings.prometheus)
                    try:
                        if pod:  # a pod restart asks about that one pod: is it serving nobody?
                            names = await failing_pods(prom, spec.target.namespace or "", model)
                            return None if names is None else int(spec.target.name in names)
                        return await failing_replicas(prom, spec.target.namespace or "", model, spec.target.name)
                    finally:
                        await prom.aclose()

            self._executor = Executor(self.ledger, self.policy, write, self.audit,
                                      cluster=self.settings.kubernetes.cluster, cost_delta=cost,
                                      failing_replicas=failing,
                                      claim_ttl_s=self.settings.execution.claim_ttl_s,
                                      conflict_retries=self.settings.execution.conflict_retries)
        return self._executor

    async def triage(self, incident: Incident, *, now: dt.datetime | None = None,
                     prior_changes: list[PriorChange] | None = None) -> TriageReport:
        """Run the triage graph for an incident, store and return its report.

        `prior_changes` are the changes already executed for the incident; by default the ledger's.
        """
        if prior_changes is None:
            prior_changes = prior_changes_of(incident, self.ledger.list_changes(incident_id=incident.id))
        ctx = TriageContext(runner=self.triage_runner(), runbooks=self.runbooks, reasoner=self.reasoner,
                            actor=f"agent:{self.reasoner.name}", now=now,
                            extra={"cluster": self.settings.kubernetes.cluster},
                            limits={"max_capacity_drop": capacity_drop_limit(self.policy, "scale")},
                            rate_window_s=fast_rate_window_s(self.settings.prometheus.scrape_interval_s),
                            prior_changes=prior_changes)
        with tracer().start_as_current_span("triage", attributes={
                "incident.id": incident.id, "incident.title": incident.title[:300],
                "incident.severity": incident.severity.value, "triage.reasoner": self.reasoner.name}) as span:
            async with self.checkpointer() as saver:
                graph = build_triage_graph(saver)
                thread = f"triage:{incident.id}:{incident.updated_at.isoformat()}"
                config: Any = {"configurable": {"thread_id": thread}}
                # A replica killed mid-triage left this thread's last checkpoint behind (on a shared
                # store): resume from it rather than start over.
                resume = bool((await graph.aget_state(config)).next)
                out = await graph.ainvoke(None if resume else {"incident": incident}, config=config, context=ctx)
            report: TriageReport = out["report"]
            if span.is_recording():
                top = report.top
                span.set_attributes({"triage.status": report.status, "triage.resumed": resume,
                                     "triage.hypotheses": len(report.hypotheses),
                                     "triage.proposals": len(report.proposals),
                                     "triage.tool_calls": report.tool_calls,
                                     "triage.top": top.title[:300] if top else ""})
                report = report.model_copy(update={"trace_id": trace_id(span)})
        self.store.save_report(report)
        return report

    def incident_report(self, incident_id: str) -> PostIncidentReport | None:
        """The post-incident report of an incident from its stored records; None when there is no such incident."""
        incident = self.store.incident(incident_id)
        if incident is None:
            return None
        changes = self.ledger.list_changes(incident_id=incident_id)
        return postmortem.build(incident, self.store.latest_report(incident_id), changes,
                                {c.id: self.ledger.approvals(c.id) for c in changes},
                                {c.id: self.ledger.execution(c.id) for c in changes},
                                list(self.audit.events(incident_id)), self.settings.tracing)

    @asynccontextmanager
    async def checkpointer(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        """LangGraph's checkpointer on the store's backend (Postgres when `store.url` is one)."""
        url = self.settings.store_url
        if is_postgres(url):
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            async with AsyncPostgresSaver.from_conn_string(url, serde=checkpoint_serde()) as pg:
                if not self._checkpoints_ready:
                    await _setup_once(pg)
                    self._checkpoints_ready = True
                yield pg
            return
        db = self.settings.state_dir / "checkpoints.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(str(db)) as conn:
            yield AsyncSqliteSaver(conn, serde=checkpoint_serde())

    async def aclose_clients(self) -> None:
        """Close connection pools bound to the running event loop (call before that loop ends)."""
        for c in self.clients.values():
            if hasattr(c, "aclose"):
                await c.aclose()

    def close(self) -> None:
        for c in self.clients.values():
            if callable(getattr(c, "close", None)):
                c.close()
        if self._executor is not None:
            self._executor.write.close()
        self.store.close()
        self.ledger.close()
        self.audit.close()


def fast_rate_window_s(scrape_interval_s: float) -> int:
    """The shortest rate() window that reliably holds enough samples: four scrapes, at least 20 s."""
    return max(20, math.ceil(4 * scrape_interval_s))


def build_clients(settings: Settings) -> dict[str, Any]:
    clients: dict[str, Any] = {"prometheus": PrometheusClient(settings.prometheus),
                               "serving_knowledge": ServingKnowledge.default()}
    if settings.cloudwatch is not None:
        clients["cloudwatch"] = CloudWatchClient(settings.cloudwatch)
    if settings.kubernetes.reader_kubeconfig is not None:
        clients["k8s_read"] = K8sReadClient(K8sReadSettings(
            kubeconfig=settings.kubernetes.reader_kubeconfig,
            serving_namespaces=tuple(settings.kubernetes.serving_namespaces)))
    return clients


def build_reasoner(llm: LlmConfig) -> Reasoner:
    """The rules reasoner unless `llm.provider` names a model provider (then the LLM, rules as its fallback)."""
    if llm.provider == "none":
        return RulesReasoner()
    return LlmReasoner(llm)


def build_app(settings: Settings, *, reasoner: Reasoner | None = None) -> App:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sinks = checkpoint_sinks(settings)
    audit = AuditLog(audit_target(settings), audit_key(settings), sinks,
                     checkpoint_every=settings.audit.checkpoint_every)
    policy = load_policy(_policy_file(settings.policies_dir))
    store = open_store(settings.store_url, pool_size=settings.store.pool_size,
                       fold_window_s=settings.server.fold_window_s)
    return App(settings=settings, store=store, runbooks=load_dir(settings.runbooks_dir), policy=policy,
               ledger=Ledger(_shared_or(settings, settings.state_dir / "ledger.db")), audit=audit,
               tools=default_tools(), clients=build_clients(settings),
               reasoner=reasoner or build_reasoner(settings.llm))


def audit_target(settings: Settings) -> Path | str:
    """The audit log's database: `audit.path`, else the shared Postgres store, else state_dir/audit.db."""
    return settings.audit.path or _shared_or(settings, settings.audit_path)


def checkpoint_sinks(settings: Settings) -> list[CheckpointSink]:
    """Where signed audit checkpoints go: always a file, plus CloudWatch Logs and/or S3 when configured.

    AWS credentials and options come from the `cloudwatch` section; `audit.checkpoint_region` and
    `audit.checkpoint_endpoint_url` override its region and endpoint for the sinks (or stand alone, with
    the default credential chain: IRSA, instance profile).
    """
    sinks: list[CheckpointSink] = [FileCheckpointSink(settings.checkpoint_file)]
    a = settings.audit
    if a.checkpoint_log_group is None and a.checkpoint_s3_bucket is None:
        return sinks
    base = settings.cloudwatch
    if base is None and a.checkpoint_region is None:
        raise ValueError("audit.checkpoint_log_group / checkpoint_s3_bucket need an AWS region: set "
                         "audit.checkpoint_region or the `cloudwatch` section (region, endpoint, credentials)")
    cw = (base or CloudWatchSettings()).model_copy(update={
        k: v for k, v in (("region", a.checkpoint_region), ("endpoint_url", a.checkpoint_endpoint_url),
                          ("logs_endpoint_url", a.checkpoint_endpoint_url)) if v is not None})
    session, config = aws_session(cw)
    if a.checkpoint_log_group is not None:
        logs = session.client("logs", endpoint_url=cw.logs_endpoint_url or cw.endpoint_url, config=config)
        stream = a.checkpoint_log_stream or f"checkpoints-{settings.kubernetes.cluster}"
        sinks.append(CloudWatchLogsCheckpointSink(logs, a.checkpoint_log_group, stream))
    if a.checkpoint_s3_bucket is not None:
        s3 = session.client("s3", endpoint_url=cw.endpoint_url, config=config)
        sinks.append(S3CheckpointSink(s3, a.checkpoint_s3_bucket, a.checkpoint_s3_prefix, a.checkpoint_s3_retain_days,
                                      lock_mode=a.checkpoint_s3_lock_mode))
    return sinks


def _shared_or(settings: Settings, local: Path) -> Path | str:
    """On Postgres every table lives in the one shared database; on SQLite each keeps its own file."""
    target = db_target(settings.store_url)
    return target if is_postgres(target) else local


async def _setup_once(saver: Any, *, poll_s: float = 0.05) -> None:
    """Create LangGraph's checkpoint tables; replicas starting together take turns.

    LangGraph's migrations include `CREATE INDEX CONCURRENTLY`, which waits for every transaction holding
    an older snapshot. A replica blocked inside `pg_advisory_lock` holds such a snapshot while it waits for
    the replica running the migration, so a blocking lock deadlocks the two ("waits for ShareLock on
    virtual transaction"). Polling `pg_try_advisory_lock` holds no snapshot between tries.
    """
    key = "SELECT {}(hashtextextended('opsagent:checkpoints', 0)) AS held"
    while not (await (await saver.conn.execute(key.format("pg_try_advisory_lock"))).fetchone())["held"]:  # noqa: ASYNC110
        await asyncio.sleep(poll_s)  # another process's lock: nothing in this one to wait on
    try:
        await saver.setup()
    finally:
        await saver.conn.execute(key.format("pg_advisory_unlock"))


def _policy_file(directory: Path) -> Path:
    path = directory / "default.yaml" if directory.is_dir() else directory
    if not path.exists():
        raise FileNotFoundError(f"no policy at {path}")
    return path


@functools.cache
def checkpoint_serde() -> JsonPlusSerializer:
    """LangGraph's serializer restricted to the types our graphs checkpoint (our models and enums, plus
    LangGraph's own safe set). A checkpoint row naming any other class is not revived: the checkpoint
    store is not trusted to choose what gets imported."""
    import enum
    import inspect

    from pydantic import BaseModel

    import agent.change.models
    import agent.models

    ours = [obj for mod in (agent.models, agent.change.models) for obj in vars(mod).values()
            if inspect.isclass(obj) and obj.__module__ == mod.__name__ and issubclass(obj, BaseModel | enum.Enum)]
    return JsonPlusSerializer(allowed_msgpack_modules=ours)
