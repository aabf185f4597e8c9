"""Statistics over raw timings: latency percentiles and the paired speedup.

Medians and percentiles rather than means: a loaded machine adds a long right tail
(scheduler stalls, page faults) that the mean absorbs and the median ignores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcompress.bench.report import LatencyStats, PairedStats


def latency_stats(seconds: Sequence[float], batch: int) -> LatencyStats:
    """Summarise per-run wall times (seconds) of ``batch`` samples each."""
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    mean = float(t.mean())
    return LatencyStats(
        iters=int(t.size),
        mean_ms=mean,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        throughput=batch * 1e3 / mean if mean > 0 else float("inf"),
    )


def paired_speedup(a_seconds: Sequence[float], b_seconds: Sequence[float], spread: tuple[float, float] = (10, 90)) -> PairedStats:
    """Speedup of B over A from interleaved runs.

    The headline is the ratio of medians (median A / median B). The spread is the
    ``spread`` percentiles of the per-pair ratios a_i / b_i: pairs ran back to back, so
    machine drift cancels within a pair and the spread shows the remaining noise.
    """
    a = np.asarray(a_seconds, dtype=np.float64)
    b = np.asarray(b_seconds, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired timings need equal, non-empty lengths (got {a.size} and {b.size})")
    if np.any(b <= 0) or np.any(a <= 0):
        raise ValueError("timings must be positive")
    ratios = a / b
    lo, hi = np.percentile(ratios, list(spread))
    return PairedStats(
        speedup=float(np.median(a) / np.median(b)),
        pair_median=float(np.median(ratios)),
        ratio_lo=float(lo),
        ratio_hi=float(hi),
        spread_percentiles=[float(spread[0]), float(spread[1])],
        pairs=int(a.size),
    )
