"""Float64 statistics of large outputs, a block of samples at a time.

Fidelity and drift are summed in float64, but a big-vocabulary CTC head's held-out outputs are
large: PP-OCRv6 rec's (512, 40, 18710) probabilities are 1.5 GB in float32, and float64 copies
of whole outputs (the reference, the compared one, their difference) took 8 times that and
killed a 1024-sample run at 24 GB. Here each statistic is taken over blocks of about
``CHUNK_VALUES`` values (``sample_blocks``), so the work space stays bounded whatever the
output's size; an output that fits one block gives the same bits as the whole-array formula.
"""

from __future__ import annotations

import math

import numpy as np

#: float64 values converted at a time (8 MB)
CHUNK_VALUES = 1 << 20


def sample_blocks(a: np.ndarray) -> list:
    """Indices of ``a`` (slices of its first axis) holding about ``CHUNK_VALUES`` values each (one,
    for small outputs, and ``...`` for a scalar or a vector)."""
    if a.ndim <= 1:
        return [...]
    n = a.shape[0]
    step = max(1, CHUNK_VALUES // max(1, a.size // max(1, n)))
    return [slice(i, i + step) for i in range(0, n, step)]


def cosines(a64: np.ndarray, b64: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two (N, D) arrays (1 where both rows are zero)."""
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    dots = np.einsum("ij,ij->i", a64, b64)
    both0 = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(both0, 1.0, np.where((na == 0) | (nb == 0), 0.0, dots / (na * nb)))


def difference_stats(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Per-sample cosines, max |a - b|, ||a - b|| and ||a|| of two same-shaped outputs, in float64."""
    a2 = a.reshape(a.shape[0], math.prod(a.shape[1:])) if a.ndim > 1 else a.reshape(1, -1)  # (0, D) too
    b2 = b.reshape(a2.shape)
    cos, max_abs, diff_sq, ref_sq = [], 0.0, 0.0, 0.0
    for rows in sample_blocks(a2):
        a64, b64 = a2[rows].astype(np.float64), b2[rows].astype(np.float64)
        diff = a64 - b64
        cos.append(cosines(a64, b64))
        if diff.size:
            max_abs = max(max_abs, float(np.max(np.abs(diff))))
        diff_sq += float(np.square(diff).sum())
        ref_sq += float(np.square(a64).sum())
    return (np.concatenate(cos) if cos else np.ones(0)), max_abs, math.sqrt(diff_sq), math.sqrt(ref_sq)


def square_sum(a: np.ndarray) -> float:
    """The sum of ``a``'s squares, in float64."""
    return sum(float(np.square(a[rows].astype(np.float64)).sum()) for rows in sample_blocks(a))
