"""PromQL built from parts: names validated, every label value escaped.

Untrusted values — alert labels, chat input, model output — only ever enter PromQL through this
module, as escaped string literals. Nothing else in the codebase should format PromQL with raw
f-strings around such values (KRR's f-string PromQL shows how that goes wrong: a label value with a
quote breaks the query, or widens it).

Also a small lexer over existing expressions, so metric names and their selectors' matchers can be
found and renamed (vLLM's renamed metrics) without touching string literals or comments.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")

_REGEX_META = frozenset("\\.+*?()|[]{}^$")
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}

Aggregation = Literal["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"]
BinaryOp = Literal["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"]
_COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})


class PromQLError(ValueError):
    """An expression part is invalid: a bad metric or label name, duration or quantile."""


def escape_string(value: str) -> str:
    """Escape text for use inside a double-quoted PromQL string literal (without the quotes).

    Backslashes, double quotes and newlines are escaped, and every other control character is written
    as `\\xNN`, so no value can close the literal or inject syntax.
    """
    out: list[str] = []
    for ch in value:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(value: str) -> str:
    """A complete double-quoted PromQL string literal holding `value`."""
    return f'"{escape_string(value)}"'


def regex_literal(value: str) -> str:
    """Escape regex metacharacters so a regex matcher matches `value` literally (RE2 syntax)."""
    return "".join(f"\\{ch}" if ch in _REGEX_META else ch for ch in value)


def check_metric_name(name: str) -> str:
    if not METRIC_NAME.match(name):
        raise PromQLError(f"invalid metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def check_label_name(name: str) -> str:
    if not LABEL_NAME.match(name):
        raise PromQLError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
    return name


def check_duration(window: str) -> str:
    if not DURATION.match(window):
        raise PromQLError(f"invalid duration {window!r}: use Prometheus units, e.g. 30s, 5m, 1h30m")
    return window


class MatchOp(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """One label matcher. The value is any text; it is escaped when rendered."""

    label: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        check_label_name(self.label)

    def render(self) -> str:
        return f"{self.label}{self.op.value}{quote(self.value)}"


def eq(label: str, value: str) -> Matcher:
    return Matcher(label, MatchOp.EQ, value)


def ne(label: str, value: str) -> Matcher:
    return Matcher(label, MatchOp.NE, value)


def matches(label: str, regex: str) -> Matcher:
    """A regex matcher. `regex` is a regex; build it with `regex_literal` for untrusted parts."""
    return Matcher(label, MatchOp.RE, regex)


def not_matches(label: str, regex: str) -> Matcher:
    return Matcher(label, MatchOp.NRE, regex)


# A Deployment's or an Argo Rollout's pod: <workload>-<pod-template-hash>-<suffix> (the hash in Kubernetes'
# safe alphabet, not hex); a StatefulSet's: <workload>-<ordinal>. Exactly one or two segments follow the name,
# so the pods of `chat` and of `chat-lite` never match each other's pattern.
POD_SUFFIX = "-[a-z0-9]{6,10}-[a-z0-9]{5}"
_POD_PATTERN = f"(?:{POD_SUFFIX}|-[0-9]+)"
ANY_POD = ".*"  # every series, with a pod label or without


def workload_pods(name: str) -> str:
    """RE2 pattern (anchored by PromQL) matching the pods of the workload `name` and of no other workload.
    Two workloads serving one model are two things to measure: a query keyed by model mixes them."""
    if not name:
        raise PromQLError("workload_pods needs a workload name")
    return regex_literal(name) + _POD_PATTERN


def by_workload(expr: str) -> str:
    """`expr` with a `workload` label: the pod label without its ReplicaSet hash and suffix. Series of pods
    that no Deployment or Rollout owns (no such suffix) keep no workload label."""
    return f'label_replace({expr}, "workload", "$1", "pod", "(.+){POD_SUFFIX}")'


def any_of(label: str, values: Iterable[str]) -> Matcher:
    """Match any of the literal values (each regex-escaped)."""
    vals = list(values)
    if not vals:
        raise PromQLError(f"any_of({label!r}) needs at least one value")
    return Matcher(label, MatchOp.RE, "|".join(regex_literal(v) for v in vals))


@dataclass(frozen=True)
class Expr:
    """A rendered PromQL expression. Only this module's functions should create one."""

    text: str
    selector: bool = False  # a bare vector selector, which may take a range `[window]`

    def __str__(self) -> str:
        return self.text


def selector(metric: str | None = None, *matchers: Matcher, **equals: str) -> Expr:
    """A vector selector: `metric{label="value", ...}`; keyword arguments are equality matchers."""
    all_matchers = [*matchers, *(eq(k, v) for k, v in equals.items())]
    if metric is None:
        if not any(m.op in (MatchOp.EQ, MatchOp.RE) and m.value for m in all_matchers):
            raise PromQLError("a selector without a metric name needs a matcher that cannot match empty")
        name = ""
    else:
        name = check_metric_name(metric)
    body = ", ".join(m.render() for m in all_matchers)
    text = f"{name}{{{body}}}" if body or not name else name
    return Expr(text, selector=True)


def _range(sel: Expr, window: str) -> str:
    if not sel.selector:
        raise PromQLError(f"a range [{window}] needs a plain selector, not {sel.text!r}")
    return f"{sel.text}[{check_duration(window)}]"


def rate(sel: Expr, window: str) -> Expr:
    return Expr(f"rate({_range(sel, window)})")


def irate(sel: Expr, window: str) -> Expr:
    return Expr(f"irate({_range(sel, window)})")


def increase(sel: Expr, window: str) -> Expr:
    return Expr(f"increase({_range(sel, window)})")


