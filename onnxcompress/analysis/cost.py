"""Parameters, MACs and receptive fields per node.

MACs follow one convention, stated in the README:
- Conv, ConvInteger, QLinearConv: output elements x (C_in / group) x prod(kernel)
- ConvTranspose: input elements x (C_out / group) x prod(kernel)
- Gemm, MatMul and their int8 forms (MatMulInteger, QLinearMatMul, and
  com.microsoft QGemm, DynamicQuantizeMatMul, MatMulIntegerToFloat): output elements x K
- LSTM, GRU, RNN and com.microsoft DynamicQuantizeLSTM: the per-step matrix products,
  seq x batch x directions x gates x hidden x (input + hidden), gates 4/3/1
  (peepholes, biases and gate arithmetic are not counted)
- QDQ models count like float ones: a Conv or MatMul whose weight comes through
  DequantizeLinear is sized by shape inference like any other.
Every other op counts zero MACs, and so does a listed op whose shapes are unknown.

Params are the elements of every weight tensor (initializer or Constant), counted once,
at the first node that reads it. Weights are float tensors and 8- or 4-bit integer ones
(INT8, UINT8, INT4, UINT4: quantized weights), plus INT32 tensors that are quantized
biases (read by DequantizeLinear or a quantized op's bias input). Quantization
parameters are not params whatever their type: scales and zero points read by
(De)QuantizeLinear or an int8 op, and the weight scale onnxruntime's dynamic
quantization multiplies into DynamicQuantizeLinear's scale. Other integer tensors
(shapes, axes, indices) are not params either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxcompress.analysis.macs import in_shape as _in_shape, int_attr as _int_attr
from onnxcompress.analysis.shapes import Shape
from onnxcompress.errors import InputError
from onnxcompress._ir_utils import const_tensor as _const_tensor

_FLOATS = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}
_QUANT_WEIGHTS = {ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT4, ir.DataType.UINT4}
# Input indices holding scales and zero points, per quantized op.
_QPARAM_SLOTS = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "ConvInteger": {2, 3},
    "MatMulInteger": {2, 3},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "DynamicQuantizeMatMul": {2, 3},
    "MatMulIntegerToFloat": {2, 3, 4, 5},
    "DynamicQuantizeLSTM": {8, 9, 10, 11},
    "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearMul": {1, 2, 4, 5, 6, 7},
    "QLinearSigmoid": {1, 2, 3, 4},
    "QLinearLeakyRelu": {1, 2, 3, 4},
    "QLinearAveragePool": {1, 2, 3, 4},
    "QLinearGlobalAveragePool": {1, 2, 3, 4},
    "QLinearSoftmax": {1, 2, 3, 4},
}
# Input indices holding an INT32 quantized bias.
_QBIAS_SLOTS = {"DequantizeLinear": {0}, "QLinearConv": {8}, "QGemm": {6}}
_WINDOW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
_PASS_RF_OPS_STOP = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm", "MatMul", "Reshape"}


@dataclass
class LayerCost:
    name: str
    op: str
    out_shape: list[int] | None
    params: int
    macs: int
    receptive_field: list[float] | None

    def to_dict(self) -> dict:
        rf = self.receptive_field
        if rf is not None:
            rf = [int(x) if float(x).is_integer() else float(x) for x in rf]
        return {
            "name": self.name,
            "op": self.op,
            "out_shape": self.out_shape,
            "params": self.params,
            "macs": self.macs,
            "receptive_field": rf,
        }


@dataclass
class CostSummary:
    params: int
    macs: int
    layers: list[LayerCost] = field(default_factory=list)


# Conv-like ops whose weight shape ``check_node`` validates against the input (the weight's input index).
_CONV_LIKE = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}


def node_macs(node: ir.Node, shapes: dict[str, Shape]) -> int:
    """MACs of one node under the module's convention, from the node's rule (``Rule.macs``);
    0 for an op without a rule, or when a needed shape is unknown."""
    from onnxcompress.channels.rules import rule_of

    if not node.outputs:
        return 0
    rule = rule_of(node)
    return 0 if rule is None else int(rule.macs(node, shapes))


def _is_qparam_use(node: ir.Node, index: int) -> bool:
    """True when ``node`` reads its input ``index`` as a scale or zero point."""
    op = node.op_type
    if op == "QLinearConcat":  # Y_scale, Y_zero_point, then (X, X_scale, X_zero_point)...
        return index < 2 or (index - 2) % 3 != 0
    if index in _QPARAM_SLOTS.get(op, ()):
        return True
    if op == "Mul":
        # onnxruntime's dynamic quantization: Mul(x_scale, w_scale), where x_scale is
        # output 1 of DynamicQuantizeLinear, gives the factor that dequantizes the result.
        for other in node.inputs:
            src = other.producer() if other is not None else None
            if src is not None and src.op_type == "DynamicQuantizeLinear" and other.index() == 1:
                return True
    return False


def _is_weight(value: ir.Value, tensor: ir.TensorProtocol) -> bool:
    """Whether a constant counts as params, by its type and how it is read (see module doc)."""
    uses = value.uses()
    if uses and all(_is_qparam_use(n, i) for n, i in uses):
        return False
    if tensor.dtype in _FLOATS or tensor.dtype in _QUANT_WEIGHTS:
        return True
    return tensor.dtype == ir.DataType.INT32 and any(i in _QBIAS_SLOTS.get(n.op_type, ()) for n, i in uses)


def _window(node: ir.Node, shapes: dict[str, Shape]) -> tuple[int, int] | None:
    """Effective kernel extent and stride along the first spatial axis (max over axes)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = shapes.get(node.inputs[1].name)
        kernel = list(w[2:]) if w is not None else None
        if "kernel_shape" in node.attributes:
            kernel = list(node.attributes["kernel_shape"].as_ints())
    else:
        kernel = list(node.attributes["kernel_shape"].as_ints()) if "kernel_shape" in node.attributes else None
    if not kernel:
        return None
    n = len(kernel)
    strides = list(node.attributes["strides"].as_ints()) if "strides" in node.attributes else [1] * n
    dil = list(node.attributes["dilations"].as_ints()) if "dilations" in node.attributes else [1] * n
    k_eff = max(d * (k - 1) + 1 for k, d in zip(kernel, dil))
    return k_eff, max(strides)


