"""Cutting weights: rows read straight from external data, several axes a block at a time, into memory
or into the output's data file."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.pruning import cut


def test_rows_read_from_the_data_file_equal_the_in_memory_cut(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(37, 5, 3)).astype(np.float32)
    path = tmp_path / "w.data"
    path.write_bytes(b"\0" * 123 + w.tobytes())  # the tensor sits at an offset, as in a shared data file
    keep = rng.random(37) < 0.5
    keep[[3, 4, 5, 36]] = True  # runs of consecutive rows and the last row
    got = cut.read_rows(w, keep, str(path), 123)
    np.testing.assert_array_equal(got, w[keep])
    assert got.flags["C_CONTIGUOUS"] and got.dtype == np.float32


def test_multi_axis_cut_equals_cutting_one_axis_after_another(monkeypatch):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 6, 3, 3)).astype(np.float32)
    k0, k1 = rng.random(8) < 0.6, rng.random(6) < 0.6
    for block in (1, 3 * w[:1].nbytes, 1 << 20):  # one row per block, a few, all at once
        monkeypatch.setattr(cut, "CUT_BLOCK_BYTES", block)
        got = cut.cut((w, [(0, k0), (1, k1)], None))
        assert isinstance(got, np.ndarray)  # without a sink, always in memory
        np.testing.assert_array_equal(got, w[k0][:, k1])
        assert got.flags["C_CONTIGUOUS"] and got.dtype == np.float32
        # the order the masks come in does not matter, nor masks that skip axis 0
        np.testing.assert_array_equal(cut.cut((w, [(1, k1), (0, k0)], None)), w[k0][:, k1])
    k2 = rng.random(3) < 0.6
    np.testing.assert_array_equal(cut.cut((w, [(1, k1), (2, k2)], None)), w[:, k1][:, :, k2])
    np.testing.assert_array_equal(cut.cut((w, [(1, k1)], None)), w[:, k1])


def test_cut_into_the_output_data_file_equals_the_in_memory_cut(tmp_path, monkeypatch):
    from onnxcompress import spill

    monkeypatch.setattr(spill, "MIN_BYTES", 64)
    monkeypatch.setattr(cut, "CUT_BLOCK_BYTES", 500)  # several blocks per tensor
    rng = np.random.default_rng(2)
    w = rng.normal(size=(40, 12, 3)).astype(np.float32)
    path = tmp_path / "w.data"
    path.write_bytes(b"\0" * 64 + w.tobytes())
    k0, k1, k2 = rng.random(40) < 0.5, rng.random(12) < 0.5, rng.random(3) < 0.7
    k0[[5, 6, 7, 39]] = True
    sink = spill.DataSink(lambda: tmp_path / "out", "out.data")
    (tmp_path / "out").mkdir()
    cases = [([(0, k0)], (str(path), 64)), ([(0, k0)], None), ([(1, k1)], None), ([(0, k0), (1, k1)], None),
             ([(2, k2), (1, k1)], None)]
    for masks, source in cases:
        region, kept = cut.cut_and_sum((w, masks, source, sink, True))
        assert isinstance(region, spill.Region), masks
        want, kept_in_memory = cut.cut_and_sum((w, masks, source, None, True))
        assert isinstance(region, spill.Region) and isinstance(want, np.ndarray)
        got = region.seal("w").numpy()
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        # the kept |w|, summed as the blocks go (none for rows copied in the kernel: never read)
        exact = np.abs(want.astype(np.float64)).sum()
        assert kept_in_memory == pytest.approx(exact, rel=1e-12)
        assert kept is None if source is not None else kept == pytest.approx(exact, rel=1e-12)
        assert cut.cut_and_sum((w, masks, source, None, False))[1] is None
    assert not isinstance(cut.cut((w[:1, :1], [(2, k2)], None, sink)), spill.Region)  # small: in memory
