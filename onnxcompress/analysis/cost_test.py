"""MACs and params of recurrent and int8 ops, against hand-computed counts."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import onnxcompress as oc
from onnxcompress.analysis.cost import node_macs

RNG = np.random.default_rng(0)


def _init(name: str, shape, dtype=np.float32) -> onnx.TensorProto:
    if np.issubdtype(dtype, np.integer):
        low = 0 if np.issubdtype(dtype, np.unsignedinteger) else -8
        arr = RNG.integers(low, 8, size=shape).astype(dtype)
    else:
        arr = RNG.standard_normal(shape).astype(dtype)
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, inits, out_type: int = TP.FLOAT, ms: bool = False) -> onnx.ModelProto:
    """A tiny model with one output ``y``; ``inputs`` are (name, elem_type, shape)."""
    ins = [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info("y", out_type, None)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    g = helper.make_graph(nodes, "g", ins, outs, inits)
    return helper.make_model(g, opset_imports=opsets)


def _macs_by_op(rep) -> dict[str, int]:
    out: dict[str, int] = {}
    for layer in rep.layers:
        out[layer.op] = out.get(layer.op, 0) + layer.macs
    return out


# --- recurrent ops ---------------------------------------------------------------

# (op, gates, directions, layout, seq, batch, input, hidden)
RECURRENT = [
    ("LSTM", 4, 1, 0, 5, 2, 3, 4),
    ("GRU", 3, 2, 1, 5, 2, 3, 4),
    ("RNN", 1, 1, 0, 6, 1, 3, 5),
    ("LSTM", 4, 2, 1, 7, 3, 6, 2),
]
# Hand-computed: seq x batch x dirs x gates x hidden x (input + hidden)
RECURRENT_MACS = [
    5 * 2 * 1 * 4 * 4 * (3 + 4),  # 1120
    5 * 2 * 2 * 3 * 4 * (3 + 4),  # 1680
    6 * 1 * 1 * 1 * 5 * (3 + 5),  # 240
    7 * 3 * 2 * 4 * 2 * (6 + 2),  # 2688
]
# W + R + B elements: dirs x gates*hidden x input, dirs x gates*hidden x hidden, dirs x 2*gates*hidden
RECURRENT_PARAMS = [
    1 * 16 * 3 + 1 * 16 * 4 + 1 * 32,  # 144
    2 * 12 * 3 + 2 * 12 * 4 + 2 * 24,  # 216
    1 * 5 * 3 + 1 * 5 * 5 + 1 * 10,  # 50
    2 * 8 * 6 + 2 * 8 * 2 + 2 * 16,  # 160
]


def _recurrent_model(op, gates, dirs, layout, seq, batch, inp, hidden) -> onnx.ModelProto:
    x_shape = (seq, batch, inp) if layout == 0 else (batch, seq, inp)
    inits = [
        _init("W", (dirs, gates * hidden, inp)),
        _init("R", (dirs, gates * hidden, hidden)),
        _init("B", (dirs, 2 * gates * hidden)),
    ]
    direction = "bidirectional" if dirs == 2 else "forward"
    node = helper.make_node(op, ["x", "W", "R", "B"], ["y"], hidden_size=hidden, layout=layout, direction=direction)
    return _model([node], [("x", TP.FLOAT, x_shape)], inits)


@pytest.mark.parametrize(
    "case,macs,params",
    list(zip(RECURRENT, RECURRENT_MACS, RECURRENT_PARAMS)),
    ids=[f"{c[0]}-dirs{c[2]}-layout{c[3]}" for c in RECURRENT],
)
def test_recurrent_macs_and_params(case, macs, params):
    rep = oc.inspect(_recurrent_model(*case))
    assert rep.macs == macs
    assert rep.params == params
    assert rep.layers[0].macs == macs and rep.layers[0].params == params


def test_recurrent_hidden_size_from_r_when_attribute_missing():
    m = _recurrent_model("GRU", 3, 1, 0, 4, 1, 3, 2)
    attrs = m.graph.node[0].attribute
    attrs.remove(next(a for a in attrs if a.name == "hidden_size"))  # read it from R [1, 6, 2]
    rep = oc.inspect(m)
    assert rep.macs == 4 * 1 * 1 * 3 * 2 * (3 + 2)  # 120


# --- int8 QOperator ops --------------------------------------------------------------

# x [1, 3, 6, 6], w [8, 3, 3, 3], pads 1 -> y [1, 8, 6, 6]
CONV_MACS = 1 * 8 * 6 * 6 * 3 * 3 * 3  # 7776
CONV_W = 8 * 3 * 3 * 3  # 216


def test_conv_integer():
    inits = [_init("w", (8, 3, 3, 3), np.int8), _init("xz", (), np.uint8), _init("wz", (), np.int8)]
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1] * 4)
    rep = oc.inspect(_model([node], [("x", TP.UINT8, (1, 3, 6, 6))], inits, TP.INT32))
    assert rep.macs == CONV_MACS
    assert rep.params == CONV_W  # zero points are not params


def test_qlinear_conv_per_channel_with_int32_bias():
    inits = [
        _init("xs", ()), _init("xz", (), np.uint8),
        _init("w", (8, 3, 3, 3), np.int8), _init("ws", (8,)), _init("wz", (8,), np.int8),
        _init("ys", ()), _init("yz", (), np.uint8),
        _init("b", (8,), np.int32),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1] * 4)
    rep = oc.inspect(_model([node], [("x", TP.UINT8, (1, 3, 6, 6))], inits, TP.UINT8))
    assert rep.macs == CONV_MACS
    assert rep.params == CONV_W + 8  # int8 weight + int32 bias; per-channel scales/zero points excluded


# A [2, 4, 6] x B [6, 5] -> [2, 4, 5], K = 6
MATMUL_MACS = 2 * 4 * 5 * 6  # 240
MATMUL_W = 6 * 5  # 30


def test_matmul_integer():
    inits = [_init("b", (6, 5), np.int8), _init("az", (), np.uint8), _init("bz", (), np.int8)]
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    rep = oc.inspect(_model([node], [("a", TP.UINT8, (2, 4, 6))], inits, TP.INT32))
    assert rep.macs == MATMUL_MACS
    assert rep.params == MATMUL_W


def test_qlinear_matmul():
    inits = [
        _init("as", ()), _init("az", (), np.uint8),
        _init("b", (6, 5), np.uint8), _init("bs", ()), _init("bz", (), np.uint8),
        _init("ys", ()), _init("yz", (), np.uint8),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    rep = oc.inspect(_model([node], [("a", TP.UINT8, (2, 4, 6))], inits, TP.UINT8))
    assert rep.macs == MATMUL_MACS
    assert rep.params == MATMUL_W


def _dq_lstm_model(hidden_attr: bool) -> onnx.ModelProto:
    # seq 5, batch 2, input 3, hidden 4, one direction; W/R stored [dirs, in, 4h] / [dirs, h, 4h].
    inits = [
        _init("W", (1, 3, 16), np.int8), _init("R", (1, 4, 16), np.int8), _init("B", (1, 32)),
        _init("ws", (1,)), _init("wz", (1,), np.int8), _init("rs", (1,)), _init("rz", (1,), np.int8),
    ]
    ins = ["x", "W", "R", "B", "", "", "", "", "ws", "wz", "rs", "rz"]
    attrs = {"hidden_size": 4} if hidden_attr else {}
    node = helper.make_node("DynamicQuantizeLSTM", ins, ["y"], domain="com.microsoft", **attrs)
    return _model([node], [("x", TP.FLOAT, (5, 2, 3))], inits, ms=True)


@pytest.mark.parametrize("hidden_attr", [True, False])
def test_dynamic_quantize_lstm(hidden_attr):
    rep = oc.inspect(_dq_lstm_model(hidden_attr))
    # ONNX inference cannot size the contrib op, so onnxruntime measures its output; without
    # hidden_size onnxruntime refuses the node too, the output stays unsized, and the MACs
    # still come from the input and weight shapes.
    assert rep.layers[0].out_shape == ([5, 1, 2, 4] if hidden_attr else None)
    assert rep.macs == 5 * 2 * 1 * 4 * 4 * (3 + 4)  # 1120, same as the float LSTM
    assert rep.params == 1 * 3 * 16 + 1 * 4 * 16 + 1 * 32  # 144: W, R, B; scales and zero points excluded


def test_unknown_shapes_count_zero_without_crashing():
    """Nodes whose shapes are unknown (e.g. a contrib op inference cannot size) count 0."""
    x = ir.Value(name="x")
    vals = [ir.Value(name=f"v{i}") for i in range(12)]
    ops = [
        ("", "Conv", 2), ("", "ConvInteger", 4), ("", "QLinearConv", 9), ("", "MatMulInteger", 4),
        ("", "QLinearMatMul", 8), ("", "LSTM", 3), ("", "GRU", 3), ("", "RNN", 3), ("", "Gemm", 2),
        ("com.microsoft", "DynamicQuantizeLSTM", 12), ("com.microsoft", "QGemm", 9),
    ]
    for domain, op, n in ops:
        node = ir.Node(domain, op, [x, *vals[: n - 1]], num_outputs=1)
        assert node_macs(node, {}) == 0
        # Only some inputs sized: still 0, no crash.
        assert node_macs(node, {"x": (5, 2, 3)}) == 0
    short = ir.Node("", "LSTM", [x], num_outputs=1)  # W missing altogether
    assert node_macs(short, {"x": (5, 2, 3)}) == 0


# --- QDQ and onnxruntime-quantized models --------------------------------------------


def test_qdq_conv_counts_like_float():
    inits = [
        _init("xs", ()), _init("xz", (), np.uint8),
        _init("w", (8, 3, 3, 3), np.int8), _init("ws", (8,)), _init("wz", (8,), np.int8),
        _init("b", (8,), np.int32), _init("bs", (8,)), _init("bz", (8,), np.int32),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1] * 4),
        helper.make_node("Reshape", ["c", "shape"], ["y"]),
    ]
    rep = oc.inspect(_model(nodes, [("x", TP.FLOAT, (1, 3, 6, 6))], inits))
    assert _macs_by_op(rep)["Conv"] == CONV_MACS
    assert rep.macs == CONV_MACS
    # int8 weight (216) + int32 bias (8); scales, zero points and the int64 shape are not params
    assert rep.params == CONV_W + 8


def _float_conv_matmul(path) -> None:
    # Conv [1,3,6,6] -> [1,8,6,6], Relu, Transpose to [1,6,6,8], MatMul by [8,5] -> [1,6,6,5]
    inits = [_init("w", (8, 3, 3, 3)), _init("b", (8,)), _init("m", (8, 5))]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["t", "m"], ["y"]),
    ]
    onnx.save(_model(nodes, [("x", TP.FLOAT, (1, 3, 6, 6))], inits), path)


FLOAT_MACS = CONV_MACS + 1 * 6 * 6 * 5 * 8  # 7776 + 1440 = 9216
FLOAT_PARAMS = CONV_W + 8 + 8 * 5  # 264


class _Reader:
    def __init__(self):
        rng = np.random.default_rng(1)
        self._it = iter([{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self._it, None)


@pytest.mark.parametrize("mode", ["dynamic", "static_qdq", "static_qoperator"])
def test_onnxruntime_quantized_model_counts_like_float(tmp_path, mode):
    q = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _float_conv_matmul(src)
    base = oc.inspect(src)
    assert (base.macs, base.params) == (FLOAT_MACS, FLOAT_PARAMS)
    if mode == "dynamic":
        q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QInt8)
        expect_ops = {"ConvInteger", "MatMulInteger"}
    else:
        fmt = q.QuantFormat.QDQ if mode == "static_qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(src), str(dst), _Reader(), quant_format=fmt)
        expect_ops = {"Conv", "MatMul"} if mode == "static_qdq" else {"QLinearConv", "QLinearMatMul"}
    rep = oc.inspect(dst)
    assert expect_ops <= {layer.op for layer in rep.layers}
    assert rep.macs == FLOAT_MACS
    # int8 weights and the (float or int32) bias; no scales, zero points or shape constants
    assert rep.params == FLOAT_PARAMS


def test_onnxruntime_dynamic_lstm_counts_like_float(tmp_path):
    q = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_recurrent_model("LSTM", 4, 2, 0, 5, 2, 3, 4), src)
    q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QInt8)
    rep = oc.inspect(dst)
    assert "DynamicQuantizeLSTM" in {layer.op for layer in rep.layers}
    assert rep.macs == 5 * 2 * 2 * 4 * 4 * (3 + 4)  # 2240, as the float LSTM
    assert rep.params == 2 * 16 * 3 + 2 * 16 * 4 + 2 * 32  # 288
