"""The streamed reductions of ``importance`` against the direct numpy expressions they replace."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress import importance
from onnxcompress.importance import filter_norms, l1_kept


def _direct_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    return np.abs(moved).sum(axis=1) if criterion == "l1" else np.sqrt(np.square(moved).sum(axis=1))


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 1,000 elements, so every test array is cut into several blocks."""
    monkeypatch.setattr(importance, "_BLOCK", 1000)


@pytest.mark.parametrize("shape", [(12, 7, 3, 3), (40, 30), (30, 40), (5, 1, 3, 3), (9, 4, 2, 2, 2)])
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_filter_norms_match_direct(shape, criterion):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for axis in range(w.ndim):
        got = filter_norms(w, axis, criterion)
        assert got.shape == (shape[axis],) and got.dtype == np.float64
        np.testing.assert_allclose(got, _direct_norms(w, axis, criterion), rtol=1e-12)


def test_filter_norms_hand_values():
    w = np.array([[[[1.0, -2.0]]], [[[3.0, 4.0]]]], dtype=np.float32)  # two filters
    assert filter_norms(w, 0, "l1").tolist() == [3.0, 7.0]
    assert filter_norms(w, 0, "l2").tolist() == [pytest.approx(5**0.5), 5.0]
    with pytest.raises(ValueError, match="unknown criterion"):
        filter_norms(w, 0, "l3")


@pytest.mark.parametrize("shape", [(12, 7, 3, 3), (40, 30), (6, 50, 5)])
def test_l1_kept_matches_direct(shape):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape).astype(np.float32)
    a = np.abs(w.astype(np.float64))
    for axes in [(0,), (1,), (0, 1), (w.ndim - 1,)]:
        keep = {ax: rng.random(shape[ax]) < 0.6 for ax in axes}
        sub = a
        for ax in sorted(keep):
            sub = np.compress(keep[ax], sub, axis=ax)
        total, kept = l1_kept(w, keep)
        assert total == pytest.approx(a.sum(), rel=1e-12)
        assert kept == pytest.approx(sub.sum(), rel=1e-12)


def test_l1_kept_edge_cases():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5  # |w| sums to 36
    assert l1_kept(w, {}) == (36.0, 36.0)
    assert l1_kept(w, {0: np.zeros(3, bool)}) == (36.0, 0.0)
    # rows 0 and 2 ([-5..-2] and [3..6]), columns 1 and 3: |-4|+|-2|+|4|+|6| = 16
    assert l1_kept(w, {0: np.array([1, 0, 1], bool), 1: np.array([0, 1, 0, 1], bool)}) == (36.0, 16.0)
