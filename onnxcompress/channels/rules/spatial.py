"""Ops that work on each channel's spatial map alone: pooling, Resize/Upsample, Pad, spatial Reduce.

A removed channel is spatially uniform, so these ops pass its constant through unchanged,
except where padding brings in other values (AveragePool counting pads, constant Pad).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, ChannelInfoLike, ConstantReader, Lossy, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, channels_on_axis1, register
from onnxcompress.channels.rules.simulate import masked_mean
from onnxcompress.channels.rules.written_mean import masked_reduce, mean_scale, rewrite_scale
from onnxcompress.channels.state import ChannelInfo


class PassThroughRule(Rule):
    """Output channels are the input channels; their constant values pass unchanged."""

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        if any(ctx.get(v) is not None for v in node.inputs[1:] if v is not None):
            return ctx.block(node, f"{node.op_type} with a channel tensor as a parameter")
        if not self.channels_untouched(node, ctx, info):
            return
        ctx.set(node.outputs[0], info)

    def channels_untouched(self, node: ir.Node, ctx: AnalysisContext, info: ChannelInfoLike) -> bool:
        return True

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        app.set_const(node.outputs[0], app.const_of(node.inputs[0]))


@register("MaxPool", "GlobalAveragePool", "GlobalMaxPool", "MaxRoiPool")
class PoolRule(PassThroughRule):
    def channels_untouched(self, node: ir.Node, ctx: AnalysisContext, info: ChannelInfoLike) -> bool:
        return channels_on_axis1(node, ctx, info)


@register("LpPool", "GlobalLpPool")
class LpPoolRule(PoolRule):
    """A window of k equal values c gives (k |c|^p)^(1/p) = |c| k^(1/p)."""

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        c = app.const_of(node.inputs[0])
        p_attr = node.attributes.get("p")
        p = float(p_attr.as_int() if p_attr is not None else 2)
        if node.op_type == "GlobalLpPool":
            shape = app.shape(node.inputs[0])
            k = float(np.prod(shape[2:])) if shape is not None else np.nan
        else:
            k = float(np.prod(node.attributes["kernel_shape"].as_ints()))
            pads = node.attributes.get("pads")
            if pads is not None and any(pads.as_ints()):
                app.inexact(f"LpPool {node.name} pads: border windows hold fewer copies of removed channels' constants")
        app.set_const(node.outputs[0], np.abs(c) * k ** (1.0 / p))


@register("AveragePool")
class AveragePoolRule(PoolRule):
    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        pads = node.attributes.get("pads")
        counts_pad = node.attributes.get("count_include_pad")
        if counts_pad is not None and counts_pad.as_int() and pads is not None and any(pads.as_ints()):
            app.inexact(f"AveragePool {node.name} averages zero padding into removed channels' constants")
        super().const_eval(node, app)


def _channel_scale_is_one(node: ir.Node, ctx: AnalysisContext, info: ChannelInfoLike) -> bool:
    a, b = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if a is None or b is None:
        return False
    return all(a[ax] == b[ax] for ax in info.axes)


@register("Resize", "Upsample")
class ResizeRule(PassThroughRule):
    def channels_untouched(self, node: ir.Node, ctx: AnalysisContext, info: ChannelInfoLike) -> bool:
        if not _channel_scale_is_one(node, ctx, info):
            ctx.block(node, f"{node.op_type} resizes the channel axis")
            return False
        return True

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        # Explicit output sizes spell the channel count.
        if node.op_type != "Resize" or len(node.inputs) < 4 or node.inputs[3] is None:
            return
        sizes = app.tensor(node.inputs[3])
        if sizes is None or sizes.size == 0:
            return
        sizes = sizes.astype(np.int64).copy()
        info = app.channels(node.outputs[0])
        for ax, n in zip(info.axes, app.kept_counts(node.outputs[0])):
            sizes[ax] = n
        app.set_input_const(node, 3, sizes)


@register("Pad")
class PadRule(PassThroughRule):
    def _pads(self, node: ir.Node, ctx: AnalysisContext):
        a = node.attributes.get("pads") or node.attributes.get("paddings")
        if a is not None:
            return list(a.as_ints())
        c = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
        return None if c is None else [int(x) for x in c.ravel()]

    def channels_untouched(self, node: ir.Node, ctx: AnalysisContext, info: ChannelInfoLike) -> bool:
        pads = self._pads(node, ctx)
        rank = ctx.rank(node.inputs[0])
        if pads is None or rank is None:
            ctx.block(node, "Pad with run-time pads")
            return False
        axes_in = None
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            c = ctx.const(node.inputs[3])
            if c is None:
                ctx.block(node, "Pad with run-time axes")
                return False
            axes_in = [int(x) % rank for x in c.ravel()]
        axes = axes_in or list(range(rank))
        n = len(axes)
        for k, ax in enumerate(axes):
            if ax in info.axes and (pads[k] or pads[k + n]):
                ctx.block(node, "Pad on the channel axis")
                return False
        return True

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        mode = node.attributes.get("mode")
        if mode is None or mode.as_string() == "constant":
            app.inexact(f"Pad {node.name} pads removed channels' constants with its pad value")
        super().const_eval(node, app)


@register("ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSum", "ReduceL1", "ReduceLogSumExp", "ReduceSumSquare")
class ReduceRule(Rule):
    """Reductions over spatial axes keep channels (an SE block's squeeze).

    A ReduceMean over exactly the channel axis, keeping it (as size 1), is the statistic of a
    decomposed LayerNorm or RMSNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul,
    Add: what opset < 17 exports emit): the mean then covers only the kept channels, so it is
    ``Lossy``. Its output carries no channels; the Sub or Div it feeds broadcasts it. So is a
    ReduceSum over exactly the channel axis (kept or not) whose one reader multiplies it by 1/C
    (or divides it by C): a mean written out (``written_mean``), whose constant the rewrite
    sets to 1/kept. Other reductions over channels block.
    """

    def _axes(self, node: ir.Node, ctx: ConstantReader, rank: int) -> list[int] | None:
        a = node.attributes.get("axes")
        if a is not None:
            return [x % rank for x in a.as_ints()]
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            c = ctx.const(node.inputs[1])
            if c is None:
                return None
            if c.size:
                return [int(x) % rank for x in c.ravel()]
        # no axes, or an empty list: every axis, unless noop_with_empty_axes makes it an identity
        noop = node.attributes.get("noop_with_empty_axes")
        return [] if noop is not None and noop.as_int() else list(range(rank))

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        axes = self._axes(node, ctx, rank) if rank is not None else None
        keep = node.attributes.get("keepdims")
        keepdims = keep.as_int() if keep is not None else 1
        if axes is not None and node.op_type == "ReduceMean" and keepdims and sorted(axes) == list(info.axes):
            return Lossy("ReduceMean over the channel axis (a LayerNorm's statistics): the mean covers only the kept channels")
        if axes is not None and node.op_type == "ReduceSum" and sorted(axes) == list(info.axes) \
                and len(info.axes) == 1 and mean_scale(node, ctx, int(info.ids.shape[0])) is not None:
            ctx.needs_rewrite(node)
            return Lossy("ReduceSum times 1/C over the channel axis (a LayerNorm's statistics, written out): "
                         "the mean covers only the kept channels")
        if axes is None or any(ax in info.axes for ax in axes):
            return ctx.block(node, f"{node.op_type} over the channel axis")
        new = info.axes if keepdims else tuple(ax - sum(1 for a in axes if a < ax) for ax in info.axes)
        ctx.set(node.outputs[0], ChannelInfo(new, info.ids))

    @staticmethod
    def simulate(pnode: onnx.NodeProto, mask: str, factor: str, axis: int, opset: int,
                 dtype: np.dtype) -> list[onnx.NodeProto]:
        """The lossy ReduceMean over the channels, replaced by the mean of the kept channels only
        (a written-out mean's sum: the sum of the kept channels times C / kept)."""
        if pnode.op_type == "ReduceSum":
            return masked_reduce(pnode, mask, factor, pnode.output[0])
        return masked_mean(pnode.input[0], mask, factor, axis, opset, pnode.output[0])

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        """A written-out mean's constant becomes 1/kept; every other reduction spells no channel count."""
        if node.op_type == "ReduceSum" and app.channels(node.outputs[0]) is None:
            rewrite_scale(node, app)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        shape_in = app.shape(node.inputs[0])
        rank = len(shape_in)
        n = int(np.prod([shape_in[a] for a in self._axes(node, app, rank)], dtype=np.int64))
        op = node.op_type
        with np.errstate(all="ignore"):
            if op in ("ReduceMean", "ReduceMax", "ReduceMin"):
                y = x
            elif op == "ReduceSum":
                y = x * n
            elif op == "ReduceL1":
                y = np.abs(x) * n
            elif op == "ReduceL2":
                y = np.abs(x) * np.sqrt(n)
            elif op == "ReduceSumSquare":
                y = x * x * n
            else:  # ReduceLogSumExp
                y = x + np.log(n)
        app.set_const(node.outputs[0], y)


@register("Softmax", "LogSoftmax", since=13)
class SoftmaxRule(Rule):
    """Softmax over a non-channel axis keeps channels apart; over the channels it mixes them.

    Before opset 13 (``FlatSoftmaxRule``) the input is flattened from the axis on: every axis
    from there is normalised together.
    """

    #: opset 13 normalises one axis (default -1); before, every axis from ``axis`` (default 1)
    flattens = False

    def _axes(self, node: ir.Node, rank: int) -> range:
        a = node.attributes.get("axis")
        axis = (a.as_int() if a is not None else (1 if self.flattens else -1)) % rank
        return range(axis, rank) if self.flattens else range(axis, axis + 1)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        if any(ax in info.axes for ax in self._axes(node, rank)):
            return ctx.block(node, f"{node.op_type} over the channel axis mixes channels")
        ctx.set(node.outputs[0], info)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        """A removed channel is one constant along the axis: its softmax is uniform."""
        x = app.const_of(node.inputs[0])
        shape = app.shape(node.inputs[0])
        n = float(np.prod([shape[ax] for ax in self._axes(node, len(shape))]))
        y = np.full(x.shape, 1.0 / n) if node.op_type == "Softmax" else np.full(x.shape, -np.log(n))
        app.set_const(node.outputs[0], np.where(np.isnan(x), np.nan, y))


@register("Softmax", "LogSoftmax", until=12)
class FlatSoftmaxRule(SoftmaxRule):
    flattens = True


@register("Shape", "Size")
class ShapeRule(Rule):
    """Shape and Size read a tensor's size at run time: they adapt to pruned widths by themselves.

    What consumes the shape (a Reshape target, say) is checked by that consumer's rule.
    """

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        return None
