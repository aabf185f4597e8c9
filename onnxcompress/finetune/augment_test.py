"""Distillation's input perturbations: in range, deterministic, only float inputs, the share asked for."""

from __future__ import annotations

import numpy as np

from onnxcompress.finetune.augment import _rescale, _spatial_axes, image_like, input_ranges, mix, perturb, perturbed_copies


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


def _square(layout: str, channels: int = 3) -> np.ndarray:
    """An 8x8 bright square centred on a dark 32x32 frame, channel c at brightness (c + 1) / channels."""
    x = np.zeros((channels, 32, 32), np.float32)
    x[:, 12:20, 12:20] = ((np.arange(channels) + 1) / channels)[:, None, None]
    return x if layout == "chw" else x.transpose(1, 2, 0).copy()


def test_rescale_shrinks_or_enlarges_the_content_in_the_same_frame():
    for layout, channels in (("chw", 3), ("hwc", 3), ("chw", 8), ("hwc", 8), ("chw", 1)):
        x = _square(layout, channels)
        axes = _spatial_axes(x)
        assert axes == ((1, 2) if layout == "chw" else (0, 1))
        level = ((np.arange(channels) + 1) / channels).reshape([-1 if a not in axes else 1 for a in range(3)])

        def bright(y):  # pixels of the square per channel, each channel against its own brightness
            return int((y / level > 0.5).sum()) // channels
        np.testing.assert_allclose(_rescale(x, axes, 1.0, (0.3, 0.7)), x, atol=1e-6)
        small = _rescale(x, axes, 0.5, (0.3, 0.7))
        assert small.shape == x.shape and small.dtype == np.float32
        assert bright(small) == 16  # 4x4 where it was 8x8; the frame around is the edge colour
        large = _rescale(x, axes, 1.25, (0.5, 0.5))
        assert large.shape == x.shape and bright(large) == 100  # 10x10, cropped back to 32x32
        # every channel keeps its own content (no channel is resampled into another)
        peak = small.max(axis=axes)
        np.testing.assert_allclose(peak, (np.arange(channels) + 1) / channels, atol=1e-6)


def test_only_rank_4_inputs_with_an_8x8_map_are_image_like():
    assert image_like(np.zeros((2, 3, 48, 320))) and image_like(np.zeros((2, 48, 320, 3)))
    assert image_like(np.zeros((2, 16, 32, 32)))  # many channels first
    assert not image_like(np.zeros((2, 1, 1, 128)))  # an attention mask
    assert not image_like(np.zeros((2, 50, 768)))  # token embeddings
    assert _spatial_axes(np.zeros((4, 4, 4))) is None


def test_one_draw_per_sample_moves_an_image_and_its_mask_together():
    x = np.zeros((60, 3, 32, 32), np.float32)
    x[:, :, 4:14, 18:28] = 1.0  # off centre, so a rescale moves it
    f = {"image": x, "mask": x[:, :1].copy()}
    out = perturb(f, np.random.default_rng(5), 1.0, input_ranges([f]))

    def centre(y):  # (row, col) centroid of the pixels that stand out from the background
        w = np.abs(y - np.median(y)) > 0.5 * np.abs(y - np.median(y)).max()
        rows, cols = np.nonzero(w)
        return np.array([rows.mean(), cols.mean()])

    img = np.array([centre(out["image"][i].mean(0)) for i in range(60)])
    mask = np.array([centre(out["mask"][i, 0]) for i in range(60)])
    moved = np.abs(img - [8.5, 22.5]).max(1) > 2
    assert moved.sum() >= 5  # rescaled samples moved the square
    assert np.median(np.abs(img - mask)[moved].max(1)) < 1.0  # and the mask's square moved with it


def test_perturbed_copies_keep_the_batch_size_and_leave_token_ids_as_they_were():
    f = _feeds(8)
    batches = [{k: v[i:i + 4] for k, v in f.items()} for i in (0, 4)]
    copies = perturbed_copies(batches, np.random.default_rng(2), 0.6, input_ranges(batches))
    assert copies and all(len(c["x"]) == 4 and len(c["ids"]) == 4 for c in copies)  # a fixed batch of 4
    ones = perturbed_copies([{k: v[i:i + 1] for k, v in f.items()} for i in range(8)], np.random.default_rng(2), 0.6,
                            input_ranges(batches))
    assert all(len(c["x"]) == 1 for c in ones) and 1 <= len(ones) <= 8
    for c in ones:  # each copy's token ids are those of the sample it was made from
        src = [i for i in range(8) if np.array_equal(f["ids"][i], c["ids"][0])]
        assert src and not np.array_equal(f["x"][src[0]], c["x"][0])


def test_perturbed_copies_keep_their_tail_for_a_model_that_takes_any_batch():
    f = _feeds(96)
    batches = [{k: v[i:i + 32] for k, v in f.items()} for i in (0, 32, 64)]
    ranges = input_ranges(batches)
    fixed = perturbed_copies(batches, np.random.default_rng(5), 0.5, ranges)
    kept = perturbed_copies(batches, np.random.default_rng(5), 0.5, ranges, keep_tail=True)
    n_kept = sum(len(c["x"]) for c in kept)
    assert [len(c["x"]) for c in fixed] == [32] * (n_kept // 32)  # a fixed batch of 32: the ragged tail goes
    assert n_kept % 32 and 0.35 * 96 <= n_kept <= 0.65 * 96 and len(kept[-1]["x"]) == n_kept % 32
    for a, b in zip(fixed, kept):  # the same copies, the tail aside
        assert np.array_equal(a["x"], b["x"])
