"""Text formats: Prometheus exposition 0.0.4 for live scrapes, OpenMetrics for `promtool` backfill.

Both formats print a series as the same `name{labels}` string built here from a `SeriesSpec`, so a
backfilled series and its live continuation are byte-identical. OpenMetrics differs only in the
family metadata: a counter's family is named without `_total`; counters whose exporter gives them
no `_total` (Triton's) are declared `unknown`, which OpenMetrics allows for any sample name.
Types are not stored in Prometheus' TSDB, so this changes nothing a query sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from deploy.sandbox.simulator.series import Family, Kind, Labels, SeriesSpec

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def series_text(name: str, labels: Labels) -> str:
    """`name{k="v",...}` with label values escaped; empty label values are left out, as
    Prometheus drops them on ingestion."""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels if v != "")
    return f"{name}{{{inner}}}" if inner else name


def prefixes(specs: Sequence[SeriesSpec]) -> list[str]:
    return [series_text(s.name, s.labels) for s in specs]


def format_value(v: float) -> str:
    if v != v:  # NaN
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def render_text(families: Iterable[tuple[Family, Sequence[tuple[str, float]]]]) -> str:
    """Prometheus text format 0.0.4: `# HELP`, `# TYPE`, then `series value` lines per family."""
    out: list[str] = []
    for family, samples in families:
        if not samples:
            continue
        out.append(
            f"# HELP {family.name} {_escape_help(family.help)}\n"
            f"# TYPE {family.name} {family.kind}\n"
        )
        out.extend(f"{prefix} {format_value(v)}\n" for prefix, v in samples)
    return "".join(out)


def openmetrics_header(family: Family) -> str:
    """`# TYPE` and `# HELP` of `family` as OpenMetrics names them."""
    name, kind = family.name, str(family.kind)
    if family.kind is Kind.COUNTER:
        if name.endswith("_total"):
            name = name[: -len("_total")]
        else:
            kind = "unknown"
    return f"# TYPE {name} {kind}\n# HELP {name} {_escape_help(family.help)}\n"


def write_openmetrics_series(
    out: TextIO, prefix: str, values: Sequence[float], stamps: Sequence[str]
) -> int:
    """Write one series' samples; `stamps` are ascending timestamps already formatted as seconds."""
    if len(values) != len(stamps):
        raise ValueError(f"{prefix}: {len(values)} values for {len(stamps)} timestamps")
    if not values:
        return 0
    if min(values) == max(values):  # a constant series: format the value once
        lead = f"{prefix} {values[0]!r} "
        out.write(lead + ("\n" + lead).join(stamps) + "\n")
    else:
        lead = prefix + " "
        out.write("".join([f"{lead}{v!r} {t}\n" for v, t in zip(values, stamps, strict=True)]))
    return len(values)


OPENMETRICS_EOF = "# EOF\n"
