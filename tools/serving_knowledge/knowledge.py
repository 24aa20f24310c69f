"""Look-ups over the catalog: by any name a metric was ever exposed as, by failure mode, by XID code.

`ServingKnowledge` is what the serving tools take as their client: a caller builds it (usually
`ServingKnowledge.default()`), tests may build one over their own catalog.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from tools.serving_knowledge import catalog
from tools.serving_knowledge.models import FailureMode, MetricInfo, MetricType, XidInfo

# Series a histogram or counter family is exposed as, beside its base name.
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names(metric: MetricInfo, name: str) -> tuple[str, ...]:
    """Every series name `name` (one of `metric.names`) appears as on /metrics."""
    if metric.type == MetricType.HISTOGRAM:
        return (name, *(name + s for s in _HISTOGRAM_SUFFIXES))
    return (name,)


class ServingKnowledge:
    """The catalog, indexed."""

    def __init__(self, metrics: Iterable[MetricInfo], xids: Iterable[XidInfo]) -> None:
        self.metrics = tuple(metrics)
        self.xids = {x.code: x for x in xids}
        self._by_name: dict[str, MetricInfo] = {}
        for m in self.metrics:
            for name in m.names:
                for series in series_names(m, name):
                    if series in self._by_name:
                        raise ValueError(f"metric name {series} appears twice in the serving catalog")
                    self._by_name[series] = m

    @classmethod
    def default(cls) -> ServingKnowledge:
        return cls(catalog.METRICS, catalog.XIDS)

    def find(self, name: str) -> MetricInfo | None:
        """The metric a name (current, former, or a histogram's _bucket/_sum/_count series) belongs to."""
        return self._by_name.get(name.strip())

    def suggest(self, name: str, n: int = 5) -> list[str]:
        """Known names closest to an unknown one."""
        return difflib.get_close_matches(name.strip(), list(self._by_name), n=n, cutoff=0.5)

    def for_failure_mode(self, mode: FailureMode) -> list[MetricInfo]:
        return [m for m in self.metrics if mode in m.failure_modes]

    def xid(self, code: int) -> XidInfo | None:
        return self.xids.get(code)

    def renames(self) -> dict[str, tuple[str, ...]]:
        """For each series name of a renamed metric, the other names of the same series, current name first.

        E.g. `vllm:gpu_cache_usage_perc` → (`vllm:kv_cache_usage_perc`,) and for histograms each of
        `_bucket`, `_sum`, `_count` maps to its counterpart.
        """
        out: dict[str, tuple[str, ...]] = {}
        for m in self.metrics:
            if not m.renamed_from:
                continue
            per_name = [series_names(m, n) for n in m.names]
            for i, group in enumerate(per_name):
                for j, series in enumerate(group):
                    out[series] = tuple(other[j] for k, other in enumerate(per_name) if k != i)
        return out
