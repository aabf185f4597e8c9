"""Biases and norm affines that an exporter wrote as their own Add or Mul, so distillation trains them.

paddle2onnx writes a layer's bias as a separate Add after a bias-less Conv or MatMul, and an
opset < 17 LayerNorm as Sub/ReduceMean/Div followed by Mul(gamma) and Add(beta); tf2onnx and
jax2tf multiply gamma into the rsqrt of the variance and add beta last. PP-OCRv5 rec
holds 32 Conv biases, 9 Linear biases and 5 LayerNorms' gamma and beta that way; PyTorch's
exporter writes a Linear on a 3-D input as MatMul + Add. These constants are as much the
layer's as an input-2 bias is, so the default trainable rule takes them too.

Only a constant with exactly one reader counts (training it changes nothing else), and it must
hold one value per channel of the layer (a bias) or be a vector with one axis longer than 1 (a
norm's scale or shift). Everything else added or multiplied after a layer or a norm (anchor
grids, masks, position tables) stays a constant. The shift may sit in an Add or, as
``tf.nn.batch_normalization`` writes it, in Sub(beta, mean * scale).
"""

from __future__ import annotations

import math

import onnx_ir as ir

from onnxcompress._ir_utils import const_tensor, is_std
from onnxcompress.feature_outputs import layernorm_div

LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _root(value: ir.Value) -> ir.Value:
    """``value`` with the Identity nodes before it skipped (paddle2onnx inserts them)."""
    node = value.producer()
    while node is not None and node.op_type == "Identity" and is_std(node) and node.inputs[0] is not None:
        value = node.inputs[0]
        node = value.producer()
    return value


def _source(value: ir.Value | None) -> ir.Node | None:
    return None if value is None else _root(value).producer()


def _float_dims(value: ir.Value | None) -> tuple[int, ...] | None:
    """The dims of a float constant (initializer or Constant node), else None."""
    t = const_tensor(value)
    return tuple(int(d) for d in t.shape) if t is not None and t.dtype.is_floating_point() else None


def _own_constant(value: ir.Value | None) -> bool:
    """``value`` is a float constant with more than one value and exactly one reader."""
    dims = _float_dims(value)
    return dims is not None and math.prod(dims) > 1 and value is not None and len(value.uses()) == 1 \
        and not value.is_graph_output()


def _own_vector(value: ir.Value) -> bool:
    """An ``_own_constant`` with one axis longer than 1: a per-channel scale or shift, not a table."""
    return _own_constant(value) and sum(d > 1 for d in _float_dims(value) or ()) == 1


def _layer_bias_of(layer: ir.Node, dims: tuple[int, ...]) -> str | None:
    """The layer's constant weight when ``dims`` hold one value per output channel, broadcast on
    the layer's channel axis (axis 1 of a Conv's output, the last axis of a Gemm's or MatMul's)."""
    w = _float_dims(layer.inputs[1]) if len(layer.inputs) > 1 else None
    if w is None:
        return None
    if layer.op_type in ("Conv", "ConvTranspose"):
        if len(w) < 3:
            return None
        channels = w[0] if layer.op_type == "Conv" else w[1] * layer.attributes.get_int("group", 1)
        padded = (1,) * (len(w) - len(dims)) + dims
        ok = len(dims) <= len(w) and padded == (1, channels) + (1,) * (len(w) - 2)
    else:
        if len(w) != 2:
            return None
        channels = w[0] if layer.op_type == "Gemm" and layer.attributes.get_int("transB", 0) else w[-1]
        ok = bool(dims) and dims[-1] == channels and math.prod(dims) == channels
    return layer.inputs[1].name if ok and layer.inputs[1] is not None else None


def _layernorm_div(node: ir.Node | None) -> bool:
    """``layernorm_div``, with the mean taken of the very value it is subtracted from."""
    if not layernorm_div(node):
        return False
    sub = node.inputs[0].producer()
    mean = sub.inputs[1].producer()
    return mean.inputs[0] is not None and sub.inputs[0] is not None and _root(mean.inputs[0]) is _root(sub.inputs[0])


def _inverse_deviation(node: ir.Node | None) -> bool:
    """``node`` is 1 / sqrt(...): Reciprocal(Sqrt(...)) or Div(1, Sqrt(...)), as tf2onnx writes a norm's rsqrt."""
    if node is None or not is_std(node):
        return False
    if node.op_type == "Reciprocal":
        root = _source(node.inputs[0])
    elif node.op_type == "Div" and len(node.inputs) == 2 and _float_dims(node.inputs[0]) is not None \
            and math.prod(_float_dims(node.inputs[0]) or ()) == 1:
        root = _source(node.inputs[1])
    else:
        return False
    return root is not None and root.op_type == "Sqrt" and is_std(root)


def _norm_form(node: ir.Node | None) -> str | None:
    """"div" for an opset < 17 LayerNorm's Div, "rsqrt" for 1 / sqrt(...), else None."""
    if _layernorm_div(node):
        return "div"
    return "rsqrt" if _inverse_deviation(node) else None


def _fits(value: ir.Value, form: str) -> bool:
    """``value`` is a per-channel vector for a norm of ``form``: the Div form normalizes the last axis,
    so its gamma and beta run along the last axis (a [1, C, 1] mask after it is not one)."""
    return _own_vector(value) and (form != "div" or (_float_dims(value) or (0,))[-1] > 1)


def _gamma_mul(node: ir.Node | None) -> tuple[ir.Value, str] | None:
    """(gamma, form) when ``node`` is Mul(LayerNorm Div, gamma) or Mul(rsqrt of a variance, gamma)."""
    if node is None or node.op_type != "Mul" or not is_std(node) or len(node.inputs) != 2:
        return None
    for i in (0, 1):
        const = node.inputs[i]
        form = _norm_form(_source(node.inputs[1 - i]))
        if const is not None and form is not None and _fits(const, form):
            return const, form
    return None


def _scaled_by_gamma(node: ir.Node | None) -> str | None:
    """The norm's form when ``node`` is a normalized stream before its shift: the LayerNorm Div,
    Mul(Div, gamma), or (tf2onnx) Mul(x or -mean, rsqrt * gamma); else None."""
    if node is None or not is_std(node):
        return None
    if _layernorm_div(node):
        return "div"
    gamma = _gamma_mul(node)
    if gamma is None and node.op_type == "Mul":
        gamma = next((g for g in (_gamma_mul(_source(i)) for i in node.inputs) if g is not None), None)
    return None if gamma is None else gamma[1]


def separate_affines(model: ir.Model) -> dict[str, str | None]:
    """Constant name -> the layer weight it is the bias of, or None for a norm's gamma or beta."""
    found: dict[str, str | None] = {}
    for node in model.graph:
        if not is_std(node) or node.op_type not in ("Add", "Sub", "Mul") or len(node.inputs) != 2:
            continue
        if node.op_type == "Mul":
            gamma = _gamma_mul(node)
            if gamma is not None:
                found[gamma[0].name] = None
            continue
        for const, other in ((node.inputs[0], _source(node.inputs[1])), (node.inputs[1], _source(node.inputs[0]))):
            if const is None or not _own_constant(const) or other is None or not is_std(other):
                continue
            if other.op_type in LAYERS:
                weight = _layer_bias_of(other, _float_dims(const) or ())
                if weight is not None:
                    found[const.name] = weight
            else:
                form = _scaled_by_gamma(other)
                if form is not None and _fits(const, form):
                    found[const.name] = None
    return found
