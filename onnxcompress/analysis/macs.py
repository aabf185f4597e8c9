"""The MAC formulas of the ops that count (see ``analysis.cost`` for the convention).

Each op's rule owns its cost (``Rule.macs``) and calls these; the formulas live here so
that the rules and the cost summary share one copy.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape


def prod(xs) -> int:
    return int(np.prod(xs, dtype=np.int64)) if len(xs) else 1


def in_shape(node: ir.Node, index: int, shapes: dict[str, Shape]) -> Shape | None:
    """Static shape of input ``index``; None when it is absent or unsized."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    return shapes.get(node.inputs[index].name)


def int_attr(node: ir.Node, name: str, default: int) -> int:
    return node.attributes[name].as_int() if name in node.attributes else default


def conv_macs(node: ir.Node, shapes: dict[str, Shape], w_index: int = 1) -> int:
    """Output elements x (C_in / group) x prod(kernel), the weight at input ``w_index``."""
    if not node.outputs:
        return 0
    out = shapes.get(node.outputs[0].name)
    w = in_shape(node, w_index, shapes)
    if out is None or w is None or len(w) < 2:
        return 0
    return prod(out) * int(w[1]) * prod(w[2:])


def convtranspose_macs(node: ir.Node, shapes: dict[str, Shape]) -> int:
    """Input elements x (C_out / group) x prod(kernel): the weight is [C_in, C_out / group, *kernel]."""
    x = in_shape(node, 0, shapes)
    w = in_shape(node, 1, shapes)
    if x is None or w is None:
        return 0
    return prod(x) * int(w[1]) * prod(w[2:])


def matmul_macs(node: ir.Node, shapes: dict[str, Shape], k_axis: int = -1) -> int:
    """Output elements x K, K read from input 0's axis ``k_axis``."""
    if not node.outputs:
        return 0
    out = shapes.get(node.outputs[0].name)
    a = in_shape(node, 0, shapes)
    if out is None or not a:
        return 0
    return prod(out) * int(a[k_axis])


def gemm_macs(node: ir.Node, shapes: dict[str, Shape]) -> int:
    return matmul_macs(node, shapes, 0 if int_attr(node, "transA", 0) else 1)


def recurrent_macs(node: ir.Node, shapes: dict[str, Shape], gates: int, transposed: bool) -> int:
    """seq x batch x directions x gates*hidden x (input + hidden): the per-step matmuls.

    ``transposed`` weights are [directions, input, gates*hidden] and
    [directions, hidden, gates*hidden], the layout of com.microsoft.DynamicQuantizeLSTM.
    """
    x = in_shape(node, 0, shapes)
    w = in_shape(node, 1, shapes)
    r = in_shape(node, 2, shapes)
    if x is None or w is None or len(x) != 3 or len(w) != 3:
        return 0
    seq, batch = (x[1], x[0]) if int_attr(node, "layout", 0) == 1 else (x[0], x[1])
    dirs, in_size, gh = (w[0], w[1], w[2]) if transposed else (w[0], w[2], w[1])
    hidden = int_attr(node, "hidden_size", 0)
    if not hidden and r is not None and len(r) == 3:
        hidden = r[1] if transposed else r[2]
    hidden = hidden or gh // gates
    return int(seq) * int(batch) * int(dirs) * int(gh) * (int(in_size) + int(hidden))


def recurrent(gates: int, transposed: bool = False):
    """The MAC function of a recurrent op with ``gates`` gates (see ``recurrent_macs``)."""
    return lambda node, shapes: recurrent_macs(node, shapes, gates, transposed)
