"""Evidence about one workload, when two serve the same model: the pod patterns and who gets them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.triage.nodes.gather import fill
from agent.triage.nodes.resolve import pods_pattern
from agent.triage.runbooks import load_dir
from tools.prometheus.promql import ANY_POD, workload_pods

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("workload", "pod", "matches"), [
    ("chat-lite", "chat-lite-7d9f8b6c5d-abcde", True),
    ("chat-lite", "chat-lite-0", True),  # a StatefulSet's
    ("chat", "chat-lite-7d9f8b6c5d-abcde", False),  # a workload whose name extends another's
    ("chat", "chat-lite-0", False),
    ("chat-lite", "chat-7d9f8b6c5d-abcde", False),
    ("notes-assist", "notes-assist-5f6b7c8d9-kl2mn", True),  # an Argo Rollout's pods are named alike
    ("a.b", "axb-7d9f8b6c5d-abcde", False),  # a dot is a dot
    ("a.b", "a.b-7d9f8b6c5d-abcde", True),
])
def test_a_workload_pattern_matches_its_own_pods_only(workload: str, pod: str, matches: bool) -> None:
    assert bool(re.fullmatch(workload_pods(workload), pod)) is matches  # PromQL anchors regex matchers


@pytest.mark.parametrize("hostile", ['chat"} or vector(1) #', "Chat", "chat.*", "", "x" * 300, "chat\n"])
def test_a_label_that_is_not_a_kubernetes_name_widens_to_every_pod_never_into_promql(hostile: str) -> None:
    assert pods_pattern({"workload": hostile}) == ANY_POD
    assert pods_pattern({"deployment": "chat-lite", "workload": hostile}) == workload_pods("chat-lite")


def test_every_runbook_query_about_one_model_is_about_one_workload_too() -> None:
    queries = [(b.id, q.id, str(q.params)) for b in load_dir(ROOT / "runbooks") for q in b.evidence]
    keyed = [(b, q, text) for b, q, text in queries if 'model_name="{model_name}"' in text]
    assert keyed, "no runbook query is keyed by model: this test checks nothing"
    unscoped = [(b, q) for b, q, text in keyed if text.count('model_name="{model_name}"') > text.count('pod=~"{pods}"')]
    assert not unscoped, f"queries keyed by model but not by the workload's pods: {unscoped}"


def test_a_dotted_workload_pattern_survives_promql_string_escaping() -> None:
    q = fill({"query": 'up{pod=~"{pods}"}'}, {"pods": workload_pods("a.b")})["query"]
    assert q == 'up{pod=~"a\\\\.b(?:-[a-z0-9]{6,10}-[a-z0-9]{5}|-[0-9]+)"}'
