"""Masked simulations of lossy removals, for the sensitivity model (``pruning.sensitivity``).

The sensitivity model feeds each lossy node a channel mask (1 kept, 0 removed, broadcast
along the channel axis) and ``factor`` = channels / kept channels. A mean over the
channels of ``x * mask``, times ``factor``, is the mean over the kept channels only: what
the pruned model computes. These builders return ONNX nodes; every name they create starts
with the node's output name, so two simulations never collide.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper as oh


def masked_mean(x: str, mask: str, factor: str, axis: int, opset: int, out: str) -> list[onnx.NodeProto]:
    """``out`` = mean of ``x`` over the kept channels on ``axis`` (kept as size 1)."""
    xm, raw = f"{out}__masked", f"{out}__mean_all"
    if opset >= 18:
        axes = f"{out}__axes"
        reduce = [oh.make_node("Constant", [], [axes], value=oh.make_tensor(axes, onnx.TensorProto.INT64, [1], [axis])),
                  oh.make_node("ReduceMean", [xm, axes], [raw], keepdims=1)]
    else:
        reduce = [oh.make_node("ReduceMean", [xm], [raw], axes=[axis], keepdims=1)]
    return [oh.make_node("Mul", [x, mask], [xm]), *reduce, oh.make_node("Mul", [raw, factor], [out])]


def scalar(name: str, value: float, dtype: np.dtype) -> onnx.NodeProto:
    return oh.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.array([value], dtype), name))
