"""Time the right-sizing engine's saturation-trend fit against the plain pure-Python least squares it replaced.

Not a test (nothing is asserted): prints milliseconds per fit of a 14-day history at a 5-minute step
(4,032 steps); the engine makes two fits per workload (KV-cache usage and GPU engine activity).

    uv run python tests/benchmarks/bench_trend_fit.py [--steps 4032] [--repeat 200]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.rightsize.engine import _fit


def plain_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float] | None:
    """Least squares over finite pairs, untrimmed, in pure Python (the engine's fit before 2026-12-06)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if len(pts) < 20:
        return None
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    sxx, syy = sum((p[0] - mx) ** 2 for p in pts), sum((p[1] - my) ** 2 for p in pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return my - b * mx, b, b * b * sxx / syy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4032)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    rnd = random.Random(1)
    xs = [rnd.random() * 4 for _ in range(args.steps)]
    ys = [0.05 * x + rnd.random() * 0.01 for x in xs]
    for name, fit in (("plain (pure Python, untrimmed)", plain_fit), ("engine (NumPy, 5 % trimmed)", _fit)):
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            fit(xs, ys)
        print(f"{name}: {(time.perf_counter() - t0) / args.repeat * 1000:.2f} ms per fit of {args.steps:,} steps")


if __name__ == "__main__":
    main()
