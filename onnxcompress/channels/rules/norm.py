"""Normalisations: per channel (BN, InstanceNorm: exact), per group of channels (GroupNorm:
exact when groups go whole) and over the channel axis (LayerNormalization, RMSNorm: lossy,
since their statistics cover only the kept channels); the rest block."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper as oh

from onnxcompress.channels.protocols import AnalysisContext, Lossy, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, channels_on_axis1, register
from onnxcompress.channels.rules.heads import tie_each_row
from onnxcompress.channels.rules.simulate import masked_mean, scalar


def _channel_info(node: ir.Node, ctx: AnalysisContext):
    info = ctx.get(node.inputs[0])
    return info if info is not None and channels_on_axis1(node, ctx, info) else None


@register("BatchNormalization")
class BatchNormRule(Rule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = _channel_info(node, ctx)
        if info is None:
            return
        spatial = node.attributes.get("spatial")
        if spatial is not None and spatial.as_int() == 0:
            return ctx.block(node, "BatchNormalization with spatial=0 (per-element statistics)")
        params = node.inputs[1:5]
        if not all(ctx.is_const(p) for p in params):
            return ctx.block(node, "BatchNormalization with run-time statistics")
        for p in params:
            ctx.add_slot(node, p, 0, info.ids, "param")
        ctx.set(node.outputs[0], info)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        scale, bias, mean, var = (app.tensor(v).astype(np.float64) for v in node.inputs[1:5])
        eps = node.attributes["epsilon"].as_float() if "epsilon" in node.attributes else 1e-5
        app.set_const(node.outputs[0], scale * (x - mean) / np.sqrt(var + eps) + bias)


@register("InstanceNormalization")
class InstanceNormRule(Rule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = _channel_info(node, ctx)
        if info is None:
            return
        if not all(ctx.is_const(p) for p in node.inputs[1:3]):
            return ctx.block(node, "InstanceNormalization with run-time parameters")
        for p in node.inputs[1:3]:
            ctx.add_slot(node, p, 0, info.ids, "param")
        ctx.set(node.outputs[0], info)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        # A spatially constant channel normalises to 0, so the output is the bias.
        x = app.const_of(node.inputs[0])
        bias = app.tensor(node.inputs[2]).astype(np.float64)
        app.set_const(node.outputs[0], np.where(np.isnan(x), np.nan, bias))


def normalise_groups(x: np.ndarray, groups: int, node: ir.Node) -> np.ndarray:
    """(groups, C/G): per-channel constants ``x`` normalised over each group (``node``'s epsilon),
    what a group norm makes of channels that are spatially constant."""
    rows = x.astype(np.float64).reshape(groups, -1)
    eps = node.attributes["epsilon"].as_float() if "epsilon" in node.attributes else 1e-5
    d = rows - rows.mean(axis=1, keepdims=True)
    return d / np.sqrt((d * d).mean(axis=1, keepdims=True) + eps)


def _num_groups(node: ir.Node) -> int:
    a = node.attributes.get("num_groups")
    return a.as_int() if a is not None else 0


@register("GroupNormalization", since=18)
class GroupNormRule(Rule):
    """GroupNormalization: C channels normalised in ``num_groups`` groups of C/G, each over its
    channels and positions together.

    A group goes whole: its channels are one element, so a kept group is normalised exactly as
    before. A removed group's channels carry per-channel constants c, and its statistics are
    then c's alone: its outputs are ``scale * (c - mean(c)) / sqrt(var(c) + eps) + bias``,
    constants again, so removal is exact. ``num_groups`` is rewritten to the groups kept; the
    scale and bias shrink with the channels (opset 21: one per channel) or with the groups
    (opset 18: one per group).
    """

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = _channel_info(node, ctx)
        if info is None:
            return None
        groups, c = _num_groups(node), info.ids.shape[0]
        if groups <= 0 or c % groups:
            return ctx.block(node, f"GroupNormalization with {c} channels in {groups} groups")
        rows = info.ids.reshape(groups, c // groups)
        per_channel = ctx.opset >= 21
        for p in node.inputs[1:3]:
            v = ctx.const(p)
            if v is None or ctx.get(p) is not None:
                return ctx.block(node, "GroupNormalization with a run-time scale or bias")
            if v.shape != ((c,) if per_channel else (groups,)):
                return ctx.block(node, f"GroupNormalization scale or bias of shape {v.shape}")
        tie_each_row(ctx, rows)
        for p in node.inputs[1:3]:
            ctx.add_slot(node, p, 0, info.ids if per_channel else rows[:, 0].copy(), "param")
        ctx.set(node.outputs[0], info)
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        groups = _num_groups(node)
        normed = normalise_groups(x, groups, node).ravel()
        scale, bias = (app.tensor(v).astype(np.float64) for v in node.inputs[1:3])
        if scale.size == groups and x.size != groups:  # opset 18: one per group
            scale, bias = np.repeat(scale, x.size // groups), np.repeat(bias, x.size // groups)
        app.set_const(node.outputs[0], scale * normed + bias)

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        c = app.channels(node.inputs[0]).ids.shape[0]
        kept = app.kept_count(node.inputs[0]) // (c // _num_groups(node))
        node.attributes["num_groups"] = ir.AttrInt64("num_groups", int(kept))


LAYERNORM_LOSS = "its mean and variance cover only the kept channels"


def per_channel_params(node: ir.Node, ctx: AnalysisContext, indices: tuple[int, ...], ids: np.ndarray) -> str | None:
    """Register the constant scale, shift or bias inputs at ``indices`` (one value per channel, or
    one for all) as slots over ``ids``; why not, where one is not such a constant."""
    for i in indices:
        p = node.inputs[i] if len(node.inputs) > i else None
        if p is None:
            continue
        c = ctx.const(p)
        if c is None or ctx.get(p) is not None:
            return f"{node.op_type} with a run-time scale or bias"
        if c.size == 1:
            continue
        if c.shape[-1] != ids.shape[0] or c.size != c.shape[-1]:
            return f"{node.op_type} scale or bias is not one value per channel"
        ctx.add_slot(node, p, c.ndim - 1, ids, "param")
    return None


class ChannelStatisticsRule(Rule):
    """A norm over the channel axis alone (LayerNorm, RMSNorm) of a channels-last tensor.

    Channels pass through and its scale (and bias) shrink with them, so a residual stream can
    be pruned across every block it touches. Removal is not exact: the statistics of the
    remaining channels differ from those of all of them, so the outcome is ``Lossy`` and
    calibration must justify it (measured drift, consumer refit). A removed channel's output
    is data dependent, so its constant is unknown; with calibration the consumers get its
    measured mean instead.
    """

    #: input indices of the per-channel parameters (scale, bias)
    params: tuple[int, ...] = (1, 2)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        if info is None:
            return None
        a = node.attributes.get("axis")
        axis = a.as_int() if a is not None else -1
        if rank is None or axis % rank != rank - 1 or info.axes != (rank - 1,):
            return ctx.block(node, f"{node.op_type} normalises over more than the channel axis "
                                   "(channels are tracked only when it normalises the last axis, and they lie there)")
        if any(ctx.get(o) is not None or o.uses() for o in node.outputs[1:]):
            return ctx.block(node, f"{node.op_type}'s mean or inverse-deviation output is used")
        why = per_channel_params(node, ctx, self.params, info.ids)
        if why is not None:
            return ctx.block(node, why)
        ctx.set(node.outputs[0], info)
        return Lossy(f"{node.op_type}: {LAYERNORM_LOSS}")


    #: LayerNorm subtracts the mean; RMSNorm does not
    centred = True

    def simulate(self, pnode: onnx.NodeProto, mask: str, factor: str, axis: int, opset: int,
                 dtype: np.dtype) -> list[onnx.NodeProto]:
        """The norm over the kept channels only: masked mean and variance, then its scale and bias."""
        ins = list(pnode.input) + ["", ""]
        eps = next((a.f for a in pnode.attribute if a.name == "epsilon"), 1e-5)
        return norm_over_kept(ins[0], ins[1], ins[2] if self.centred else "", pnode.output[0], eps, self.centred,
                              mask, factor, axis, opset, dtype)


def norm_over_kept(x: str, scale: str, shift: str, out: str, eps: float, centred: bool, mask: str, factor: str,
                   axis: int, opset: int, dtype: np.dtype) -> list[onnx.NodeProto]:
    """Nodes computing ``out`` = LayerNorm (``centred``) or RMSNorm of ``x`` over the kept channels
    on ``axis`` (``mask``, ``factor``: see ``simulate``), times ``scale``, plus ``shift`` ("" for none)."""
    p = f"{out}__sim"
    nodes: list[onnx.NodeProto] = [scalar(f"{p}_eps", eps, dtype)]
    if centred:
        nodes += masked_mean(x, mask, factor, axis, opset, f"{p}_mu")
        nodes.append(oh.make_node("Sub", [x, f"{p}_mu"], [f"{p}_d"]))
    else:
        nodes.append(oh.make_node("Identity", [x], [f"{p}_d"]))
    nodes += [oh.make_node("Mul", [f"{p}_d", f"{p}_d"], [f"{p}_sq"]),
              *masked_mean(f"{p}_sq", mask, factor, axis, opset, f"{p}_var"),
              oh.make_node("Add", [f"{p}_var", f"{p}_eps"], [f"{p}_ve"]),
              oh.make_node("Sqrt", [f"{p}_ve"], [f"{p}_sd"]),
              oh.make_node("Div", [f"{p}_d", f"{p}_sd"], [f"{p}_n"])]
    y = f"{p}_n"
    if scale:
        nodes.append(oh.make_node("Mul", [y, scale], [f"{p}_s"]))
        y = f"{p}_s"
    if shift:
        nodes.append(oh.make_node("Add", [y, shift], [f"{p}_b"]))
        y = f"{p}_b"
    nodes.append(oh.make_node("Identity", [y], [out]))
    return nodes


@register("LayerNormalization", domain="com.microsoft")
@register("LayerNormalization", since=17)
class LayerNormRule(ChannelStatisticsRule):
    pass


@register("SimplifiedLayerNormalization", domain="com.microsoft")
@register("RMSNormalization", since=23)
class RMSNormRule(ChannelStatisticsRule):
    """RMSNorm (onnxruntime's SimplifiedLayerNormalization, opset 23's RMSNormalization): a scale, no bias."""

    params = (1,)
    centred = False
