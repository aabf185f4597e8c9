"""Detector heads that concatenate box regression and scores along one axis.

YOLO exports put each anchor's box and its scores in one output: ``(N, 4 + classes, anchors)``
from YOLOv8 on (ultralytics, and the packages that ship its models, such as NudeNet's
``320n.onnx``), ``(N, anchors, 5 + classes)`` from YOLOv5 (the fifth field is the objectness).
Read as one tensor, its box coordinates (pixels, up to the input's size) swamp every
relative error, and no axis of it holds class scores: an argmax across anchors, or across
box fields and classes together, means nothing. Fidelity, the sensitivity sweep and
distillation's loss split such an output in two, anchor-major: ``NAME[boxes]`` ``(N, A, B)``,
judged as box regression at the original's confident anchors, and ``NAME[scores]``
``(N, A, S)``, judged as a map of independent scores.
"""

from __future__ import annotations

import numpy as np

#: at most this many leading box fields (4 for a box, one more for an angle or the like)
MAX_BOX_FIELDS = 8
#: at least this many anchors, and at least twice as many as fields
MIN_ANCHORS = 64
#: a sigmoid computed without fusion can round to 1.0000001
_SLACK = 1e-4


def box_score_fields(a: np.ndarray) -> tuple[int, int] | None:
    """(field axis, first score field) of a rank-3 float output whose fields are box values
    followed by scores, or None.

    The field axis is the shorter of axes 1 and 2, with at least ``MIN_ANCHORS`` anchors (and
    twice the fields) along the other. The scores are the longest tail of fields whose values
    all lie in [0, 1], after 1 to ``MAX_BOX_FIELDS`` fields whose values do not. So a CTC head's
    probabilities (every field in [0, 1]), its logits (none), and a box output alone (none) are
    not split.
    """
    if not np.issubdtype(a.dtype, np.floating) or a.ndim != 3 or a.size == 0:
        return None
    axis = 1 if a.shape[1] < a.shape[2] else 2
    fields, anchors = a.shape[axis], a.shape[3 - axis]
    if fields < 2 or anchors < max(MIN_ANCHORS, 2 * fields):
        return None
    over = (0, 3 - axis)

    def unit(part: slice) -> np.ndarray:  # per field of ``part``: are all its values in [0, 1]?
        sub = a[:, part] if axis == 1 else a[:, :, part]
        return (np.nanmin(sub, axis=over) >= -_SLACK) & (np.nanmax(sub, axis=over) <= 1.0 + _SLACK)

    # Cheap refusals first: fidelity asks this of every output at every judged step, and a CTC head's
    # (N, 40, 18710) is most of a judge's data. Some box field must lie among the first
    # MAX_BOX_FIELDS + 1 fields, and the last field must be a score.
    if unit(slice(0, MAX_BOX_FIELDS + 1)).all() or not unit(slice(fields - 1, fields))[0]:
        return None
    in_unit = unit(slice(None))
    first = fields
    while first > 0 and in_unit[first - 1]:
        first -= 1
    if first in (0, fields) or first > MAX_BOX_FIELDS:
        return None
    return axis, first


def boxes_name(name: str) -> str:
    return f"{name}[boxes]"


def scores_name(name: str) -> str:
    return f"{name}[scores]"


def split_heads(outputs: dict[str, np.ndarray], heads: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """``outputs`` with each of ``heads`` (name -> (field axis, first score field)) replaced by its
    ``[boxes]`` and ``[scores]`` parts, anchor-major views ``(N, anchors, fields)``; the other outputs
    as they are, in order."""
    out: dict[str, np.ndarray] = {}
    for name, a in outputs.items():
        if name not in heads:
            out[name] = a
            continue
        axis, first = heads[name]
        fields_last = a if axis == 2 else np.moveaxis(a, 1, 2)
        out[boxes_name(name)] = fields_last[..., :first]
        out[scores_name(name)] = fields_last[..., first:]
    return out
