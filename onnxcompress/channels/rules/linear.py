"""Gemm and MatMul: consumers of channels (their weight rows shrink); their outputs are kept.

Features arriving after Flatten/Reshape are blocks of H*W per channel (see ``layout``), so
the weight positions of a channel are all its blocks. The output features are tracked
(so residuals or gates that meet them are coupled correctly) but never pruned.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.state import ChannelInfo


def _attr(node: ir.Node, name: str, default: int = 0) -> int:
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def _kept_output(node: ir.Node, ctx, n_out: int, axis: int) -> None:
    ids = ctx.fresh(n_out, fixed=True)  # output features of a linear layer are not pruned
    ctx.set(node.outputs[0], ChannelInfo((axis,), ids))


@register("Gemm")
class GemmRule(Rule):
    always = False

    def propagate(self, node: ir.Node, ctx) -> None:
        info = ctx.get(node.inputs[0])
        b_val = node.inputs[1]
        b = ctx.shape(b_val)
        if info is None or b is None:
            ctx.block(node, "Gemm without a tracked input")
            return
        if _attr(node, "transA") or info.axes != (1,) or not ctx.is_const(b_val):
            ctx.block(node, "Gemm with transA or a run-time weight")
            return
        if ctx.get(node.inputs[1]) is not None:
            ctx.block(node, "Gemm weight carries channels")
            return
        trans_b = _attr(node, "transB")
        ctx.add_slot(node, b_val, 1 if trans_b else 0, info.ids, "in")
        n_out = int(b[0] if trans_b else b[1])
        _kept_output(node, ctx, n_out, 1)


@register("MatMul")
class MatMulRule(Rule):
    def propagate(self, node: ir.Node, ctx) -> None:
        a_info = ctx.get(node.inputs[0])
        b_val = node.inputs[1]
        b = ctx.shape(b_val)
        rank = ctx.rank(node.inputs[0])
        if (
            a_info is None
            or ctx.get(b_val) is not None
            or not ctx.is_const(b_val)
            or b is None
            or len(b) != 2
            or rank is None
            or a_info.axes != (rank - 1,)
        ):
            ctx.block(node, "MatMul is pruned through only as x[..., C] @ W[C, N] with a constant W")
            return
        ctx.add_slot(node, b_val, 0, a_info.ids, "in")
        out_rank = ctx.rank(node.outputs[0]) or rank
        _kept_output(node, ctx, int(b[1]), out_rank - 1)
