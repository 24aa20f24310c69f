"""A namespace-only alert is placed from Prometheus; its namespace label is untrusted text spliced into PromQL."""

from __future__ import annotations

import asyncio

import pytest

from agent.audit.events import MemoryAudit
from agent.guard.runner import ToolRunner
from agent.triage.nodes.resolve import _deviating_workload
from tools.prometheus.client import PrometheusClient
from tools.prometheus.settings import PrometheusSettings
from tools.registry import default_tools


def _queries(namespace: str) -> int:
    """How many Prometheus queries the placement sent for `namespace` (to a Prometheus that is not there)."""
    audit = MemoryAudit()
    prom = PrometheusClient(PrometheusSettings(url="http://127.0.0.1:9", timeout_s=1))
    runner = ToolRunner(default_tools(), {"prometheus": prom}, audit)

    async def run() -> str | None:
        try:
            return await _deviating_workload(namespace, runner, "agent:test", "inc-test")
        finally:
            await prom.aclose()

    assert asyncio.run(run()) is None  # unreachable: nothing is placed either way
    return sum(1 for e in audit.events if e.action == "prometheus_query_instant")


def test_a_real_namespace_is_asked_about_per_workload() -> None:
    assert _queries("llm-prod") == 2  # TTFT and 5xx share, each against yesterday: the control


@pytest.mark.parametrize("hostile", ['llm-prod"} or vector(99) #', 'a"}[5m]) / on() group_left() up{job=~".+',
                                     "LLM-PROD", "x" * 64, "", "llm-prod\n"])
def test_a_namespace_label_that_is_not_a_kubernetes_name_never_reaches_promql(hostile: str) -> None:
    assert _queries(hostile) == 0
