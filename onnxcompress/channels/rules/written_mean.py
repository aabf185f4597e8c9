"""A mean over the channels written out as a sum and a constant: ``ReduceSum(x) * (1/C)`` or ``/ C``.

jax2tf and some TensorFlow exports spell a LayerNorm's statistics this way instead of
``ReduceMean`` (magika: ``ReduceSum(x, keepdims=0) * 0.001953125`` for C = 512, and
``ReduceSum(x * x) * 1/C - mean^2`` for the variance). Such a sum is the mean of the channels,
so removing channels is lossy exactly as for ``ReduceMean`` (``spatial.ReduceRule``): the
pruned model must take the mean of the kept channels, which means rewriting the constant
to ``1/kept`` (or ``kept``). A sum whose one consumer is not such a constant is a real sum,
and still blocks.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper as oh

from onnxcompress.channels.protocols import ConstantReader, RewriteContext

#: how closely the constant must match 1/C (or C), at least (float32); a float16 constant gets its own precision
REL_TOL = 1e-4


def mean_scale(node: ir.Node, ctx: ConstantReader, channels: int) -> tuple[ir.Node, int] | None:
    """The (consumer, constant input index) that makes ``node``'s sum over ``channels`` a mean, or None.

    The sum's only reader must be ``Mul`` by the scalar constant 1/C (either side) or ``Div``
    of the sum by the scalar constant C; the sum itself must not be a graph output.
    """
    out = node.outputs[0]
    uses = list(out.uses())
    if out.is_graph_output() or len(uses) != 1 or channels < 1:
        return None
    user, idx = uses[0].node, uses[0].idx
    if user.domain not in ("", "ai.onnx") or len(user.inputs) != 2:
        return None
    other = 1 - idx
    c = ctx.const(user.inputs[other])
    if c is None or c.size != 1:
        return None
    value = float(c.ravel()[0])
    # the constant as stored: float16 holds 1/768 only to 2.4e-4
    tol = max(REL_TOL, float(np.finfo(c.dtype).eps)) if np.issubdtype(c.dtype, np.floating) else REL_TOL
    if user.op_type == "Mul":
        want = 1.0 / channels
    elif user.op_type == "Div" and idx == 0:
        want = float(channels)
    else:
        return None
    return (user, other) if abs(value - want) <= tol * want else None


def rewrite_scale(node: ir.Node, app: RewriteContext) -> None:
    """After removal: the consumer's constant becomes 1/kept (Mul) or kept (Div), as its own initializer."""
    info = app.channels(node.inputs[0])
    if info is None:
        return
    found = mean_scale(node, app, int(info.ids.shape[0]))
    if found is None:  # the analysis saw this pattern; a changed graph is not ours to guess at
        return
    user, index = found
    kept = app.kept_count(node.inputs[0])
    if kept == int(info.ids.shape[0]):
        return
    old = app.tensor(user.inputs[index])
    value = 1.0 / kept if user.op_type == "Mul" else float(kept)
    app.set_input_const(user, index, np.full(old.shape, value, dtype=old.dtype))


def masked_reduce(pnode: onnx.NodeProto, mask: str, factor: str, out: str) -> list[onnx.NodeProto]:
    """``pnode`` (a reduction over the channels) of ``x * mask``, times ``factor`` = C / kept.

    For a sum that a constant 1/C turns into a mean, the consumer then reads the mean of the
    kept channels: what the pruned model computes once ``rewrite_scale`` has run.
    """
    xm, raw = f"{out}__masked", f"{out}__reduced_all"
    reduce = onnx.NodeProto()
    reduce.CopyFrom(pnode)
    reduce.name = f"{out}__reduce"
    reduce.input[0] = xm
    del reduce.output[:]
    reduce.output.append(raw)
    return [oh.make_node("Mul", [pnode.input[0], mask], [xm]), reduce, oh.make_node("Mul", [raw, factor], [out])]
