from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.bench.stats import latency_stats, paired_speedup


def test_latency_percentiles_on_known_timings():
    s = latency_stats([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert s.iters == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5)
    assert (s.min_ms, s.max_ms) == pytest.approx((1.0, 100.0))
    assert s.throughput == pytest.approx(4 * 1000 / 50.5)


def test_latency_single_sample_and_empty():
    s = latency_stats([0.002], batch=1)
    assert s.p50_ms == s.p99_ms == pytest.approx(2.0) and s.std_ms == 0.0
    with pytest.raises(ValueError):
        latency_stats([], batch=1)


def test_paired_ratio_cancels_drift():
    drift = np.linspace(1.0, 3.0, 40)  # the machine slows down threefold over the run
    s = paired_speedup(2.0 * drift * 1e-3, drift * 1e-3)
    assert s.speedup == pytest.approx(2.0)
    assert s.ratio_lo == pytest.approx(2.0) and s.ratio_hi == pytest.approx(2.0)
    assert s.pairs == 40 and s.spread_percentiles == [10.0, 90.0]


def test_paired_ratio_of_medians_and_spread():
    a = [10.0] * 10
    b = [4.0, 6.0] * 5
    s = paired_speedup(a, b)
    assert s.speedup == pytest.approx(10.0 / 5.0)  # ratio of medians, not median of ratios
    assert s.pair_median == pytest.approx(np.median([2.5, 10 / 6]))
    ratios = np.array(a) / np.array(b)
    assert s.ratio_lo == pytest.approx(np.percentile(ratios, 10))
    assert s.ratio_hi == pytest.approx(np.percentile(ratios, 90))
    assert s.ratio_lo < s.speedup < s.ratio_hi


def test_paired_ratio_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_speedup([], [])
    with pytest.raises(ValueError):
        paired_speedup([1.0], [0.0])
