"""Label-free input perturbations for distillation: the teacher labels whatever it is shown.

Distillation matches the original model's outputs on the calibration inputs. Inputs drawn
a little differently at deployment (other contrast, inverted colours, sensor noise, blur)
land off that manifold, where nothing held the pruned model to the original. Since the
teacher gives a target for any input, a share of each minibatch is perturbed before both
models see it:

- contrast and brightness about the sample's own mean (``a (x - m) + m + b``), with the sign
  of ``a`` flipped for a quarter of them (light-on-dark inputs);
- Gaussian noise up to 15% of the sample's standard deviation;
- for image-like inputs (rank 4 with a spatial map of at least 8x8): on a third, a box blur
  (3x3, or 5x5 on half of those); on another third, a rescale of the content by 0.6-1.25
  (smaller: placed at a random offset on the sample's edge colour; larger: a random crop), as
  text, objects and glyphs come smaller or larger than in the calibration set;

and the result is clipped to the range the calibration data spans for that input, so a
normalised input stays in its range. Only float inputs of rank 3 or more (images, feature
maps, spectrograms) are perturbed; token ids, masks and other integer inputs never are.

``mix`` blends samples of one minibatch (``lam * x_i + (1 - lam) * x_j``, ``lam`` uniform in
[0, 1]), as function matching does (Beyer et al. 2022, "Knowledge distillation: a good teacher
is patient and consistent"): the teacher labels the blend, so a few hundred calibration inputs
give a new training input every step and the student memorises them more slowly (PP-OCRv4 rec
at 0.6x MACs, 60 steps: training loss 0.014 without, 0.071 blending half; bench/DISTILL_MIX.md).
"""

from __future__ import annotations

import numpy as np


def input_ranges(batches: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Per perturbable input: (min, max) over the calibration data."""
    out: dict[str, tuple[float, float]] = {}
    for feeds in batches:
        for k, v in feeds.items():
            if v.ndim < 3 or not np.issubdtype(v.dtype, np.floating):
                continue
            lo, hi = float(v.min()), float(v.max())
            if k in out:
                lo, hi = min(lo, out[k][0]), max(hi, out[k][1])
            out[k] = (lo, hi)
    return out


def _blur(x: np.ndarray) -> np.ndarray:
    """3x3 box blur of one (C, H, W) or (H, W, C) sample over its two spatial axes (edges replicated)."""
    axes = _spatial_axes(x)
    pad = [(0, 0)] * x.ndim
    for a in axes:
        pad[a] = (1, 1)
    p = np.pad(x, pad, mode="edge")
    acc = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            idx = [slice(None)] * x.ndim
            idx[axes[0]] = slice(dy, dy + x.shape[axes[0]])
            idx[axes[1]] = slice(dx, dx + x.shape[axes[1]])
            acc += p[tuple(idx)]
    return acc / 9.0


def _spatial_axes(x: np.ndarray) -> tuple[int, int]:
    return (1, 2) if x.shape[0] <= 4 else (0, 1)  # channels first when the first axis is small


def _resample(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``x`` linearly resampled to ``size`` points along ``axis`` (pixel centres aligned)."""
    n = x.shape[axis]
    pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0.0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _rescale(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """The content of one sample ``factor`` times as large in the same frame: smaller is placed at a
    random offset with the edges replicated around it, larger is cropped at a random offset."""
    axes = _spatial_axes(x)
    y = x
    for a in axes:
        y = _resample(y, a, max(1, round(x.shape[a] * factor)))
    for a in axes:
        n, m = x.shape[a], y.shape[a]
        if m < n:
            before = int(rng.integers(0, n - m + 1))
            pad = [(0, 0)] * x.ndim
            pad[a] = (before, n - m - before)
            y = np.pad(y, pad, mode="edge")
        elif m > n:
            start = int(rng.integers(0, m - n + 1))
            y = np.take(y, np.arange(start, start + n), axis=a)
    return y


def perturb(feeds: dict[str, np.ndarray], rng: np.random.Generator, share: float,
            ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """``feeds`` with about ``share`` of its samples perturbed (a copy; the input is not changed)."""
    if share <= 0 or not ranges:
        return feeds
    n = len(next(iter(feeds.values())))
    pick = rng.random(n) < share
    if not pick.any():
        return feeds
    out = dict(feeds)
    for k, (lo, hi) in ranges.items():
        x = feeds[k].copy()
        for i in np.flatnonzero(pick):
            s = x[i].astype(np.float32)
            m, sd = float(s.mean()), float(s.std()) or 1.0
            a = rng.uniform(0.6, 1.4) * (-1.0 if rng.random() < 0.25 else 1.0)
            s = m + a * (s - m) + rng.uniform(-0.25, 0.25) * sd
            if s.ndim == 3 and min(s.shape[a] for a in _spatial_axes(s)) >= 8:
                geometry = rng.random()
                if geometry < 1 / 3:
                    s = _blur(s) if rng.random() < 0.5 else _blur(_blur(s))
                elif geometry < 2 / 3:
                    s = _rescale(s, float(rng.uniform(0.6, 1.25)), rng)
            s = s + rng.normal(0.0, rng.uniform(0.0, 0.15) * sd, s.shape).astype(np.float32)
            x[i] = np.clip(s, lo, hi).astype(x.dtype)
        out[k] = x
    return out


def perturbed_copies(batches: list[dict[str, np.ndarray]], rng: np.random.Generator, share: float,
                     ranges: dict[str, tuple[float, float]]) -> list[dict[str, np.ndarray]]:
    """Perturbed copies of about ``share`` of the samples of ``batches``, as batches of their own
    (the given batches are not changed). Empty when nothing is perturbable (``ranges`` empty)."""
    out: list[dict[str, np.ndarray]] = []
    if share <= 0 or not ranges:
        return out
    for feeds in batches:
        rows = np.flatnonzero(rng.random(len(next(iter(feeds.values())))) < share)
        if rows.size:
            out.append(perturb({k: v[rows] for k, v in feeds.items()}, rng, 1.0, ranges))
    return out


def mix(feeds: dict[str, np.ndarray], rng: np.random.Generator, share: float,
        ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """``feeds`` with about ``share`` of its samples blended with another sample of the minibatch.

    Only the perturbable inputs (``ranges``) are blended, every one with the same partner and
    weight; a blend of two in-range samples stays in range. A copy; the input is not changed.
    """
    n = len(next(iter(feeds.values())))
    if share <= 0 or not ranges or n < 2:
        return feeds
    partner = (np.arange(n) + rng.integers(1, n, n)) % n  # never the sample itself
    lam = rng.uniform(0.0, 1.0, n).astype(np.float32)
    lam[rng.random(n) >= share] = 1.0
    out = dict(feeds)
    for k in ranges:
        x = feeds[k]
        w = lam.reshape((n,) + (1,) * (x.ndim - 1))
        out[k] = (w * x + (1.0 - w) * x[partner]).astype(x.dtype)
    return out