# Typed fields of a TensorProto that hold one value per element.
_TYPED_FIELDS = {ir.DataType.FLOAT: "float_data", ir.DataType.DOUBLE: "double_data",
                 ir.DataType.INT64: "int64_data", ir.DataType.INT32: "int32_data"}


def check_tensor(name: str, t: ir.TensorProtocol) -> None:
    """``InputError`` when a weight cannot hold what its shape declares: a negative dim, or too little data.

    Only sizes are compared (no data is read), so this is cheap on big external weights.
    """
    dims = [int(d) for d in t.shape.numpy()]
    if any(d < 0 for d in dims):
        raise InputError(f"weight {name!r} has a negative dim: shape {dims}")
    if t.dtype == ir.DataType.STRING:
        return
    try:
        need = t.nbytes
    except (TypeError, ValueError):
        raise InputError(f"weight {name!r} has an unknown element type ({t.dtype})") from None
    if isinstance(t, ir.ExternalTensor):
        try:
            have = os.path.getsize(t.path) - (t.offset or 0)
        except OSError:
            raise InputError(f"weight {name!r}: its external data file {t.path} cannot be read") from None
        if t.length is not None:
            have = min(have, t.length)
        if have < need:
            raise InputError(f"weight {name!r}: {max(have, 0)} bytes of external data for shape {dims} "
                             f"({t.dtype.name}, {need} bytes)")
        return
    proto = getattr(t, "raw", None)
    if proto is None or not hasattr(proto, "raw_data"):
        return
    if proto.raw_data:
        if len(proto.raw_data) != need:
            raise InputError(f"weight {name!r}: {len(proto.raw_data)} bytes of raw data for shape {dims} "
                             f"({t.dtype.name}, {need} bytes)")
        return
    field_name = _TYPED_FIELDS.get(t.dtype)
    if field_name is not None and len(getattr(proto, field_name)) < t.size:
        raise InputError(f"weight {name!r}: {len(getattr(proto, field_name))} values for shape {dims} ({t.size} needed)")


def _check_window_attrs(node: ir.Node, label: str) -> None:
    lengths = set()
    for attr in ("kernel_shape", "strides", "dilations"):
        if attr in node.attributes:
            vals = list(node.attributes[attr].as_ints())
            if not vals or any(v < 1 for v in vals):
                raise InputError(f"{label}: {attr} must be positive integers, got {vals}")
            lengths.add(len(vals))
    if len(lengths) > 1:
        raise InputError(f"{label}: kernel_shape, strides and dilations differ in length")


