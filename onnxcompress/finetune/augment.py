"""Label-free input perturbations for distillation: the teacher labels whatever it is shown.

Distillation matches the original model's outputs on the calibration inputs. Inputs drawn
a little differently at deployment (other contrast, inverted colours, sensor noise, blur)
land off that manifold, where nothing held the pruned model to the original. Since the
teacher gives a target for any input, a share of each minibatch is perturbed before both
models see it:

- contrast and brightness about the sample's own mean (``a (x - m) + m + b``), with the sign
  of ``a`` flipped for a quarter of them (light-on-dark inputs);
- Gaussian noise up to 15% of the sample's standard deviation;
- for image-like inputs (rank 4 with a spatial map of at least 8x8; channels first or last,
  whichever axis is smaller): on a third, a box blur (3x3, or 5x5 on half of those); on another
  third, a rescale of the content by 0.6-1.25 (smaller: placed at a random offset on the
  sample's edge colour; larger: a random crop), as text, objects and glyphs come smaller or
  larger than in the calibration set;

one draw per sample, shared by all of its inputs (an image and its mask move together),

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


def _spatial_axes(x: np.ndarray) -> tuple[int, int] | None:
    """The two spatial axes of one sample, (C, H, W) or (H, W, C): the channel axis is the smaller of
    the first and the last. None when the sample is not rank 3 or its map is smaller than 8x8."""
    if x.ndim != 3:
        return None
    axes = (1, 2) if x.shape[0] <= x.shape[2] else (0, 1)
    return axes if min(x.shape[a] for a in axes) >= 8 else None


def image_like(x: np.ndarray) -> bool:
    """A batch of images or other spatial maps: rank 4, each sample with a map of at least 8x8."""
    return x.ndim == 4 and len(x) > 0 and _spatial_axes(x[0]) is not None


def _blur(x: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """3x3 box blur of one sample over its two spatial ``axes`` (edges replicated)."""
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


def _resample(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``x`` linearly resampled to ``size`` points along ``axis`` (pixel centres aligned)."""
    n = x.shape[axis]
    pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0.0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _rescale(x: np.ndarray, axes: tuple[int, int], factor: float, where: tuple[float, float]) -> np.ndarray:
    """The content of one sample ``factor`` times as large in the same frame. Smaller is placed with
    the edges replicated around it, larger is cropped; ``where`` (each in [0, 1]) is the offset along
    each spatial axis as a share of the room there, so samples of several inputs move together."""
    y = x
    for a in axes:
        y = _resample(y, a, max(1, round(x.shape[a] * factor)))
    for a, u in zip(axes, where):
        n, m = x.shape[a], y.shape[a]
        start = int(round(u * abs(n - m)))
        if m < n:
            pad = [(0, 0)] * x.ndim
            pad[a] = (start, n - m - start)
            y = np.pad(y, pad, mode="edge")
        elif m > n:
            y = np.take(y, np.arange(start, start + n), axis=a)
    return y


def _draw(rng: np.random.Generator) -> dict:
    """One sample's perturbation, shared by all of its inputs (an image and its mask stay aligned)."""
    geometry = rng.random()
    return {
        "contrast": rng.uniform(0.6, 1.4) * (-1.0 if rng.random() < 0.25 else 1.0),
        "brightness": rng.uniform(-0.25, 0.25),
        "blur": (1 if rng.random() < 0.5 else 2) if geometry < 1 / 3 else 0,
        "rescale": float(rng.uniform(0.6, 1.25)) if 1 / 3 <= geometry < 2 / 3 else None,
        "where": (float(rng.random()), float(rng.random())),
        "noise": rng.uniform(0.0, 0.15),
    }


def _apply(s: np.ndarray, d: dict, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    m, sd = float(s.mean()), float(s.std()) or 1.0
    s = m + d["contrast"] * (s - m) + d["brightness"] * sd
    axes = _spatial_axes(s)
    if axes is not None:
        for _ in range(d["blur"]):
            s = _blur(s, axes)
        if d["rescale"] is not None:
            s = _rescale(s, axes, d["rescale"], d["where"])
    s = s + rng.normal(0.0, d["noise"] * sd, s.shape).astype(np.float32)
    return np.clip(s, lo, hi)


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
    for k in ranges:
        out[k] = feeds[k].copy()
    for i in np.flatnonzero(pick):
        d = _draw(rng)
        for k, (lo, hi) in ranges.items():
            out[k][i] = _apply(feeds[k][i].astype(np.float32), d, rng, lo, hi).astype(out[k].dtype)
    return out


def perturbed_copies(batches: list[dict[str, np.ndarray]], rng: np.random.Generator, share: float,
                     ranges: dict[str, tuple[float, float]], keep_tail: bool = False) -> list[dict[str, np.ndarray]]:
    """Perturbed copies of about ``share`` of the samples of ``batches``, in batches of the first
    batch's size (a fixed-batch model takes them; a ragged tail is dropped when every given batch
    has that size, unless ``keep_tail``: the model takes any batch). The given batches are not
    changed. Empty when ``ranges`` is."""
    if share <= 0 or not ranges or not batches:
        return []
    picked = []
    for feeds in batches:
        rows = np.flatnonzero(rng.random(len(next(iter(feeds.values())))) < share)
        if rows.size:
            picked.append(perturb({k: v[rows] for k, v in feeds.items()}, rng, 1.0, ranges))
    if not picked:
        return []
    sizes = [len(next(iter(f.values()))) for f in batches]
    whole = {k: np.concatenate([f[k] for f in picked]) for k in picked[0]}
    total, n = len(next(iter(whole.values()))), sizes[0]
    stop = total - total % n if all(z == n for z in sizes) and not keep_tail else total
    return [{k: v[i:i + n] for k, v in whole.items()} for i in range(0, stop, n)]


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
