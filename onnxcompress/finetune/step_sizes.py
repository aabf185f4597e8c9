"""Per-tensor step sizes for distillation, relative to each weight's own scale.

Adam moves every weight by about its learning rate per step, whatever the weight's magnitude.
In an exported, BN-folded and refit graph the weight tensors' scales span four orders of
magnitude: on the DBNet detector (rapidocr's ppocr_det) pruned to 0.8x MACs, one 3x3 conv's
weights have an RMS of 7e-5 where the median tensor's is 0.19, so the default step of 1e-4
changed that conv's output by 140% and the detector's held-out loss went from 0.010 to 0.42 in
25 steps. Scaling each tensor's rate by its RMS over the median tensor's (at most 1) makes the
step a similar share of every tensor, and there the same run lowered the held-out loss
(0.0104 -> 0.0084 in 30 steps; bench/DISTILL_STEPS.md).

A bias takes its layer's weight's factor (its output has the layer's scale, not the bias's); a
norm's scale and shift and any other tensor without a layer weight keep the full rate.
"""

from __future__ import annotations

from typing import Collection

import numpy as np

#: the smallest factor: a tensor of zeros still moves, slowly
MIN_FACTOR = 1e-4


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0


def relative_step_sizes(arrays: dict[str, np.ndarray], bias_weight: dict[str, str],
                        vectors: Collection[str] = ()) -> dict[str, float]:
    """Tensor name -> factor on the learning rate, in [MIN_FACTOR, 1].

    ``arrays`` holds the trainable tensors; ``bias_weight`` maps a bias to its layer's weight
    (``GraphModule.bias_weights()``). A tensor of two or more dims is a layer weight, unless it
    is in ``vectors``: a bias or norm affine written as its own Add or Mul is often stored as
    [1, C, 1, 1] (``GraphModule.affine_names()``), and must neither take its own scale nor move
    the median. With no ``vectors`` the factors are what they were before those were trained.
    """
    weights = {n: _rms(a) for n, a in arrays.items() if a.ndim >= 2 and n not in vectors}
    median = float(np.median(list(weights.values()))) if weights else 0.0
    out = {}
    for name in arrays:
        source = name if name in weights else bias_weight.get(name, "")
        out[name] = float(np.clip(weights[source] / median, MIN_FACTOR, 1.0)) if median > 0 and source in weights else 1.0
    return out