def check_node(node: ir.Node, shapes: dict[str, Shape]) -> None:
    """``InputError`` for a malformed window op.

    A missing weight, a non-positive or mismatched kernel/stride/dilation, or a ``group``
    that does not divide the channels would otherwise fail deep in the analysis.
    """
    if node.op_type not in _WINDOW_OPS and node.op_type not in _CONV_LIKE:
        return
    label = f"node {node.name or node.op_type!r} ({node.op_type})"
    _check_window_attrs(node, label)
    if node.op_type not in _CONV_LIKE and node.op_type != "ConvTranspose":
        return
    w_index = _CONV_LIKE.get(node.op_type, 1)
    if len(node.inputs) <= w_index or node.inputs[w_index] is None:
        raise InputError(f"{label}: no weight input")
    group = _int_attr(node, "group", 1)
    if group < 1:
        raise InputError(f"{label}: group must be positive, got {group}")
    w = _in_shape(node, w_index, shapes)
    x = _in_shape(node, 0, shapes)
    if w is None or len(w) < 2:
        return
    if w[0] % group:
        what = "input" if node.op_type == "ConvTranspose" else "output"
        raise InputError(f"{label}: group {group} does not divide its {w[0]} {what} channels")
    c_in = x[1] if x is not None and len(x) >= 2 else None
    expected = w[0] if node.op_type == "ConvTranspose" else w[1] * group
    if c_in is not None and c_in != expected:
        if c_in % group:
            raise InputError(f"{label}: group {group} does not divide its {c_in} input channels")
        raise InputError(f"{label}: the weight takes {expected} input channels (group {group}), the input has {c_in}")


def analyse_costs(model: ir.Model, shapes: dict[str, Shape]) -> CostSummary:
    """Per-node params, MACs and receptive fields, in graph order.

    Raises ``InputError`` for weights that cannot hold their declared shape and for
    malformed nodes (``check_node``), such as a ``group`` that does not divide the channels;
    any other failure to read a node (an attribute of the wrong type, missing inputs) is
    reported as an ``InputError`` naming the node.
    """
    graph = model.graph
    for name, v in graph.initializers.items():
        if v.const_value is not None:
            _guarded(name, "initializer", check_tensor, name, v.const_value)
    seen: set[int] = set()
    rf: dict[str, tuple[float, float]] = {}
    from onnxcompress.analysis.shapes import graph_inputs

    for v in graph_inputs(model):
        s = shapes.get(v.name)
        if s is not None and len(s) >= 3:
            rf[v.name] = (1.0, 1.0)
    layers: list[LayerCost] = []
    for node in graph:
        label = node.name or f"{node.op_type}_{len(layers)}"
        layers.append(_guarded(label, node.op_type, _node_cost, node, label, shapes, seen, rf))
    total_params = sum(layer.params for layer in layers)
    # Initializers nobody reads still count, once.
    for v in graph.initializers.values():
        t = v.const_value
        if t is not None and id(t) not in seen and _is_weight(v, t):
            seen.add(id(t))
            total_params += t.size
    return CostSummary(params=total_params, macs=sum(layer.macs for layer in layers), layers=layers)


def _guarded(name: str, what: str, fn, *args):
    """``fn(*args)``, with a malformed node or tensor turned into one clear InputError."""
    try:
        return fn(*args)
    except InputError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, UnicodeError) as exc:
        raise InputError(f"malformed {what} {name!r}: {type(exc).__name__}: {exc}") from exc


def _node_cost(node: ir.Node, label: str, shapes: dict[str, Shape], seen: set[int], rf: dict) -> LayerCost:
    params = 0
    for inp in node.inputs:
        t = _const_tensor(inp)
        if t is None or id(t) in seen:
            continue
        if inp.producer() is not None and inp.producer().op_type == "Constant":
            continue  # counted at the Constant node itself
        if not _is_weight(inp, t):
            continue
        seen.add(id(t))
        params += t.size
    check_node(node, shapes)
    if node.op_type == "Constant":
        t = _const_tensor(node.outputs[0])
        if t is not None:
            check_tensor(label, t)
        if t is not None and id(t) not in seen and _is_weight(node.outputs[0], t):
            seen.add(id(t))
            params += t.size
    node_rf = _receptive_field(node, shapes, rf)
    out_shape = shapes.get(node.outputs[0].name) if node.outputs else None
    return LayerCost(
        name=label,
        op=node.op_type,
        out_shape=list(out_shape) if out_shape is not None else None,
        params=params,
        macs=node_macs(node, shapes),
        receptive_field=list(node_rf) if node_rf is not None else None,
    )


def _receptive_field(node: ir.Node, shapes: dict[str, Shape], rf: dict) -> tuple[float, float] | None:
    """Receptive field (size, jump) of this node's outputs on the image input; updates ``rf``."""
    in_rf = [rf[i.name] for i in node.inputs if i is not None and i.name in rf]
    if not in_rf or node.op_type in _PASS_RF_OPS_STOP:
        return None
    r, j = max(x[0] for x in in_rf), max(x[1] for x in in_rf)
    if node.op_type in _WINDOW_OPS:
        win = _window(node, shapes)
        if win is not None:
            k, s = win
            if node.op_type == "ConvTranspose":
                r, j = r + (k - 1) * j / s, j / s
            else:
                r, j = r + (k - 1) * j, j * s
    elif node.op_type in ("Resize", "Upsample"):
        x, y = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
        if x is not None and y is not None and len(x) >= 3 and x[-1]:
            j = j * x[-1] / y[-1]
    for o in node.outputs:
        rf[o.name] = (r, j)
    return r, j