def changes(sel: Expr, window: str) -> Expr:
    """How many times a gauge changed value in the window (autoscaler thrash)."""
    return Expr(f"changes({_range(sel, window)})")


def over_time(func: Literal["avg", "min", "max", "sum", "count", "last", "stddev"], sel: Expr, window: str) -> Expr:
    return Expr(f"{func}_over_time({_range(sel, window)})")


def subquery_over_time(func: Literal["avg", "min", "max"], expr: Expr, window: str, resolution: str) -> Expr:
    """`func_over_time((expr)[window:resolution])`: e.g. the peak of a 5-minute rate within each step."""
    return Expr(f"{func}_over_time(({expr.text})[{check_duration(window)}:{check_duration(resolution)}])")


def either(*exprs: Expr) -> Expr:
    """`(a) or (b) ...`: the first expression's series, plus the others' where the first has none."""
    if not exprs:
        raise PromQLError("either() needs at least one expression")
    return Expr(" or ".join(f"({e.text})" for e in exprs))


def aggregate(op: Aggregation, expr: Expr, *, by: Iterable[str] = (), without: Iterable[str] = ()) -> Expr:
    by_l = [check_label_name(x) for x in by]
    without_l = [check_label_name(x) for x in without]
    if by_l and without_l:
        raise PromQLError("an aggregation takes `by` or `without`, not both")
    grouping = ""
    if by_l:
        grouping = f" by ({', '.join(by_l)})"
    elif without_l:
        grouping = f" without ({', '.join(without_l)})"
    return Expr(f"{op}{grouping} ({expr.text})")


def sum_by(labels: Iterable[str], expr: Expr) -> Expr:
    return aggregate("sum", expr, by=labels)


def max_by(labels: Iterable[str], expr: Expr) -> Expr:
    return aggregate("max", expr, by=labels)


def histogram_quantile(q: float, buckets: Expr) -> Expr:
    """`histogram_quantile(q, buckets)`; `buckets` must keep the `le` label (e.g. `sum_by(["le"], rate(...))`)."""
    if not 0 <= q <= 1:
        raise PromQLError(f"quantile must be within [0, 1], got {q}")
    return Expr(f"histogram_quantile({number(q).text}, {buckets.text})")


def number(x: float) -> Expr:
    if math.isnan(x):
        return Expr("NaN")
    if math.isinf(x):
        return Expr("+Inf" if x > 0 else "-Inf")
    return Expr(repr(float(x)) if not float(x).is_integer() else str(int(x)))


def binary(left: Expr, op: BinaryOp, right: Expr, *, on: Iterable[str] | None = None,
           ignoring: Iterable[str] | None = None, bool_: bool = False,
           group_left: Iterable[str] | None = None) -> Expr:
    """`(left) op (right)`, operands parenthesized so precedence can never surprise.

    `group_left` (many-to-one matching) copies the named labels of the right side onto the result.
    """
    modifier = ""
    if bool_:
        if op not in _COMPARISONS:
            raise PromQLError("`bool` applies only to comparison operators")
        modifier += " bool"
    if on is not None and ignoring is not None:
        raise PromQLError("vector matching takes `on` or `ignoring`, not both")
    if on is not None:
        modifier += f" on ({', '.join(check_label_name(x) for x in on)})"
    if ignoring is not None:
        modifier += f" ignoring ({', '.join(check_label_name(x) for x in ignoring)})"
    if group_left is not None:
        if on is None and ignoring is None:
            raise PromQLError("group_left needs `on` or `ignoring`")
        modifier += f" group_left ({', '.join(check_label_name(x) for x in group_left)})"
    return Expr(f"({left.text}) {op}{modifier} ({right.text})")


def ratio(numerator: Expr, denominator: Expr) -> Expr:
    return binary(numerator, "/", denominator)


# --- reading existing expressions -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<comment>\#[^\n]*)
      |(?P<number>0[xX][0-9a-fA-F]+|[0-9][0-9a-zA-Z_.]*|\.[0-9][0-9a-zA-Z_.]*)
      |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: Literal["string", "comment", "number", "ident", "other"]
    text: str
    start: int


def tokens(expr: str) -> Iterator[Token]:
    """Split an expression into strings, comments, numbers/durations, identifiers and single characters."""
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        assert kind is not None
        yield Token(kind, m.group(), m.start())  # type: ignore[arg-type]


@dataclass(frozen=True)
class MetricRef:
    """A metric name as it occurs in an expression, with the matcher text of its selector."""

    name: str
    start: int  # offset of the name in the expression
    matchers: str  # text between the braces following the name; "" when there are none


def metric_refs(expr: str, names: Iterable[str] | None = None) -> list[MetricRef]:
    """Occurrences of metric names (restricted to `names` if given) with their selectors' matchers."""
    wanted = set(names) if names is not None else None
    toks = list(tokens(expr))
    refs: list[MetricRef] = []
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or (wanted is not None and tok.text not in wanted):
            continue
        j = i + 1
        while j < len(toks) and toks[j].kind == "other" and toks[j].text.isspace():
            j += 1
        matchers = ""
        if j < len(toks) and toks[j].text == "{":
            k = j + 1
            while k < len(toks) and not (toks[k].kind == "other" and toks[k].text == "}"):
                k += 1
            end = toks[k].start if k < len(toks) else len(expr)
            matchers = expr[toks[j].start + 1 : end]
        refs.append(MetricRef(tok.text, tok.start, matchers))
    return refs


def replace_refs(expr: str, renames: Mapping[int, str]) -> str:
    """Rename the metric names starting at the given offsets (from `metric_refs`)."""
    out: list[str] = []
    for tok in tokens(expr):
        new = renames.get(tok.start) if tok.kind == "ident" else None
        out.append(check_metric_name(new) if new is not None else tok.text)
    return "".join(out)
