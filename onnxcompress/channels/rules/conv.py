"""Conv and ConvTranspose: the filters that create prunable channels.

Conv weight is [C_out, C_in/group, *k]: output channels on axis 0, input channels on axis 1.
- group 1: inputs are consumer slots (axis 1), outputs are new prunable elements (axis 0).
- depthwise (group == C_in, C_out == m*C_in): output j is computed from input j // m, so the
  output elements are tied to the input's; the filters shrink with them and ``group`` is
  rewritten.
- other groups: to keep every group the same width, the k-th channel of every group is tied
  together (input and output), so an atom removes one channel from each group.
ConvTranspose weight is [C_in, C_out/group, *k]; only group 1 is pruned through.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.state import ChannelInfo


def _group(node: ir.Node) -> int:
    a = node.attributes.get("group")
    return a.as_int() if a is not None else 1


def _input_ids(node: ir.Node, ctx):
    info = ctx.get(node.inputs[0])
    if info is None:
        return None
    if info.axes != (1,):
        ctx.fix(info.ids, node, "channels reach a conv on an axis other than 1")
        return None
    return info.ids


def _constant_weights(node: ir.Node, ctx) -> tuple[ir.Value, tuple | None, ir.Value | None, bool]:
    """(weight, its shape, bias, whether both are constants)."""
    w_val = node.inputs[1]
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    ok = ctx.is_const(w_val) and ctx.shape(w_val) is not None and (b_val is None or ctx.is_const(b_val))
    return w_val, ctx.shape(w_val), b_val, ok


def _filters(node: ir.Node, ctx, w_val: ir.Value, w_axis: int, b_val: ir.Value | None, out_ids: np.ndarray) -> None:
    """Register the output filters (and bias) of a conv and set its output channels."""
    if ctx.excluded(node):
        ctx.fix(out_ids, node, "excluded by --exclude")
    ctx.add_slot(node, w_val, w_axis, out_ids, "out")
    if b_val is not None:
        ctx.add_slot(node, b_val, 0, out_ids, "bias")
    ctx.set(node.outputs[0], ChannelInfo((1,), out_ids))


@register("Conv")
class ConvRule(Rule):
    always = True

    def propagate(self, node: ir.Node, ctx) -> None:
        w_val, w, b_val, ok = _constant_weights(node, ctx)
        x_ids = _input_ids(node, ctx)
        if not ok:
            if x_ids is not None:
                ctx.fix(x_ids, node, "conv weight is computed at run time (fold it first)")
            return
        c_out, c_in_g = int(w[0]), int(w[1])
        g = _group(node)
        c_in = c_in_g * g
        out_ids = None
        if g == 1:
            if x_ids is not None:
                ctx.add_slot(node, w_val, 1, x_ids, "in")
            out_ids = ctx.fresh(c_out, source=True)
        elif c_in_g == 1 and c_out % c_in == 0:
            m = c_out // c_in
            if x_ids is None:
                x_ids = ctx.fresh(c_in)
                ctx.fix(x_ids, node, "depthwise conv input channels are not tracked")
            out_ids = np.repeat(x_ids, m)
            ctx.rewrites.append(node)
        else:
            b = c_out // g
            if x_ids is not None:
                per_group = x_ids.reshape(g, c_in_g)
                for k in range(1, g):
                    ctx.union(per_group[0], per_group[k])
                ctx.add_slot(node, w_val, 1, per_group[0], "in")
            out_ids = ctx.fresh((g, b), source=True)
            for k in range(1, g):
                ctx.union(out_ids[0], out_ids[k])
            out_ids = out_ids.reshape(-1)
        _filters(node, ctx, w_val, 0, b_val, out_ids)

    def const_eval(self, node: ir.Node, app) -> None:
        # A zeroed filter outputs its bias (0 when biases are zeroed too, or when it has none).
        out = node.outputs[0]
        info = app.analysis.info[out]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        value = 0.0
        if bias is not None and not app.zero_bias:
            value = app.tensor(bias).astype(np.float64)
        app.set_const(out, np.where(app.removed(info.ids), value, np.nan))

    def rewrite(self, node: ir.Node, app) -> None:
        # Only depthwise convs spell their width in ``group``.
        info = app.analysis.info[node.inputs[0]] if node.inputs[0] in app.analysis.info else None
        if info is None:
            return
        g = _group(node)
        kept = int(app.kept_count(node.inputs[0]))
        if g != kept and g == info.ids.size:
            node.attributes["group"] = ir.AttrInt64("group", kept)


@register("ConvTranspose")
class ConvTransposeRule(Rule):
    always = True

    def propagate(self, node: ir.Node, ctx) -> None:
        w_val, w, b_val, ok = _constant_weights(node, ctx)
        x_ids = _input_ids(node, ctx)
        if _group(node) != 1 or not ok:
            if x_ids is not None:
                ctx.fix(x_ids, node, "grouped or run-time-weight ConvTranspose is not pruned through")
            return
        if x_ids is not None:
            ctx.add_slot(node, w_val, 0, x_ids, "in")
        _filters(node, ctx, w_val, 1, b_val, ctx.fresh(int(w[1]), source=True))

    const_eval = ConvRule.const_eval
