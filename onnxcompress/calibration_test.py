"""Calibration sets larger than the memory budget: thinned before decoding, rows streamed from the file."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from onnxcompress.calibration import load_calibration
from onnxcompress.io import load_model

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def digits():
    return load_model(MODELS / "digits_cnn.onnx")  # input (batch, 1, 8, 8) float32: 256 bytes a sample


def _rows(cal) -> np.ndarray:
    return np.concatenate([c["input"] for c in cal.chunks])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_over_budget_npz_is_thinned_evenly_and_rows_are_exact(digits, tmp_path, monkeypatch, save):
    x = np.random.default_rng(0).normal(size=(300, 1, 8, 8)).astype(np.float32)
    save(tmp_path / "c.npz", input=x, labels=np.arange(300))
    monkeypatch.setenv("ONNXCOMPRESS_CALIB_BYTES", str(256 * 50))  # room for 50 samples
    cal = load_calibration(tmp_path / "c.npz", digits)
    want = np.unique(np.linspace(0, 299, 50).round().astype(int))
    assert cal.samples == len(want) == 50
    np.testing.assert_array_equal(_rows(cal), x[want])
    assert cal.notes and "read 50 of 300 samples" in cal.notes[0]
    # --calib-samples takes the first N, read as a stream too, and no note
    cal = load_calibration(tmp_path / "c.npz", digits, limit=7)
    np.testing.assert_array_equal(_rows(cal), x[:7])
    assert cal.notes == []
    # under the budget: everything, unchanged
    monkeypatch.setenv("ONNXCOMPRESS_CALIB_BYTES", str(1 << 30))
    np.testing.assert_array_equal(_rows(load_calibration(tmp_path / "c.npz", digits)), x)


def test_folder_of_batches_is_thinned_across_files(digits, tmp_path, monkeypatch):
    x = np.arange(40 * 64, dtype=np.float32).reshape(40, 1, 8, 8)
    for i in range(4):  # 4 files of 10 samples, .npy and .npz
        if i % 2:
            np.save(tmp_path / f"b{i}.npy", x[10 * i: 10 * i + 10])
        else:
            np.savez_compressed(tmp_path / f"b{i}.npz", input=x[10 * i: 10 * i + 10])
    monkeypatch.setenv("ONNXCOMPRESS_CALIB_BYTES", str(256 * 8))
    cal = load_calibration(tmp_path, digits)
    want = np.unique(np.linspace(0, 39, 8).round().astype(int))
    np.testing.assert_array_equal(_rows(cal), x[want])


def test_memory_stays_bounded_on_a_large_compressed_set(digits, tmp_path, monkeypatch):
    # 400 MB of float32 samples that compress to almost nothing; the budget allows 8 MB
    n = 400 * 2**20 // 256
    rows = np.zeros((n, 1, 8, 8), np.float32)
    rows[::1000] = 1.0
    np.savez_compressed(tmp_path / "big.npz", input=rows)
    del rows
    monkeypatch.setenv("ONNXCOMPRESS_CALIB_BYTES", str(8 * 2**20))
    tracemalloc.start()
    cal = load_calibration(tmp_path / "big.npz", digits)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cal.samples == 8 * 2**20 // 256
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB for an 8 MB budget"


def test_image_folder_decodes_only_the_images_kept(digits, tmp_path, monkeypatch):
    from PIL import Image

    import onnxcompress.calibration as calibration

    for i in range(30):
        Image.fromarray(np.full((8, 8), i * 8, np.uint8)).save(tmp_path / f"{i:03d}.png")
    decoded = []
    real = calibration._load_images
    monkeypatch.setattr(calibration, "_load_images", lambda files, *a: decoded.extend(files) or real(files, *a))
    monkeypatch.setenv("ONNXCOMPRESS_CALIB_BYTES", str(256 * 6))
    cal = load_calibration(tmp_path, digits, calibration.ImageSpec(channels="L"))
    assert cal.samples == 6
    assert len(decoded) == 7  # one to size a sample, then the six kept
    firsts = sorted({round(float(v) * 255) for v in _rows(cal)[:, 0, 0, 0]})  # the default scale is 1/255
    assert firsts == [i * 8 for i in np.unique(np.linspace(0, 29, 6).round().astype(int))]


@pytest.mark.parametrize("n, held", [(8, 2), (100, 25), (1024, 256), (2048, 256), (5000, 256)])
def test_held_out_part_is_a_share_of_the_set_up_to_256_samples(digits, tmp_path, n, held):
    x = np.random.default_rng(1).normal(size=(n, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", input=x)
    fit, hold = load_calibration(tmp_path / "c.npz", digits).split(0.25, seed=0)
    assert (fit.samples, hold.samples) == (n - held, held)
    rows = np.concatenate([_rows(fit), _rows(hold)])
    assert np.unique(rows.reshape(n, -1), axis=0).shape[0] == n  # every sample once, in one part
    if n <= 1024:  # under the cap, the parts are the ones the share alone gave before
        order = np.random.default_rng(0).permutation(n)
        np.testing.assert_array_equal(_rows(hold), x[np.sort(order[:held])])
