"""Filter importance: a magnitude norm per filter, summed over every filter of an atom.

An atom (a set of coupled channels) is removed as a whole, so its importance is the sum of
the norms of all the filters that go with it: every conv whose output channel is in the
atom, depthwise filters included. For global ranking each group's scores are divided by
the group's mean, so groups of different scale compete fairly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

AGGREGATION = "sum of per-filter norms over every filter removed together (atom)"
GLOBAL_NORMALISATION = "each group's scores divided by the group's mean score"
CRITERIA = {
    "l1": "L1 norm of each filter's weights (no data)",
    "l2": "L2 norm of each filter's weights (no data)",
    "activation": "sum over consumer columns of ||W[:, c]||^2 x Var(x_c) on calibration data "
    "(E[x_c^2] with --recover none): the output energy lost when the channel is replaced by its mean",
}


#: elements per block in the streamed reductions below: a float64 block of this size is 8 MB,
#: so no temporary the size of a weight is made (a 2 GB model's biggest layers are ~40 MB)
_BLOCK = 1 << 20


def _blocks(n: int, per_item: int):
    step = max(1, _BLOCK // max(per_item, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def filter_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """Norm of every slice of ``w`` along ``axis`` (one value per filter), in float64.

    Computed a block of filters at a time (along axis 0, each filter's sum is the same as over the
    whole array), or for an inner axis a block of the leading axes at a time (``_inner_axis_norms``).
    """
    if criterion not in ("l1", "l2"):
        raise ValueError(f"unknown criterion {criterion!r}")
    w = np.asarray(w)
    if axis % max(w.ndim, 1) != 0 and w.flags.c_contiguous and w.size:
        return _inner_axis_norms(w, axis % w.ndim, criterion)
    moved = np.moveaxis(w, axis, 0)
    n = moved.shape[0]
    per = moved.size // n if n else 0
    out = np.empty(n, dtype=np.float64)
    for rows in _blocks(n, per):
        block = moved[rows].reshape(rows.stop - rows.start, per)
        if criterion == "l1":
            out[rows] = np.abs(block).sum(axis=1, dtype=np.float64)
        else:
            out[rows] = np.square(block, dtype=np.float64).sum(axis=1)
    if criterion == "l2":
        np.sqrt(out, out=out)
    return out


def _inner_axis_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """``filter_norms`` along an inner axis (a Gemm weight's output columns): blocks of the leading
    axes are read in memory order and their sums added up per filter. Gathering a block of filters
    instead reads the whole array strided, 2-3x slower on a 1 GB weight; the sums then agree with
    the direct ones to rounding (1e-16), not bit for bit."""
    n = w.shape[axis]
    flat = w.reshape(int(np.prod(w.shape[:axis])), n, -1)
    out = np.zeros(n, dtype=np.float64)
    for rows in _blocks(flat.shape[0], n * flat.shape[2]):
        block = flat[rows]
        if criterion == "l1":
            out += np.abs(block).sum(axis=(0, 2), dtype=np.float64)
        else:
            out += np.square(block, dtype=np.float64).sum(axis=(0, 2))
    if criterion == "l2":
        np.sqrt(out, out=out)
    return out


def l1_kept(w: np.ndarray, keep: dict[int, np.ndarray]) -> tuple[float, float]:
    """(sum |w|, sum |w| over the block that ``keep`` (axis -> boolean mask) keeps), in float64.

    Streams blocks along the first masked axis: each block's kept rows are summed down to one
    row (a vectorised reduction), which is then cut by the other masks. No temporary is the
    size of the weight, and no sum runs along a short inner axis (a 3x3 kernel's nine values).
    """
    w = np.asarray(w)
    if not keep:
        total = float(np.abs(w).sum(dtype=np.float64))
        return total, total
    lead = min(keep)
    moved = np.moveaxis(w, lead, 0)
    rest = {(a if a > lead else a + 1) - 1: m for a, m in keep.items() if a != lead}
    n = moved.shape[0]
    total = kept = 0.0
    for rows in _blocks(n, moved.size // n if n else 0):
        block = np.abs(moved[rows])
        total += float(block.sum(dtype=np.float64))
        chosen = block[keep[lead][rows]]
        if not chosen.shape[0]:
            continue
        col = chosen.sum(axis=0, dtype=np.float64)
        for ax in sorted(rest):
            col = np.compress(rest[ax], col, axis=ax)
        kept += float(col.sum())
    return total, kept


def normalise_by_group(scores: dict[int, float], groups: Mapping[Any, list[int]]) -> dict[int, float]:
    out = {}
    for atoms in groups.values():
        mean = float(np.mean([scores[a] for a in atoms])) if atoms else 0.0
        for a in atoms:
            out[a] = scores[a] / mean if mean > 0 else 0.0
    return out
