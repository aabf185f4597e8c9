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

import onnx

LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _is_std(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _constant_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Float constants (initializers and Constant nodes with a tensor value) -> their dims."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer if t.data_type in floats}
    for node in model.graph.node:
        if node.op_type == "Constant" and _is_std(node):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in floats:
                    dims[node.output[0]] = tuple(attr.t.dims)
    return dims


class _Graph:
    """Producers (looking through Identity, which paddle2onnx inserts) and reader counts."""

    def __init__(self, model: onnx.ModelProto):
        self.consts = _constant_dims(model)
        self.producer = {out: node for node in model.graph.node for out in node.output if out}
        self.readers: dict[str, int] = {}
        for node in model.graph.node:
            for name in node.input:
                if name:
                    self.readers[name] = self.readers.get(name, 0) + 1
        for out in model.graph.output:
            self.readers[out.name] = self.readers.get(out.name, 0) + 1

    def root(self, name: str) -> str:
        """``name`` with the Identity nodes before it skipped."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity" and _is_std(node) and node.input:
            name = node.input[0]
            node = self.producer.get(name)
        return name

    def source(self, name: str) -> onnx.NodeProto | None:
        return self.producer.get(self.root(name))

    def own_constant(self, name: str) -> bool:
        """``name`` is a float constant with more than one value and exactly one reader."""
        dims = self.consts.get(name)
        return dims is not None and math.prod(dims) > 1 and self.readers.get(name, 0) == 1

    def own_vector(self, name: str) -> bool:
        """An ``own_constant`` with one axis longer than 1: a per-channel scale or shift, not a table."""
        return self.own_constant(name) and sum(d > 1 for d in self.consts[name]) == 1


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _layer_bias_of(layer: onnx.NodeProto, dims: tuple[int, ...], g: _Graph) -> str | None:
    """The layer's constant weight when ``dims`` hold one value per output channel, broadcast on
    the layer's channel axis (axis 1 of a Conv's output, the last axis of a Gemm's or MatMul's)."""
    if len(layer.input) < 2 or layer.input[1] not in g.consts:
        return None
    w = g.consts[layer.input[1]]
    if layer.op_type in ("Conv", "ConvTranspose"):
        if len(w) < 3:
            return None
        channels = w[0] if layer.op_type == "Conv" else w[1] * _attr(layer, "group", 1)
        padded = (1,) * (len(w) - len(dims)) + dims
        ok = len(dims) <= len(w) and padded == (1, channels) + (1,) * (len(w) - 2)
    else:
        if len(w) != 2:
            return None
        channels = w[0] if layer.op_type == "Gemm" and _attr(layer, "transB", 0) else w[-1]
        ok = bool(dims) and dims[-1] == channels and math.prod(dims) == channels
    return layer.input[1] if ok else None


def _layernorm_div(node: onnx.NodeProto | None, g: _Graph) -> bool:
    """``node`` is the Div of an opset < 17 LayerNorm: Div(Sub(x, ReduceMean(x)), ...)."""
    if node is None or node.op_type != "Div" or not _is_std(node) or not node.input:
        return False
    sub = g.source(node.input[0])
    if sub is None or sub.op_type != "Sub" or len(sub.input) < 2:
        return False
    mean = g.source(sub.input[1])
    return mean is not None and mean.op_type == "ReduceMean" and bool(mean.input) \
        and g.root(mean.input[0]) == g.root(sub.input[0])


def _inverse_deviation(node: onnx.NodeProto | None, g: _Graph) -> bool:
    """``node`` is 1 / sqrt(...): Reciprocal(Sqrt(...)) or Div(1, Sqrt(...)), as tf2onnx writes a norm's rsqrt."""
    if node is None or not _is_std(node) or not node.input:
        return False
    if node.op_type == "Reciprocal":
        root = g.source(node.input[0])
    elif node.op_type == "Div" and len(node.input) == 2 and g.consts.get(node.input[0]) is not None \
            and math.prod(g.consts[node.input[0]]) == 1:
        root = g.source(node.input[1])
    else:
        return False
    return root is not None and root.op_type == "Sqrt" and _is_std(root)


def _norm_form(node: onnx.NodeProto | None, g: _Graph) -> str | None:
    """"div" for an opset < 17 LayerNorm's Div, "rsqrt" for 1 / sqrt(...), else None."""
    if _layernorm_div(node, g):
        return "div"
    return "rsqrt" if _inverse_deviation(node, g) else None


def _fits(name: str, form: str, g: _Graph) -> bool:
    """``name`` is a per-channel vector for a norm of ``form``: the Div form normalizes the last axis,
    so its gamma and beta run along the last axis (a [1, C, 1] mask after it is not one)."""
    return g.own_vector(name) and (form != "div" or g.consts[name][-1] > 1)


def _gamma_mul(node: onnx.NodeProto | None, g: _Graph) -> tuple[str, str] | None:
    """(gamma, form) when ``node`` is Mul(LayerNorm Div, gamma) or Mul(rsqrt of a variance, gamma)."""
    if node is None or node.op_type != "Mul" or not _is_std(node) or len(node.input) != 2:
        return None
    for i in (0, 1):
        form = _norm_form(g.source(node.input[1 - i]), g)
        if form is not None and _fits(node.input[i], form, g):
            return node.input[i], form
    return None


def _scaled_by_gamma(node: onnx.NodeProto | None, g: _Graph) -> str | None:
    """The norm's form when ``node`` is a normalized stream before its shift: the LayerNorm Div,
    Mul(Div, gamma), or (tf2onnx) Mul(x or -mean, rsqrt * gamma); else None."""
    if node is None or not _is_std(node):
        return None
    if _layernorm_div(node, g):
        return "div"
    gamma = _gamma_mul(node, g)
    if gamma is not None:
        return gamma[1]
    if node.op_type == "Mul":
        for i in node.input:
            gamma = _gamma_mul(g.source(i), g) if i else None
            if gamma is not None:
                return gamma[1]
    return None


def separate_affines(model: onnx.ModelProto) -> dict[str, str | None]:
    """Constant name -> the layer weight it is the bias of, or None for a norm's gamma or beta."""
    g = _Graph(model)
    found: dict[str, str | None] = {}
    for node in model.graph.node:
        if not _is_std(node) or node.op_type not in ("Add", "Sub", "Mul") or len(node.input) != 2:
            continue
        if node.op_type == "Mul":
            gamma = _gamma_mul(node, g)
            if gamma is not None:
                found[gamma[0]] = None
            continue
        for i in (0, 1):
            const, other = node.input[i], g.source(node.input[1 - i])
            if not g.own_constant(const) or other is None or not _is_std(other):
                continue
            if other.op_type in LAYERS:
                weight = _layer_bias_of(other, g.consts[const], g)
                if weight is not None:
                    found[const] = weight
            else:
                form = _scaled_by_gamma(other, g)
                if form is not None and _fits(const, form, g):
                    found[const] = None
    return found
