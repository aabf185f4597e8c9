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

from onnxcompress._ir_utils import const_array, set_weight
from onnxcompress.analysis.macs import gemm_macs, matmul_macs
from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.rules.consumer import ConsumerHooks, FoldContext, bias_matrix, write_bias
from onnxcompress.channels.rules.heads import (join_dims, join_scores, join_weighted, scores_const, scores_meet_softmax,
                                               softmax_over, weighted_const)
from onnxcompress.channels.state import ChannelInfo


def _attr(node: ir.Node, name: str, default: int = 0) -> int:
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def _source(node: ir.Node, ctx: AnalysisContext, n_out: int, axis: int, w_axis: int) -> np.ndarray:
    """New prunable output features, with the weight's output axis as their filter slot."""
    ids = ctx.fresh(n_out, source=True)
    if ctx.excluded(node):
        ctx.fix(ids, node, "excluded by --exclude")
    ctx.add_slot(node, node.inputs[1], w_axis, ids, "out")
    ctx.set(node.outputs[0], ChannelInfo((axis,), ids))
    return ids


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    a = node.attributes.get(name)
    return a.as_float() if a is not None else default


class GemmConsumer(ConsumerHooks):
    """A Gemm reading pruned features: folded into C (rescaled by alpha/beta), refit as W (or W^T)."""

    def add_bias(self, app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
        dtype = app.tensor(node.inputs[1]).dtype
        alpha = _float_attr(node, "alpha", 1.0)
        beta = _float_attr(node, "beta", 1.0)
        c_val = node.inputs[2] if len(node.inputs) > 2 else None
        c = app.tensor(c_val) if c_val is not None else None
        if c is not None and beta != 0 and c.size == delta.size:
            # A per-feature C is a bias slot: update it in place so slicing still finds it.
            app.write(c_val, (c.astype(np.float64) + (alpha / beta) * delta.reshape(c.shape)).astype(dtype))
            return
        full = alpha * delta
        if c is not None and beta != 0:
            full = full + beta * np.broadcast_to(c.astype(np.float64).reshape(-1), delta.shape)
        node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        app.set_input_const(node, 2, full.astype(dtype))
        app.track_new_bias(node, node.inputs[2])

    def refit_reason(self, node: ir.Node) -> str | None:
        if _attr(node, "transA") or _float_attr(node, "alpha", 1.0) != 1.0:
            return "Gemm with transA or alpha (not refit)"
        return None

    def matrices(self, node: ir.Node) -> tuple[np.ndarray, np.ndarray | None]:
        w = const_array(node.inputs[1]).astype(np.float64)
        mat = (w.T if _attr(node, "transB") else w)[None]
        return mat, bias_matrix(node, mat)

    def write(self, model: ir.Model, node: ir.Node, mat: np.ndarray, b: np.ndarray | None) -> None:
        w_old = const_array(node.inputs[1])
        set_weight(node.inputs[1], (mat[0].T if _attr(node, "transB") else mat[0]).astype(w_old.dtype))
        if b is not None:
            write_bias(model, node, b.reshape(-1), w_old.dtype)


@register("Gemm")
class GemmRule(Rule):
    always = True
    consumer = GemmConsumer()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return gemm_macs(node, shapes)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
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

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        out = node.outputs[0]
        ids = app.channels(out).ids
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
    #: x[..., K] @ W[K, N]: the default consumer (its folded bias is an Add after it)
    consumer = ConsumerHooks()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return matmul_macs(node, shapes)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        a_info = ctx.get(node.inputs[0])
        b_val = node.inputs[1]
        b = ctx.shape(b_val)
        rank = ctx.rank(node.inputs[0])
        if not ctx.is_const(b_val) and not ctx.is_const(node.inputs[0]):
            return _attention_matmul(node, ctx)
        if ctx.get(b_val) is not None or not ctx.is_const(b_val) or b is None or len(b) != 2 or rank is None:
            return ctx.block(node, "MatMul is pruned through only as x[..., C] @ W[C, N] with a constant W")
        if a_info is not None:
            if a_info.axes != (rank - 1,):
                return ctx.block(node, "MatMul input channels are not on its last axis")
            ctx.add_slot(node, b_val, 0, a_info.ids, "in")
        out_rank = ctx.rank(node.outputs[0]) or rank
        _source(node, ctx, int(b[1]), out_rank - 1, 1)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        out = node.outputs[0]
        ids = app.channels(out).ids
        if not app.is_const(node.inputs[1]) and not app.is_const(node.inputs[0]):
            app.set_const(out, _attention_const(node, app))
            return
        app.set_const(out, np.where(app.removed(ids), 0.0, np.nan))


#: why a MatMul of two run-time tensors is kept, unless it is one of attention's two products
ATTENTION_ONLY = ("MatMul of two run-time tensors is pruned through only as attention heads: "
                  "Q[..., h, T, d] @ K^T[..., h, d, S] or P[..., h, T, S] @ V[..., h, S, d], heads on a batch axis")


def _attention_matmul(node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
    """The two products of unfused attention, with the heads on a batch axis h.

    - scores = Q @ K^T, Q tracked on (h, d) and K^T on (h, d): each head's d channels of Q
      and K are one element (whole heads go), and the scores carry h. With ``--attention dims``,
      where the scores reach a softmax over keys, Q's dim j goes with K's instead and the
      scores carry nothing (see ``heads``);
    - out = P @ V, P tracked on (h,) and V on (h, d): P's head joins V's head. Where P carries
      nothing but is a softmax over S (its rows sum to 1), V's channels pass through.

    Removing a whole head is exact (see ``heads``): its output is V's constant, which folds
    into the output projection like any removed channel.
    """
    a, b = ctx.get(node.inputs[0]), ctx.get(node.inputs[1])
    ra, rb = ctx.rank(node.inputs[0]), ctx.rank(node.inputs[1])
    ro = ctx.rank(node.outputs[0])
    if b is None or ra is None or ra != rb or ra != ro or ra < 3:
        return ctx.block(node, ATTENTION_ONLY)
    if a is not None and len(a.axes) == 2 and a.axes[1] == ra - 1 and b.axes == (a.axes[0], rb - 2) and a.axes[0] < ra - 2:
        if a.ids.shape != b.ids.shape:
            return ctx.block(node, ATTENTION_ONLY)
        if ctx.attention == "dims" and scores_meet_softmax(ctx, node.outputs[0]):
            join_dims(ctx, a.ids, b.ids)
            return None
        ctx.set(node.outputs[0], ChannelInfo((a.axes[0],), join_scores(ctx, a.ids, b.ids)))
        return None
    if len(b.axes) == 2 and b.axes[1] == rb - 1 and b.axes[0] < rb - 2:
        if a is not None and a.axes == (b.axes[0],) and a.ids.shape[0] == b.ids.shape[0]:
            join_weighted(ctx, a.ids, b.ids)
            ctx.set(node.outputs[0], ChannelInfo(b.axes, b.ids))
            return None
        if a is None and softmax_over(node.inputs[0], -1, ra, ctx.opset):
            ctx.set(node.outputs[0], ChannelInfo(b.axes, b.ids))
            return None
    return ctx.block(node, ATTENTION_ONLY)


def _attention_const(node: ir.Node, app: RewriteContext) -> np.ndarray:
    """A removed head's constant after either product (NaN where unknown)."""
    cb = app.const_of(node.inputs[1])
    if app.channels(node.inputs[0]) is None:
        return cb.copy()  # P (a softmax over S) carries nothing: its rows sum to 1
    ca = app.const_of(node.inputs[0])
    if app.channels(node.outputs[0]).ids.ndim == 1:
        return scores_const(ca, cb)
    shape = app.shape(node.inputs[0])
    return weighted_const(ca, cb, shape[-1], softmax_over(node.inputs[0], -1, len(shape)))
