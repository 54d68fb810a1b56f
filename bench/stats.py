"""Latency summaries that only state the percentiles their sample count can carry.

A p99 of 200 samples is the second-slowest of them: noise, not a tail. So a summary has p99 only
from :data:`P99_MIN_SAMPLES` samples on, p95 from :data:`P95_MIN_SAMPLES` on, and always the
count, the median and the maximum.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

P99_MIN_SAMPLES = 1000
P95_MIN_SAMPLES = 20


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of them at or below it.

    >>> percentile([4, 1, 3, 2], 0.5), percentile(range(1, 101), 0.99)
    (2, 99)
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """``n``, ``mean_ms``, ``p50_ms``, ``max_ms``, and ``p95_ms`` / ``p99_ms`` where there are enough samples.

    >>> sorted(summary_ms([0.001] * 20))
    ['max_ms', 'mean_ms', 'n', 'p50_ms', 'p95_ms']
    """
    result = {
        "n": len(seconds),
        "mean_ms": statistics.fmean(seconds) * 1e3,
        "p50_ms": statistics.median(seconds) * 1e3,
    }
    if len(seconds) >= P95_MIN_SAMPLES:
        result["p95_ms"] = percentile(seconds, 0.95) * 1e3
    if len(seconds) >= P99_MIN_SAMPLES:
        result["p99_ms"] = percentile(seconds, 0.99) * 1e3
    result["max_ms"] = max(seconds) * 1e3
    return result


def tail(summary: dict[str, float]) -> tuple[str, float]:
    """The highest percentile ``summary`` carries: ("p99", ms), else ("p95", ms), else ("max", ms)."""
    for name in ("p99", "p95"):
        if f"{name}_ms" in summary:
            return name, summary[f"{name}_ms"]
    return "max", summary["max_ms"]
