"""Distillation's input perturbations: in range, deterministic, only float inputs, the share asked for."""

from __future__ import annotations

import numpy as np

from onnxcompress.finetune.augment import input_ranges, perturb


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
