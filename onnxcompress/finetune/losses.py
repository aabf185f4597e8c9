"""Distillation's task-aware loss per output: which kind each output is, and its loss.

KL along a class axis (softmaxed outputs read as probabilities, others as logits), binary
cross-entropy for a probability map, relative MSE for everything else (features too). A YOLO
head with boxes and scores in one output (``box_score_heads``) gets both: binary cross-entropy
on its scores, relative MSE on its boxes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxcompress.box_score_heads import box_score_fields
from onnxcompress.fidelity import guess_class_axis, is_probability_map


def loss_kinds(teacher: dict[str, np.ndarray], cfg, features: frozenset[str] = frozenset()) -> dict:
    """Per output: (kind, class axis). kind: probs | logits | map | mse (features too) | skip, or
    boxscores with (field axis, first score field) for the axis."""
    out = {}
    for name, t in teacher.items():
        if not np.issubdtype(t.dtype, np.floating):
            out[name] = ("skip", None)
            continue
        axis = cfg.class_axes.get(name)
        if axis is None and name in features:  # hidden states, embeddings, recurrent states (feature_outputs)
            out[name] = ("mse", None)
            continue
        fields = box_score_fields(t) if axis is None else None
        if fields is not None:
            out[name] = ("boxscores", fields)
            continue
        if axis is None and (name in cfg.map_thresholds or is_probability_map(t)):
            out[name] = ("map", None)
            continue
        axis = guess_class_axis(t) if axis is None else axis % t.ndim
        if axis is None:
            out[name] = ("mse", None)
            continue
        sums = t.sum(axis=axis)
        probs = t.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3)
        out[name] = ("probs" if probs else "logits", axis)
    return out


def output_loss(kind: str, axis, s: torch.Tensor, t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``temperature`` softens both distributions of a class axis (probs, logits) before the KL, scaled by its
    square so the gradient keeps its size (Hinton et al. 2015); maps, boxes and features ignore it."""
    if temperature != 1.0 and kind in ("probs", "logits"):
        if kind == "probs":
            s, t = torch.log(s.clamp_min(1e-8)), torch.log(t.clamp_min(1e-8))
        return temperature ** 2 * output_loss("logits", axis, s / temperature, t / temperature)
    if kind == "boxscores":
        field_axis, first = axis
        rest = t.shape[field_axis] - first
        return (output_loss("map", None, s.narrow(field_axis, first, rest), t.narrow(field_axis, first, rest))
                + output_loss("mse", None, s.narrow(field_axis, 0, first), t.narrow(field_axis, 0, first)))
    if kind == "probs":
        logp = torch.log(s.clamp_min(1e-8))
        return (t * (torch.log(t.clamp_min(1e-8)) - logp)).sum(dim=axis).mean()
    if kind == "logits":
        return F.kl_div(F.log_softmax(s, dim=axis), F.log_softmax(t, dim=axis), log_target=True, reduction="none").sum(dim=axis).mean()
    if kind == "map":
        return F.binary_cross_entropy(s.clamp(1e-6, 1 - 1e-6), t.clamp(0.0, 1.0))
    return F.mse_loss(s, t) / (t.square().mean() + 1e-12)


def check_labelled(kind: str, name: str) -> None:
    """``--train-labels`` need class scores or a CTC sequence: a map, a YOLO head or features take none."""
    if kind not in ("probs", "logits"):
        from onnxcompress.errors import InputError

        raise InputError(f"--train-labels: the first output {name!r} is read as {kind}, not as class scores or a "
                         f"CTC sequence, so it takes no labels")
