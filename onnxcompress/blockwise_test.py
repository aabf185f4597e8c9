"""Block-at-a-time float64 statistics give the whole-array figures with a bounded work space."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxcompress import blockwise
from onnxcompress.fidelity import compare_outputs
from onnxcompress.pruning.sensitivity import DriftReference


def _outputs():
    rng = np.random.default_rng(1)
    ref = rng.dirichlet(np.ones(50), size=(30, 8)).astype(np.float32)  # (N, T, C) distributions
    got = (ref + 0.02 * rng.normal(size=ref.shape)).astype(np.float32)
    return ref, got


def test_blocks_cover_every_sample_once_and_hold_about_chunk_values(monkeypatch):
    ref, _ = _outputs()
    assert blockwise.sample_blocks(ref) == [slice(0, 2621)]  # 400 values a sample: one block
    monkeypatch.setattr(blockwise, "CHUNK_VALUES", 1000)
    blocks = blockwise.sample_blocks(ref)
    assert len(blocks) == 15 and all(len(range(30)[b]) == 2 for b in blocks)
    assert np.array_equal(np.concatenate([ref[b] for b in blocks]), ref)
    monkeypatch.setattr(blockwise, "CHUNK_VALUES", 10)  # a sample over the budget: one a block
    assert len(blockwise.sample_blocks(ref)) == 30
    assert blockwise.sample_blocks(np.ones((), np.float32)) == [...]
    assert blockwise.sample_blocks(np.ones(7, np.float32)) == [...]


def test_outputs_are_compared_a_block_of_samples_at_a_time_with_the_whole_arrays_figures(monkeypatch):
    ref, got = _outputs()
    whole = compare_outputs({"y": ref}, {"y": got}).per_output["y"]
    whole_drift = DriftReference({"y": ref})({"y": got})
    monkeypatch.setattr(blockwise, "CHUNK_VALUES", 1000)  # 2 samples (800 values) a block: 15 blocks
    blocked = compare_outputs({"y": ref}, {"y": got}).per_output["y"]
    a64, b64 = ref.astype(np.float64).reshape(30, -1), got.astype(np.float64).reshape(30, -1)
    cos = np.einsum("ij,ij->i", a64, b64) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    for o in (whole, blocked):
        assert o.rel_l2 == pytest.approx(np.linalg.norm(a64 - b64) / np.linalg.norm(a64), rel=1e-12)
        assert o.max_abs_diff == np.abs(a64 - b64).max()
        assert o.cosine_min == pytest.approx(cos.min(), rel=1e-12)
        assert o.cosine_mean == pytest.approx(cos.mean(), rel=1e-12)
        assert o.agreement == whole.agreement and o.sequence_agreement == whole.sequence_agreement
    reference = DriftReference({"y": ref})
    assert not reference._buffers
    want = math.sqrt(np.square(a64 - b64).sum() / np.square(a64).sum())
    assert reference({"y": got}) == pytest.approx(want, rel=1e-12) == whole_drift
    assert {b.shape for b in reference._buffers.values()} == {(2, 8, 50)}  # never the whole (30, 8, 50)


def test_cosines_of_zero_rows():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    assert blockwise.cosines(a, b).tolist() == [1.0, 0.0, pytest.approx(1.0)]
    assert blockwise.square_sum(np.arange(4, dtype=np.float32).reshape(2, 2)) == 14.0


def test_empty_outputs_compare_as_equal():
    for shape in ((0, 5), (3, 0)):
        cos, max_abs, diff, ref = blockwise.difference_stats(np.ones(shape, np.float32), np.ones(shape, np.float32))
        assert (cos.size, max_abs, diff, ref) == ((0, 0.0, 0.0, 0.0) if shape[0] == 0 else (3, 0.0, 0.0, 0.0))
    o = compare_outputs({"y": np.ones((0, 5), np.float32)}, {"y": np.ones((0, 5), np.float32)}).per_output["y"]
    assert (o.cosine_min, o.cosine_mean, o.rel_l2) == (1.0, 1.0, 0.0)
