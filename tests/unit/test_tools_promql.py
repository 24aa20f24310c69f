"""The PromQL builder: names validated, values escaped, renames that leave string literals alone."""

from __future__ import annotations

import pytest

from tools.prometheus import promql
from tools.prometheus.compat import choose_name, probe_selector, renamed_refs


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("llm-prod", "llm-prod"),
        ('a"b', 'a\\"b'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ("tab\there", "tab\\there"),
        ("bell\x07", "bell\\x07"),
        ('"} or vector(1) or {"', '\\"} or vector(1) or {\\"'),
    ],
)
def test_escape_string_cannot_close_the_literal(value: str, escaped: str) -> None:
    assert promql.escape_string(value) == escaped
    assert promql.quote(value) == f'"{escaped}"'


def test_selector_renders_every_operator_and_escapes_values() -> None:
    sel = promql.selector(
        "vllm:num_requests_waiting",
        promql.ne("pod", ""),
        promql.matches("model_name", "llama.*"),
        promql.not_matches("namespace", "kube-.*"),
        namespace='llm"prod',
    )
    assert sel.text == ('vllm:num_requests_waiting{pod!="", model_name=~"llama.*", namespace!~"kube-.*", '
                        'namespace="llm\\"prod"}')


def test_helpers_compose_a_latency_quantile() -> None:
    buckets = promql.selector("vllm:time_to_first_token_seconds_bucket", model_name="m")
    expr = promql.histogram_quantile(0.95, promql.sum_by(["le"], promql.rate(buckets, "5m")))
    assert expr.text == ('histogram_quantile(0.95, sum by (le) '
                         '(rate(vllm:time_to_first_token_seconds_bucket{model_name="m"}[5m])))')
    ratio = promql.ratio(promql.aggregate("sum", promql.rate(promql.selector("a_total"), "2m")),
                         promql.aggregate("sum", promql.rate(promql.selector("b_total"), "2m")))
    assert ratio.text == "(sum (rate(a_total[2m]))) / (sum (rate(b_total[2m])))"


def test_any_of_matches_literal_values_only() -> None:
    m = promql.any_of("pod", ["a.b", "c|d"])
    assert m.render() == 'pod=~"a\\\\.b|c\\\\|d"'


@pytest.mark.parametrize("bad", ["9lives", "has space", "dash-ed", 'quote"', ""])
def test_invalid_metric_names_are_refused(bad: str) -> None:
    with pytest.raises(promql.PromQLError):
        promql.selector(bad)


@pytest.mark.parametrize("bad", ["with:colon", "has space", "a-b", "1st"])
def test_invalid_label_names_are_refused(bad: str) -> None:
    with pytest.raises(promql.PromQLError):
        promql.eq(bad, "x")
    with pytest.raises(promql.PromQLError):
        promql.sum_by([bad], promql.selector("up"))


def test_ranges_need_a_selector_and_a_valid_duration() -> None:
    with pytest.raises(promql.PromQLError):
        promql.rate(promql.sum_by(["x"], promql.selector("up")), "5m")
    with pytest.raises(promql.PromQLError):
        promql.rate(promql.selector("up"), "5 minutes")
    with pytest.raises(promql.PromQLError):
        promql.histogram_quantile(95, promql.selector("x_bucket"))
    with pytest.raises(promql.PromQLError):
        promql.selector(None, promql.ne("a", "b"))  # could match every series


def test_renaming_leaves_strings_comments_and_longer_names_alone() -> None:
    expr = ('sum(vllm:gpu_cache_usage_perc{note="vllm:gpu_cache_usage_perc"}) '
            '+ vllm:gpu_cache_usage_perc_other # vllm:gpu_cache_usage_perc\n'
            '+ max_over_time(vllm:gpu_cache_usage_perc[5m:1m])')
    refs = promql.metric_refs(expr, ["vllm:gpu_cache_usage_perc"])
    assert [r.matchers for r in refs] == ['note="vllm:gpu_cache_usage_perc"', ""]
    out = promql.replace_refs(expr, {r.start: "vllm:kv_cache_usage_perc" for r in refs})
    assert out == ('sum(vllm:kv_cache_usage_perc{note="vllm:gpu_cache_usage_perc"}) '
                   '+ vllm:gpu_cache_usage_perc_other # vllm:gpu_cache_usage_perc\n'
                   '+ max_over_time(vllm:kv_cache_usage_perc[5m:1m])')


def test_renamed_vllm_metrics_are_found_with_their_matchers() -> None:
    expr = ('histogram_quantile(0.9, sum by (le) (rate(vllm:time_per_output_token_seconds_bucket'
            '{model_name="m", note="}"}[5m]))) / on() max(vllm:kv_cache_usage_perc)')
    refs = renamed_refs(expr)
    assert [(r.name, r.matchers) for r in refs] == [
        ("vllm:time_per_output_token_seconds_bucket", 'model_name="m", note="}"'),
        ("vllm:kv_cache_usage_perc", ""),
    ]
    assert probe_selector(["a:b", "c:d"], 'model_name="m",') == '{__name__=~"a:b|c:d", model_name="m"}'
    renamed = promql.replace_refs(expr, {refs[0].start: "vllm:inter_token_latency_seconds_bucket"})
    assert "rate(vllm:inter_token_latency_seconds_bucket{model_name=" in renamed
    assert renamed.endswith("max(vllm:kv_cache_usage_perc)")


def test_the_written_name_wins_when_it_has_data() -> None:
    old, new = "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"
    assert choose_name(new, present={old, new}) == new
    assert choose_name(new, present={old}) == old
    assert choose_name(old, present={new}) == new
    assert choose_name(new, present=set()) == new  # nothing has data: run the query as written
