"""Canary against stable per GPU class: the PromQL the watch reads and the line it reports."""

from __future__ import annotations

from agent.change.class_evidence import ClassFigures, describe, gpu_class, queries


def test_the_queries_join_each_pod_to_its_nodes_instance_type_and_escape_the_name() -> None:
    ttft, err = queries("llm-prod", "notes.assist")
    for q in (ttft.text, err.text):
        assert 'namespace="llm-prod"' in q and 'pod=~"notes\\\\.assist-.*"' in q  # the dot is literal
        assert "group_left (node)" in q
        assert "group_left (label_node_kubernetes_io_instance_type, label_nvidia_com_mig_config)" in q
        assert "rollouts_pod_template_hash" in q
    assert ttft.text.startswith("histogram_quantile(0.95") and "[1m]" in ttft.text
    assert 'status="5xx"' in err.text


def test_the_line_puts_the_canarys_class_against_the_stables_and_says_when_data_is_missing() -> None:
    figs = [ClassFigures("aaa", "p5.48xlarge", 0.226, 0.0005), ClassFigures("bbb", "g6.2xlarge", 5.0, None)]
    line = describe(figs, stable="aaa", canary="bbb")
    assert line == ("canary on g6.2xlarge: TTFT p95 5 s, 5xx no data; "
                    "stable on p5.48xlarge: TTFT p95 0.226 s, 5xx 0.05%")
    assert describe([], stable="aaa", canary="bbb") == "no per-class figures in Prometheus yet"


def test_a_mig_partitioned_node_is_a_class_of_its_own_beside_whole_gpus_of_the_same_instance_type() -> None:
    whole = {"label_node_kubernetes_io_instance_type": "p4d.24xlarge"}
    sliced = whole | {"label_nvidia_com_mig_config": "all-3g.20gb"}
    assert gpu_class(whole) == "p4d.24xlarge" and gpu_class(sliced) == "p4d.24xlarge (MIG all-3g.20gb)"
    assert gpu_class({}) == "unknown"
