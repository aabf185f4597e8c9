"""Elementwise ops: activations map each channel to itself; binary ops couple channel tensors.

``const_eval`` applies the op to the constant that a removed channel carries, so remove mode
can fold it exactly (see ``pruning.apply``).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.state import ChannelInfo


def _f(node: ir.Node, name: str, default: float) -> float:
    a = node.attributes.get(name)
    return a.as_float() if a is not None else default


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _clip(node, x, app: RewriteContext):
    lo, hi = _f(node, "min", -np.inf), _f(node, "max", np.inf)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        lo = float(app.tensor(node.inputs[1]))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        hi = float(app.tensor(node.inputs[2]))
    return np.clip(x, lo, hi)


def _gelu(node, x, app: RewriteContext):
    approx = node.attributes.get("approximate")
    if approx is not None and approx.as_string() == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _selu(node, x, app: RewriteContext):
    a, g = _f(node, "alpha", 1.67326319217681884765625), _f(node, "gamma", 1.05070102214813232421875)
    return g * np.where(x > 0, x, a * (np.exp(x) - 1))


_UNARY = {
    "Relu": lambda n, x, a: np.maximum(x, 0),
    "LeakyRelu": lambda n, x, a: np.where(x >= 0, x, _f(n, "alpha", 0.01) * x),
    "Sigmoid": lambda n, x, a: _sigmoid(x),
    "HardSigmoid": lambda n, x, a: np.clip(_f(n, "alpha", 0.2) * x + _f(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    "Tanh": lambda n, x, a: np.tanh(x),
    "Elu": lambda n, x, a: np.where(x > 0, x, _f(n, "alpha", 1.0) * (np.exp(x) - 1)),
    "Celu": lambda n, x, a: np.maximum(x, 0) + np.minimum(0, _f(n, "alpha", 1.0) * (np.exp(x / _f(n, "alpha", 1.0)) - 1)),
    "Selu": _selu,
    "Softplus": lambda n, x, a: np.log1p(np.exp(x)),
    "Softsign": lambda n, x, a: x / (1 + np.abs(x)),
    "Mish": lambda n, x, a: x * np.tanh(np.log1p(np.exp(x))),
    "Gelu": _gelu,
    "Erf": lambda n, x, a: _erf(x),
    "ThresholdedRelu": lambda n, x, a: np.where(x > _f(n, "alpha", 1.0), x, 0.0),
    "Clip": _clip,
    "Abs": lambda n, x, a: np.abs(x),
    "Neg": lambda n, x, a: -x,
    "Exp": lambda n, x, a: np.exp(x),
    "Log": lambda n, x, a: np.log(x),
    "Sqrt": lambda n, x, a: np.sqrt(x),
    "Reciprocal": lambda n, x, a: 1.0 / x,
    "Floor": lambda n, x, a: np.floor(x),
    "Ceil": lambda n, x, a: np.ceil(x),
    "Round": lambda n, x, a: np.round(x),
    "Sign": lambda n, x, a: np.sign(x),
    "Identity": lambda n, x, a: x,
    "Dropout": lambda n, x, a: x,
    "Cast": lambda n, x, a: x,
}


@register(*_UNARY)
class UnaryRule(Rule):
    """Channel i of the output is a function of channel i of the input alone."""

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        for v in node.inputs[1:]:
            if v is not None and ctx.get(v) is not None:
                return ctx.block(node, f"{node.op_type} with a channel tensor as a parameter")
        ctx.set(node.outputs[0], info)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        with np.errstate(all="ignore"):
            app.set_const(node.outputs[0], _UNARY[node.op_type](node, x, app))


@register("PRelu")
class PReluRule(Rule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        if ctx.get(node.inputs[1]) is not None or rank is None:
            return ctx.block(node, "PRelu slope is a channel tensor")
        if ctx.channel_const(node, node.inputs[1], rank, info) == "blocked":
            return
        ctx.set(node.outputs[0], info)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        slope = app.channel_vector(node.inputs[1], node.inputs[0])
        app.set_const(node.outputs[0], np.where(x >= 0, x, slope * x))


@register("BiasGelu", "FastGelu", domain="com.microsoft")
class BiasGeluRule(Rule):
    """onnxruntime's fused Gelu(x + bias) over the last axis (BiasGelu: erf; FastGelu: the tanh
    approximation, bias optional), which its transformer optimizer writes for BERT's MLPs.
    Channel i of the output is channel i of x plus bias i: the bias is a per-channel slot."""

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        bias = node.inputs[1] if len(node.inputs) > 1 else None
        if bias is not None:
            if ctx.get(bias) is not None or rank is None:
                return ctx.block(node, f"{node.op_type} with a channel tensor as its bias")
            if ctx.channel_const(node, bias, rank, info) == "blocked":
                return None
        ctx.set(node.outputs[0], info)
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        x = app.const_of(node.inputs[0])
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            x = x + app.channel_vector(node.inputs[1], node.inputs[0])
        if node.op_type == "FastGelu":
            y = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
        else:
            y = 0.5 * x * (1 + _erf(x / np.sqrt(2)))
        app.set_const(node.outputs[0], y)


def _scaled_constants(v: ir.Value, axis: int, n: int, ctx: AnalysisContext, depth: int = 4):
    """How ``v`` gets ``n`` values along ``axis`` from per-channel constants alone, or None.

    ``v`` must be read once, by the op that asks, and be made by Mul/Add/Sub/Div of
    untracked tensors that broadcast along ``axis`` (size 1 there) and constants that are
    scalars or hold one value per channel there, or of such tensors made the same way.
    Returns the constants as (node, value, axis) and the made tensors as (value, axis).
    """
    p = v.producer()
    if p is None or depth == 0 or p.domain not in ("", "ai.onnx") or p.op_type not in ("Mul", "Add", "Sub", "Div") \
            or v.is_graph_output() or len(list(v.uses())) != 1 or ctx.get(v) is not None:
        return None
    rank = ctx.rank(v)
    consts: list[tuple[ir.Node, ir.Value, int]] = []
    made: list[tuple[ir.Value, int]] = [(v, axis)]
    for u in p.inputs:
        if u is None or ctx.get(u) is not None or rank is None:
            return None
        c = ctx.const(u)
        shape = c.shape if c is not None else ctx.shape(u)
        if shape is None:
            return None
        caxis = len(shape) - (rank - axis)
        if caxis < 0 or shape[caxis] == 1:
            continue
        if shape[caxis] != n:
            return None
        if c is not None:
            consts.append((p, u, caxis))
            continue
        inner = _scaled_constants(u, caxis, n, ctx, depth - 1)
        if inner is None:
            return None
        consts += inner[0]
        made += inner[1]
    return (consts, made) if consts else None


def track_scaled_constants(v: ir.Value, axis: int, ids: np.ndarray, ctx: AnalysisContext) -> bool:
    """An untracked operand whose channels come from per-channel constants alone (a LayerNorm's
    inverse deviation, one per row, times its scale, before it meets the centred stream, as
    jax2tf writes it) takes the stream's channels: each constant becomes a parameter slot.
    False, with nothing recorded, for any other tensor."""
    found = _scaled_constants(v, axis, int(ids.shape[0]), ctx)
    if found is None:
        return False
    consts, made = found
    for p, c, caxis in consts:
        ctx.add_slot(p, c, caxis, ids, "param")
    for w, waxis in made:
        ctx.set(w, ChannelInfo((waxis,), ids))
    return True


_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Pow": np.power,
    "Max": np.maximum,
    "Min": np.minimum,
    "Sum": np.add,
    "Mean": None,
}


@register(*_BINARY)
class BroadcastRule(Rule):
    """Add/Sub/Mul/Div/Pow and variadic Sum/Max/Min/Mean.

    Channel tensors of the same width are coupled (a residual, an SE gate). A constant is
    a scalar or a per-channel parameter slot. A run-time tensor whose channels we do not
    track blocks, unless it broadcasts over the channel axis (size 1 there) or takes its
    channels from per-channel constants alone (``track_scaled_constants``).
    """

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        out_rank = ctx.rank(node.outputs[0])
        infos = [(v, ctx.get(v)) for v in node.inputs if v is not None]
        tracked = [(v, i) for v, i in infos if i is not None]
        if out_rank is None:
            return ctx.block(node, "unknown output rank")
        # Align every tracked input's axes to the output rank.
        aligned = []
        for v, i in tracked:
            shift = out_rank - (ctx.rank(v) or out_rank)
            aligned.append((v, ChannelInfo(tuple(a + shift for a in i.axes), i.ids)))
        out_shape = ctx.shape(node.outputs[0])
        full = [(v, i) for v, i in aligned if out_shape is None or tuple(out_shape[a] for a in i.axes) == i.ids.shape]
        if not full:
            return ctx.block(node, "channel tensors broadcast against each other")
        ref = full[0][1]
        for v, i in full[1:]:
            if i.axes != ref.axes or i.ids.shape != ref.ids.shape:
                return ctx.block(node, "channel tensors meet on different axes")
            ctx.union(ref.ids, i.ids)
        for v, i in aligned:
            if all(v is not fv for fv, _ in full):
                # A tracked tensor broadcast along the channels: its own channels stay.
                ctx.fix(i.ids, node, "broadcast along channels")
        tracked_values = {v for v, _ in tracked}
        for v, _ in infos:
            if v in tracked_values:
                continue
            if ctx.is_const(v):
                if ctx.channel_const(node, v, out_rank, ref) == "blocked":
                    return
                continue
            shape = ctx.shape(v)
            if shape is not None and len(ref.axes) == 1:
                caxis = len(shape) - (out_rank - ref.axes[0])
                if caxis < 0 or shape[caxis] == 1:
                    continue
                if shape[caxis] == ref.ids.shape[0] and track_scaled_constants(v, caxis, ref.ids, ctx):
                    continue
            return ctx.block(node, f"{node.op_type} with a tensor whose channels are not tracked ({v.name})")
        ctx.set(node.outputs[0], ref)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        out = node.outputs[0]
        ref = app.channels(out)
        vals: list[np.ndarray | float] = []
        for v in node.inputs:
            if v is None:
                continue
            if app.channels(v) is not None and app.channels(v).ids.shape == ref.ids.shape:
                vals.append(app.const_of(v))
            else:
                vals.append(app.channel_vector(v, out))
        fn = _BINARY[node.op_type]
        with np.errstate(all="ignore"):
            if fn is None:
                res = sum(vals) / len(vals)
            else:
                res = vals[0]
                for x in vals[1:]:
                    res = fn(res, x)
        app.set_const(out, np.asarray(res))
