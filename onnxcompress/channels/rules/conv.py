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

from onnxcompress._ir_utils import const_array, set_weight
from onnxcompress.analysis.macs import conv_macs, convtranspose_macs
from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.rules.consumer import (ConsumerHooks, FoldContext, add_to_bias_input, bias_matrix,
                                                  ints_attr, write_bias)
from onnxcompress.channels.state import ChannelInfo, Slot


def _group(node: ir.Node) -> int:
    a = node.attributes.get("group")
    return a.as_int() if a is not None else 1


def _input_ids(node: ir.Node, ctx: AnalysisContext):
    info = ctx.get(node.inputs[0])
    if info is None:
        return None
    if info.axes != (1,):
        ctx.fix(info.ids, node, "channels reach a conv on an axis other than 1")
        return None
    return info.ids


def _constant_weights(node: ir.Node, ctx: AnalysisContext) -> tuple[ir.Value, tuple | None, ir.Value | None, bool]:
    """(weight, its shape, bias, whether both are constants)."""
    w_val = node.inputs[1]
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    ok = ctx.is_const(w_val) and ctx.shape(w_val) is not None and (b_val is None or ctx.is_const(b_val))
    return w_val, ctx.shape(w_val), b_val, ok


def _filters(node: ir.Node, ctx: AnalysisContext, w_val: ir.Value, w_axis: int, b_val: ir.Value | None, out_ids: np.ndarray) -> None:
    """Register the output filters (and bias) of a conv and set its output channels."""
    if ctx.excluded(node):
        ctx.fix(out_ids, node, "excluded by --exclude")
    ctx.add_slot(node, w_val, w_axis, out_ids, "out")
    if b_val is not None:
        ctx.add_slot(node, b_val, 0, out_ids, "bias")
    ctx.set(node.outputs[0], ChannelInfo((1,), out_ids))


def _has_padding(node: ir.Node) -> bool:
    auto = node.attributes.get("auto_pad")
    if auto is not None and auto.as_string() not in ("NOTSET", "VALID"):
        return True
    return any(p != 0 for p in ints_attr(node, "pads", []))


def _patches(x: np.ndarray, node: ir.Node, w_shape: tuple[int, ...]) -> np.ndarray:
    """Conv input as rows of patches (N*Ho*Wo, C*kh*kw); 1-D convs are treated as H = 1."""
    if x.ndim == 3:
        x = x[:, :, None, :]
    k = w_shape[2:] if len(w_shape) == 4 else (1, w_shape[2])
    if len(w_shape) == 4:
        pads = ints_attr(node, "pads", [0] * 4)
        strides = ints_attr(node, "strides", [1, 1])
        dil = ints_attr(node, "dilations", [1, 1])
    else:
        p1 = ints_attr(node, "pads", [0, 0])
        pads = [0, *p1[:1], 0, *p1[1:]]
        strides = [1, *ints_attr(node, "strides", [1])]
        dil = [1, *ints_attr(node, "dilations", [1])]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [dil[i] * (k[i] - 1) + 1 for i in range(2)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k[0] * k[1])


