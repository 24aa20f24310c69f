"""The composition root: build every long-lived part from settings, once, for an entry point.

Entry points (CLI, `serve`, the scheduler, evals) call `build_app(settings)` and use what it holds.
The triage runner is built without write credentials and with a READ ceiling; only `executor()`
builds the write client, from the executor identity's kubeconfig.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent.auditlog import AuditLog, CheckpointSink, FileCheckpointSink
from agent.config import LlmConfig, Settings
from agent.executor import Executor
from agent.graph import build_triage_graph
from agent.ledger import Ledger
from agent.models import Incident, TriageReport
from agent.policy.evaluate import load_policy
from agent.policy.model import Policy
from agent.reasoners.llm import LlmReasoner
from agent.reasoners.rules import RulesReasoner
from agent.runbooks import Runbook, load_dir
from agent.runner import ToolRunner
from agent.state import Reasoner, TriageContext
from agent.store import Store, open_store
from tools.base import Risk, ToolSpec
from tools.cloudwatch.client import CloudWatchClient
from tools.k8s_read.client import K8sReadClient
from tools.k8s_read.settings import K8sReadSettings
from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings
from tools.prometheus.client import PrometheusClient
from tools.registry import default_tools
from tools.serving_knowledge.knowledge import ServingKnowledge

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

    def triage_runner(self) -> ToolRunner:
        return ToolRunner(self.tools, self.clients, self.audit, max_risk=Risk.READ,
                          timeout_s=self.settings.prometheus.timeout_s + 5)

    def executor(self) -> Executor:
        if self._executor is None:
            kc = self.settings.kubernetes.executor_kubeconfig
            if kc is None:
                raise ValueError("kubernetes.executor_kubeconfig is not set: changes cannot be executed")
            write = K8sWriteClient(K8sWriteSettings(kubeconfig=kc))
            self._executor = Executor(self.ledger, self.policy, write, self.audit,
                                      cluster=self.settings.kubernetes.cluster)
        return self._executor

    async def triage(self, incident: Incident, *, now: dt.datetime | None = None) -> TriageReport:
        """Run the triage graph for an incident, store and return its report."""
        ctx = TriageContext(runner=self.triage_runner(), runbooks=self.runbooks, reasoner=self.reasoner,
                            actor=f"agent:{self.reasoner.name}", now=now,
                            extra={"cluster": self.settings.kubernetes.cluster})
        db = self.settings.state_dir / "checkpoints.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
            graph = build_triage_graph(saver)
            thread = f"triage:{incident.id}:{incident.updated_at.isoformat()}"
            out = await graph.ainvoke({"incident": incident}, config={"configurable": {"thread_id": thread}},
                                      context=ctx)
        report: TriageReport = out["report"]
        self.store.save_report(report)
        return report

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
    sinks: list[CheckpointSink] = [FileCheckpointSink(settings.checkpoint_file)]
    audit = AuditLog(settings.audit_path, audit_key(settings), sinks, checkpoint_every=settings.audit.checkpoint_every)
    policy = load_policy(_policy_file(settings.policies_dir))
    return App(settings=settings, store=open_store(settings.store_url), runbooks=load_dir(settings.runbooks_dir),
               policy=policy, ledger=Ledger(settings.state_dir / "ledger.db"), audit=audit,
               tools=default_tools(), clients=build_clients(settings),
               reasoner=reasoner or build_reasoner(settings.llm))


def _policy_file(directory: Path) -> Path:
    path = directory / "default.yaml" if directory.is_dir() else directory
    if not path.exists():
        raise FileNotFoundError(f"no policy at {path}")
    return path
