"""Distillation's input perturbations: in range, deterministic, only float inputs, the share asked for."""

from __future__ import annotations

import numpy as np

from onnxcompress.finetune.augment import input_ranges, mix, perturb


def _feeds(n=64):
    rng = np.random.default_rng(0)
    return {"x": rng.uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32),
            "ids": rng.integers(0, 100, (n, 3, 5)).astype(np.int64)}


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
