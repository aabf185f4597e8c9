"""Filter importance: a magnitude norm per filter, summed over every filter of an atom.

An atom (a set of coupled channels) is removed as a whole, so its importance is the sum of
the norms of all the filters that go with it: every conv whose output channel is in the
atom, depthwise filters included. For global ranking each group's scores are divided by
the group's mean, so groups of different scale compete fairly.
"""

from __future__ import annotations

import numpy as np

AGGREGATION = "sum of per-filter norms over every filter removed together (atom)"
GLOBAL_NORMALISATION = "each group's scores divided by the group's mean score"
CRITERIA = {
    "l1": "L1 norm of each filter's weights (no data)",
    "l2": "L2 norm of each filter's weights (no data)",
    "activation": "sum over consumer columns of ||W[:, c]||^2 x Var(x_c) on calibration data "
    "(E[x_c^2] with --recover none): the output energy lost when the channel is replaced by its mean",
}


def filter_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """Norm of every slice of ``w`` along ``axis`` (one value per filter)."""
    moved = np.moveaxis(np.asarray(w), axis, 0).reshape(w.shape[axis], -1)
    if criterion == "l1":
        return np.abs(moved).sum(axis=1, dtype=np.float64)
    if criterion == "l2":
        return np.sqrt(np.square(moved, dtype=np.float64).sum(axis=1))
    raise ValueError(f"unknown criterion {criterion!r}")


def normalise_by_group(scores: dict[int, float], groups: dict[object, list[int]]) -> dict[int, float]:
    out = {}
    for atoms in groups.values():
        mean = float(np.mean([scores[a] for a in atoms])) if atoms else 0.0
        for a in atoms:
            out[a] = scores[a] / mean if mean > 0 else 0.0
    return out
