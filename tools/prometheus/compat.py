"""vLLM renamed metrics; a query written with either name must work against old and new servers.

`vllm:gpu_cache_usage_perc` became `vllm:kv_cache_usage_perc`, `vllm:gpu_prefix_cache_*` became
`vllm:prefix_cache_*`, and `vllm:time_per_output_token_seconds` gives way to
`vllm:inter_token_latency_seconds` (the serving catalog lists them). Before running a query that names
one of them, we ask Prometheus which of the names have series matching *that selector's* label
matchers in the query's window — a fleet runs several vLLM versions at once, so the new name existing
somewhere proves nothing about this model — and if the name written has none but another name does,
the query runs with that name instead, and the result says so.

Why not OR the names together (`{__name__=~"old|new"}`)? Releases in the middle of a rename emit both,
so a `sum` would double count and a `rate` over both would fail with duplicate label sets. Falling
back picks exactly one name per selector.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from tools.prometheus import promql
from tools.prometheus.client import PrometheusClient
from tools.prometheus.errors import PrometheusError
from tools.serving_knowledge.knowledge import ServingKnowledge

log = logging.getLogger(__name__)

_RENAMES: Mapping[str, tuple[str, ...]] = ServingKnowledge.default().renames()


@dataclass(frozen=True)
class Substitution:
    wrote: str
    used: str
    matchers: str


@dataclass(frozen=True)
class Resolution:
    """The query to run, and what was changed on the way."""

    expr: str
    substitutions: list[Substitution] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def renamed_refs(expr: str, renames: Mapping[str, tuple[str, ...]] = _RENAMES) -> list[promql.MetricRef]:
    """Occurrences in `expr` of metric names that other vLLM versions expose under another name."""
    return promql.metric_refs(expr, renames.keys())


def choose_name(wrote: str, present: set[str], renames: Mapping[str, tuple[str, ...]] = _RENAMES) -> str:
    """The name to query: as written if it has data, else the first alternative that has, else as written."""
    if wrote in present:
        return wrote
    return next((alt for alt in renames.get(wrote, ()) if alt in present), wrote)


def probe_selector(names: list[str], matchers: str) -> str:
    """A selector for any of `names` with the same label matchers as written in the query."""
    name_matcher = promql.any_of("__name__", names).render()
    inner = matchers.strip().rstrip(",").strip()
    return "{" + name_matcher + (f", {inner}" if inner else "") + "}"


async def resolve(client: PrometheusClient, expr: str, start: dt.datetime, end: dt.datetime,
                  renames: Mapping[str, tuple[str, ...]] = _RENAMES) -> Resolution:
    """Rewrite `expr` to the metric names that have data in [start, end]; unchanged if nothing to do."""
    refs = renamed_refs(expr, renames)
    if not refs:
        return Resolution(expr)
    keys = sorted({(r.name, r.matchers) for r in refs})
    probes = [probe_selector([name, *renames[name]], matchers) for name, matchers in keys]
    try:
        answers = await asyncio.gather(*(client.metric_names(p, start, end) for p in probes))
    except PrometheusError as e:
        log.info("could not probe metric names for %r: %s", expr, e)
        return Resolution(expr, notes=[f"could not check for renamed vLLM metrics ({e}); ran the query as written"])
    chosen = {key: choose_name(key[0], set(found), renames) for key, found in zip(keys, answers, strict=True)}
    offsets = {r.start: chosen[(r.name, r.matchers)] for r in refs if chosen[(r.name, r.matchers)] != r.name}
    if not offsets:
        return Resolution(expr)
    subs = [Substitution(wrote=name, used=used, matchers=matchers)
            for (name, matchers), used in chosen.items() if used != name]
    notes = [f"{s.wrote}{{{s.matchers}}} has no data in this window; used {s.used}, the same vLLM metric under "
             f"the name other vLLM releases expose" for s in subs]
    return Resolution(promql.replace_refs(expr, offsets), subs, notes)