class ConvConsumer(ConsumerHooks):
    """A Conv reading pruned channels: folded per output filter, refit on im2col patches per group."""

    channels_first = True

    def fold(self, app: FoldContext, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = app.tensor(s.value)
        g = _group(node)
        c_in_g = w.shape[1]
        b = w.shape[0] // g
        local = np.where(gone)[0]
        taps = np.zeros((w.shape[0],) + w.shape[2:])
        flat = w.reshape(w.shape[0], c_in_g, -1)
        for grp in range(g):
            rows = slice(grp * b, (grp + 1) * b)
            # The removed inputs' constants as a full input vector (zeros elsewhere): one batched
            # matrix-vector product over the weight as it lies, with no copy of the removed slice.
            vals = np.zeros(c_in_g, dtype=w.dtype)
            vals[local] = app.checked(node, c[grp * c_in_g + local])
            group_taps = np.matmul(vals, flat[rows])
            if not np.isfinite(group_taps).all():
                # an inf/NaN in a kept channel's weights times 0 must not poison the removed ones' sum
                group_taps = np.tensordot(vals[local], flat[rows][:, local], axes=([0], [1]))
            taps[rows] = group_taps.reshape(b, *w.shape[2:])
        delta = taps.reshape(len(taps), -1).sum(axis=1)
        if np.any(delta != 0) and _has_padding(node):
            if app.can_map_borders(node):
                app.defer_border_map(node, taps)
                return np.zeros_like(delta)
            estimate = app.border_map(node, taps)
            dev = ""
            if estimate is not None:
                worst = float(np.abs(estimate - delta.reshape((-1,) + (1,) * (estimate.ndim - 1))).max())
                dev = f" by up to {worst:.3g} at its border pixels (analysis shapes)"
            app.inexact(
                f"{node.name or 'Conv'} pads its input: the removed channels' constant is folded into the bias, "
                f"so its output deviates from zero mode{dev}; --exact-borders corrects this for static shapes"
            )
        return delta

    def add_bias(self, app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
        add_to_bias_input(app, node, delta)

    def refit_reason(self, node: ir.Node) -> str | None:
        auto = node.attributes.get("auto_pad")
        if auto is not None and auto.as_string() not in ("NOTSET", "VALID"):
            return "auto_pad SAME (not refit)"
        w = node.inputs[1] if len(node.inputs) > 1 else None
        rank = len(w.shape) if w is not None and w.shape is not None else None
        return None if rank in (3, 4) else "3-D conv (not refit)"

    def groups(self, node: ir.Node) -> int:
        return _group(node)

    def as_rows(self, node: ir.Node, x: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
        p = _patches(x, node, w_shape)  # columns run channel by channel, so each group's are contiguous
        return p.reshape(len(p), _group(node), -1).transpose(1, 0, 2)

    def target_rows(self, node: ir.Node, y: np.ndarray) -> np.ndarray:
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])

    def row_width(self, node: ir.Node, w: np.ndarray) -> int:
        return int(np.prod(w.shape[1:]))

    def matrices(self, node: ir.Node) -> tuple[np.ndarray, np.ndarray | None]:
        w = const_array(node.inputs[1]).astype(np.float64)
        g = _group(node)
        mat = w.reshape(g, w.shape[0] // g, -1).transpose(0, 2, 1)
        return mat, bias_matrix(node, mat)

    def write(self, model: ir.Model, node: ir.Node, mat: np.ndarray, b: np.ndarray | None) -> None:
        w_old = const_array(node.inputs[1])
        set_weight(node.inputs[1], mat.transpose(0, 2, 1).reshape(w_old.shape).astype(w_old.dtype))
        if b is not None:
            write_bias(model, node, b.reshape(-1), w_old.dtype)


class ConvTransposeConsumer(ConsumerHooks):
    """A ConvTranspose reading pruned channels: folded exactly with --exact-borders, else on average; not refit."""

    channels_first = True

    def fold(self, app: FoldContext, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = app.tensor(s.value)  # [C_in, C_out, *k]
        vals = app.checked(node, c[gone])
        taps = np.tensordot(vals, w[gone].astype(np.float64), axes=([0], [0]))  # [C_out, *k]
        attr = node.attributes
        if app.can_map_borders(node) and ("auto_pad" not in attr or attr["auto_pad"].as_string() in ("NOTSET", "VALID")):
            app.defer_border_map(node, taps)
            return np.zeros(taps.shape[0])
        strides = ints_attr(node, "strides", [])
        delta = taps.reshape(taps.shape[0], -1).sum(axis=1) / float(np.prod(strides) if strides else 1)
        if np.any(delta != 0):
            app.inexact(
                f"{node.name or 'ConvTranspose'}: a constant input is folded as its average per output pixel "
                "(--exact-borders makes it exact for static shapes)"
            )
        return delta

    def add_bias(self, app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
        add_to_bias_input(app, node, delta)

    def refit_reason(self, node: ir.Node) -> str | None:
        return "ConvTranspose (not refit)"


@register("Conv")
class ConvRule(Rule):
    always = True
    consumer = ConvConsumer()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return conv_macs(node, shapes)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
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
            ctx.needs_rewrite(node)
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

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        # A zeroed filter outputs its bias (0 when biases are zeroed too, or when it has none).
        out = node.outputs[0]
        info = app.channels(out)
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        value: np.ndarray | float = 0.0
        if bias is not None and not app.zero_bias:
            value = app.tensor(bias).astype(np.float64)
        app.set_const(out, np.where(app.removed(info.ids), value, np.nan))

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        # Only depthwise convs spell their width in ``group``.
        info = app.channels(node.inputs[0])
        if info is None:
            return
        g = _group(node)
        kept = int(app.kept_count(node.inputs[0]))
        if g != kept and g == info.ids.size:
            node.attributes["group"] = ir.AttrInt64("group", kept)


@register("ConvTranspose")
class ConvTransposeRule(Rule):
    always = True
    consumer = ConvTransposeConsumer()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return convtranspose_macs(node, shapes)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
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
