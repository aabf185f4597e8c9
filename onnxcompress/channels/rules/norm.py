"""Normalisations that act per channel (BN, InstanceNorm); the rest block."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, channels_on_axis1, register


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
