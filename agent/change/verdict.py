"""Did a change make things worse? Compare SLO signals after a change with the baseline before it.

Per signal: missing or sparse data is *inconclusive*, never a pass (Argo Rollouts users learned this
the hard way); otherwise a regression needs both a practical threshold (the after-median worse than
the baseline median by more than a tolerance, and above an absolute floor) and a one-sided
Mann-Whitney rank test at the chosen confidence, so noise alone cannot fail a change and a real
shift cannot hide behind a lucky mean. Pure functions: the verifier feeds them samples.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    REGRESSION = "regression"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class SignalVerdict:
    signal: str
    outcome: Outcome
    baseline_median: float | None
    after_median: float | None
    p_value: float | None
    reason: str


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def mann_whitney_greater(after: Sequence[float], before: Sequence[float]) -> float:
    """One-sided p-value that `after` tends to be larger than `before` (normal approximation, ties corrected)."""
    n1, n2 = len(after), len(before)
    combined = sorted([(v, 0) for v in after] + [(v, 1) for v in before])
    ranks = [0.0] * len(combined)
    tie_term = 0.0
    i = 0
    while i < len(combined):
        j = i
        while j + 1 < len(combined) and combined[j + 1][0] == combined[i][0]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = avg
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, g) in zip(ranks, combined, strict=True) if g == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    z = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(var)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def judge(signal: str, before: Sequence[float], after: Sequence[float], *, tolerance: float = 0.25,
          floor: float = 0.0, confidence: float = 0.98, min_points: int = 8,
          just_before: Sequence[float] = ()) -> SignalVerdict:
    """Judge one signal where larger is worse (latency, error share, queue depth).

    `just_before` is the tail of the baseline, the level the change was applied at. A change made
    during an incident (a scale-out while a surge is building) starts from a level already worse than
    the baseline's median; it is a regression only if it made things worse than that level too —
    otherwise the baseline's healthy past would blame the change for the incident it answers.
    """
    before = [x for x in before if math.isfinite(x)]
    after = [x for x in after if math.isfinite(x)]
    if len(before) < min_points or len(after) < min_points:
        return SignalVerdict(signal, Outcome.INCONCLUSIVE, _median(before) if before else None,
                             _median(after) if after else None, None,
                             f"too little data ({len(before)} baseline, {len(after)} after; need {min_points} each)")
    b, a = _median(before), _median(after)
    p = mann_whitney_greater(after, before)
    worse = a > b * (1 + tolerance) and a > floor
    tail = [x for x in just_before if math.isfinite(x)]
    if worse and tail and a <= _median(tail) * (1 + tolerance):
        return SignalVerdict(signal, Outcome.PASS, b, a, p,
                             f"{signal} median {a:.4g} vs baseline {b:.4g}, but it was already {_median(tail):.4g} "
                             f"when the change was applied: not made worse by it")
    if worse and p < 1 - confidence:
        return SignalVerdict(signal, Outcome.REGRESSION, b, a, p,
                             f"{signal} median {a:.4g} vs baseline {b:.4g} (+{(a / b - 1) if b else math.inf:.0%}), "
                             f"p={p:.2g}")
    return SignalVerdict(signal, Outcome.PASS, b, a, p, f"{signal} median {a:.4g} vs baseline {b:.4g}, p={p:.2g}")


def overall(verdicts: Sequence[SignalVerdict]) -> Outcome:
    if any(v.outcome == Outcome.REGRESSION for v in verdicts):
        return Outcome.REGRESSION
    if not verdicts or any(v.outcome == Outcome.INCONCLUSIVE for v in verdicts):
        return Outcome.INCONCLUSIVE
    return Outcome.PASS
