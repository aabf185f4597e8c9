"""Gemm and MatMul with a constant weight: their output features are prunable, like filters.

Input side: features arriving after Flatten/Reshape are blocks of H*W per channel (see
``layout``), so a channel's weight positions are all its blocks (a consumer slot).
Output side: each output feature is a new element with its weight column (or row, by
``transB``) as the filter and Gemm's C as the bias. Hidden features of an MLP head, or of
a channels-last block, are pruned this way; a classifier's outputs reach a graph output
and stay.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.state import ChannelInfo


def _attr(node: ir.Node, name: str, default: int = 0) -> int:
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def _source(node: ir.Node, ctx, n_out: int, axis: int, w_axis: int) -> np.ndarray:
    """New prunable output features, with the weight's output axis as their filter slot."""
    ids = ctx.fresh(n_out, source=True)
    if ctx.excluded(node):
        ctx.fix(ids, node, "excluded by --exclude")
    ctx.add_slot(node, node.inputs[1], w_axis, ids, "out")
    ctx.set(node.outputs[0], ChannelInfo((axis,), ids))
    return ids


@register("Gemm")
class GemmRule(Rule):
    always = True

    def propagate(self, node: ir.Node, ctx) -> None:
        info = ctx.get(node.inputs[0])
        b_val = node.inputs[1]
        b = ctx.shape(b_val)
        if b is None or not ctx.is_const(b_val) or _attr(node, "transA") or ctx.get(b_val) is not None:
            return ctx.block(node, "Gemm with transA or a run-time weight")
        trans_b = _attr(node, "transB")
        if info is not None:
            if info.axes != (1,):
                return ctx.block(node, "Gemm input channels on an unexpected axis")
            ctx.add_slot(node, b_val, 1 if trans_b else 0, info.ids, "in")
        n_out = int(b[0] if trans_b else b[1])
        ids = _source(node, ctx, n_out, 1, 0 if trans_b else 1)
        c_val = node.inputs[2] if len(node.inputs) > 2 else None
        if c_val is None:
            return
        c = ctx.const(c_val)
        if c is None or ctx.get(c_val) is not None:
            ctx.fix(ids, node, "Gemm bias is computed at run time")
        elif c.size == n_out and c.shape[-1] == n_out:
            ctx.add_slot(node, c_val, c.ndim - 1, ids, "bias")
        elif c.size != 1:
            ctx.fix(ids, node, "Gemm bias varies per row")

    def const_eval(self, node: ir.Node, app) -> None:
        out = node.outputs[0]
        ids = app.analysis.info[out].ids
        value = np.zeros(ids.shape)
        c_val = node.inputs[2] if len(node.inputs) > 2 else None
        if c_val is not None:
            c = app.tensor(c_val).astype(np.float64)
            beta = node.attributes["beta"].as_float() if "beta" in node.attributes else 1.0
            # A per-feature C is zeroed with --zero-bias; a scalar C cannot be.
            if c.size == 1 or not app.zero_bias:
                value = beta * np.broadcast_to(c.reshape(-1), ids.shape)
        app.set_const(out, np.where(app.removed(ids), value, np.nan))


@register("MatMul")
class MatMulRule(Rule):
    always = True

    def propagate(self, node: ir.Node, ctx) -> None:
        a_info = ctx.get(node.inputs[0])
        b_val = node.inputs[1]
        b = ctx.shape(b_val)
        rank = ctx.rank(node.inputs[0])
        if ctx.get(b_val) is not None or not ctx.is_const(b_val) or b is None or len(b) != 2 or rank is None:
            return ctx.block(node, "MatMul is pruned through only as x[..., C] @ W[C, N] with a constant W")
        if a_info is not None:
            if a_info.axes != (rank - 1,):
                return ctx.block(node, "MatMul input channels are not on its last axis")
            ctx.add_slot(node, b_val, 0, a_info.ids, "in")
        out_rank = ctx.rank(node.outputs[0]) or rank
        _source(node, ctx, int(b[1]), out_rank - 1, 1)

    def const_eval(self, node: ir.Node, app) -> None:
        out = node.outputs[0]
        ids = app.analysis.info[out].ids
        app.set_const(out, np.where(app.removed(ids), 0.0, np.nan))
