"""Which weights distillation trains: all of them, or only those pruning and refit changed.

``--distill-train changed`` freezes every weight that is still the original's: same name,
shape and values in the pruned graph as in the original (initializer or Constant node). The
layers before the first pruned group, and those pruning left alone after it, then keep the
original's weights exactly, and backward stops at the first trained layer. Weights the
pruning sliced or the refit solved are trained as with ``all``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import const_array, is_std


def weight_values(model: ir.Model) -> dict[str, ir.Value]:
    """Every constant tensor of the main graph by value name: initializers and Constant-node outputs."""
    values = dict(model.graph.initializers)
    for node in model.graph:
        if node.op_type == "Constant" and is_std(node) and node.outputs[0].name not in values:
            values[node.outputs[0].name] = node.outputs[0]
    return values


def unchanged_weights(student: ir.Model, teacher: ir.Model) -> set[str]:
    """Names of the student's float constants equal, in shape and every value, to the teacher's of that name."""
    original = weight_values(teacher)
    same = set()
    for name, value in weight_values(student).items():
        if name not in original:
            continue
        mine, theirs = const_array(value), const_array(original[name])
        if (mine is not None and theirs is not None and mine.dtype.kind == "f" and mine.shape == theirs.shape
                and np.array_equal(mine, theirs)):
            same.add(name)
    return same


def frozen_for(mode: str, student: ir.Model, teacher: ir.Model) -> frozenset[str]:
    """The student's constants that ``mode`` keeps out of training (``GraphModule(frozen=...)``)."""
    if mode == "all":
        return frozenset()
    if mode != "changed":
        raise ValueError(f"distillation trains 'all' or 'changed' weights, not {mode!r}")
    return frozenset(unchanged_weights(student, teacher))
