"""Distillation's input perturbations: in range, deterministic, only float inputs, the share asked for."""

from __future__ import annotations

import numpy as np

from onnxcompress.finetune.augment import _rescale, input_ranges, mix, perturb, perturbed_copies


def _feeds(n=64):
    """Smooth random images (a rescaled or blurred one still correlates with its source) and token ids."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 16), indexing="ij")
    a, b, c = (rng.uniform(-1, 1, (n, 3, 1, 1)) for _ in range(3))
    x = np.tanh(a * yy + b * xx + c) + rng.normal(0, 0.02, (n, 3, 16, 16))
    return {"x": x.astype(np.float32), "ids": rng.integers(0, 100, (n, 3, 5)).astype(np.int64)}


def test_ranges_cover_only_float_inputs_of_rank_3_or_more():
    f = _feeds()
    r = input_ranges([f, {"x": f["x"][:4] * 0.5, "ids": f["ids"][:4]}])
    assert set(r) == {"x"}
    assert r["x"] == (float(f["x"].min()), float(f["x"].max()))


def test_share_of_samples_perturbed_in_range_and_deterministic():
    f = _feeds(400)
    r = input_ranges([f])
    out = perturb(f, np.random.default_rng(1), 0.5, r)
    changed = np.array([not np.array_equal(out["x"][i], f["x"][i]) for i in range(400)])
    assert 0.4 < changed.mean() < 0.6
    assert out["x"].min() >= r["x"][0] and out["x"].max() <= r["x"][1] and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["ids"], f["ids"])  # integer inputs are never touched
    again = perturb(f, np.random.default_rng(1), 0.5, r)
    np.testing.assert_array_equal(out["x"], again["x"])
    assert not np.shares_memory(out["x"], f["x"])  # the caller's arrays stay as they were
    # about a quarter of the perturbed samples are inverted: negatively correlated with their source
    corr = [np.corrcoef(out["x"][i].ravel(), f["x"][i].ravel())[0, 1] for i in np.flatnonzero(changed)]
    inverted = np.mean(np.asarray(corr) < 0)
    assert 0.15 < inverted < 0.35


def test_share_zero_is_the_identity():
    f = _feeds()
    assert perturb(f, np.random.default_rng(0), 0.0, input_ranges([f])) is f


def test_mix_blends_each_picked_sample_with_another_of_the_minibatch():
    f = _feeds(200)
    r = input_ranges([f])
    out = mix(f, np.random.default_rng(3), 0.5, r)
    x, y = f["x"].reshape(200, -1), out["x"].reshape(200, -1)
    changed = ~np.all(x == y, axis=1)
    assert 0.4 < changed.mean() < 0.6
    for i in np.flatnonzero(changed)[:20]:
        # y_i = lam x_i + (1 - lam) x_j for one j != i and lam in [0, 1]: solve for lam per partner
        fits = []
        for j in range(200):
            if j == i:
                continue
            d = x[i] - x[j]
            lam = float(d @ (y[i] - x[j]) / (d @ d))
            fits.append((np.abs(lam * x[i] + (1 - lam) * x[j] - y[i]).max(), lam))
        err, lam = min(fits)
        assert err < 1e-5 and -1e-6 <= lam <= 1 + 1e-6
    assert out["x"].dtype == np.float32 and out["x"].min() >= r["x"][0] and out["x"].max() <= r["x"][1]
    np.testing.assert_array_equal(out["ids"], f["ids"])  # integer inputs are never blended
    np.testing.assert_array_equal(out["x"], mix(f, np.random.default_rng(3), 0.5, r)["x"])
    assert not np.shares_memory(out["x"], f["x"])


def test_mix_needs_two_samples_and_a_share():
    f = _feeds(1)
    r = input_ranges([f])
    assert mix(f, np.random.default_rng(0), 1.0, r) is f
    g = _feeds()
    assert mix(g, np.random.default_rng(0), 0.0, r) is g


def _square(layout: str) -> np.ndarray:
    """An 8x8 bright square centred on a dark 32x32 frame, 3 channels, CHW or HWC."""
    x = np.zeros((3, 32, 32), np.float32)
    x[:, 12:20, 12:20] = 1.0
    return x if layout == "chw" else x.transpose(1, 2, 0).copy()


def test_rescale_shrinks_or_enlarges_the_content_in_the_same_frame():
    for layout in ("chw", "hwc"):
        x = _square(layout)
        bright = lambda y: int((y > 0.5).sum()) // 3  # noqa: E731 - pixels of the square per channel
        np.testing.assert_allclose(_rescale(x, 1.0, np.random.default_rng(0)), x, atol=1e-6)
        small = _rescale(x, 0.5, np.random.default_rng(0))
        assert small.shape == x.shape and small.dtype == np.float32
        assert bright(small) == 16  # 4x4 where it was 8x8; the frame around is the edge colour
        assert small.min() >= 0.0 and small.max() <= 1.0
        large = _rescale(x, 1.25, np.random.default_rng(0))
        assert large.shape == x.shape and bright(large) == 100  # 10x10, cropped back to 32x32


def test_perturbed_copies_are_new_batches_of_about_the_share_asked_for():
    f = _feeds(200)
    r = input_ranges([f])
    before = {k: v.copy() for k, v in f.items()}
    copies = perturbed_copies([f, f], np.random.default_rng(4), 0.5, r)
    n = sum(len(c["x"]) for c in copies)
    assert 160 < n < 240 and all(set(c) == {"x", "ids"} for c in copies)
    for k in f:
        np.testing.assert_array_equal(f[k], before[k])  # the calibration batches stay as they were
    x = np.concatenate([c["x"] for c in copies])
    assert x.min() >= r["x"][0] and x.max() <= r["x"][1]
    assert perturbed_copies([f], np.random.default_rng(0), 0.0, r) == []
    assert perturbed_copies([{"ids": f["ids"]}], np.random.default_rng(0), 1.0, {}) == []  # token ids: none
    full = perturbed_copies([f], np.random.default_rng(0), 1.0, r)
    assert len(full) == 1 and len(full[0]["x"]) == 200
