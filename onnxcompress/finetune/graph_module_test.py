"""The torch executor matches onnxruntime op by op and on the model corpus, and trains.

Small graphs per op family (attribute and input forms across opsets) are run in both and
compared; every committed model is compared on random inputs; gradients reach the Conv
weights; trained weights written back into the proto reproduce the torch forward in
onnxruntime; unsupported nodes are refused with UnsupportedGraph.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune import (  # noqa: E402
    GraphModule, UnsupportedGraph, apply_state_arrays, unsupported_ops)

MODELS = Path(__file__).resolve().parents[2] / "models"
ort.set_default_logger_severity(3)
RNG = np.random.default_rng(0)


def f32(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def i64(*values):
    return np.array(values, dtype=np.int64)


def make(nodes, inputs, inits=None, opset=17, outputs=None):
    """A model whose graph inputs are `inputs` and initializers `inits` (name -> array)."""
    inits = inits or {}
    outputs = outputs or [o for o in nodes[-1].output if o]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    ir = 8 if opset <= 17 else 9 if opset <= 19 else 10
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def run_ort(model, feeds, outputs=None):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def run_torch(model, feeds, outputs=None, **kw):
    gm = GraphModule(model, **kw)
    with torch.no_grad():
        got = gm({k: torch.from_numpy(v) for k, v in feeds.items()}, outputs)
    return {k: v.numpy() for k, v in got.items()}


def assert_close(got, ref, tol=1e-5):
    assert set(got) == set(ref)
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape, (name, have.shape, want.shape)
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(have, want, err_msg=name)
        else:
            scale = max(1.0, float(np.abs(want).max(initial=0.0)))
            np.testing.assert_allclose(have, want, rtol=tol * 10, atol=tol * scale, err_msg=name)


N = helper.make_node
X4 = f32(2, 4, 9, 10)
CASES = {
    # ---- conv family
    "conv_pads_strides": ([N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
                          {"x": X4}, {"w": f32(6, 4, 3, 3), "b": f32(6)}),
    "conv_group_dil_asym": ([N("Conv", ["x", "w"], ["y"], group=2, dilations=[2, 1], pads=[0, 1, 2, 0])],
                            {"x": X4}, {"w": f32(6, 2, 3, 3)}),
    "conv_same_upper": ([N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                        {"x": X4}, {"w": f32(3, 4, 4, 4)}),
    "conv_same_lower": ([N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 3])],
                        {"x": X4}, {"w": f32(3, 4, 4, 3)}),
    "conv_valid": ([N("Conv", ["x", "w"], ["y"], auto_pad="VALID", strides=[2, 2])],
                   {"x": X4}, {"w": f32(3, 4, 3, 3)}),
    "conv_depthwise": ([N("Conv", ["x", "w", "b"], ["y"], group=4, pads=[1, 1, 1, 1])],
                       {"x": X4}, {"w": f32(4, 1, 3, 3), "b": f32(4)}),
    "conv_1d": ([N("Conv", ["x", "w", "b"], ["y"], pads=[2, 1], strides=[2])],
                {"x": f32(2, 3, 17)}, {"w": f32(5, 3, 4), "b": f32(5)}),
    "convT_outpad": ([N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                        output_padding=[1, 1])], {"x": X4}, {"w": f32(4, 3, 3, 3), "b": f32(3)}),
    "convT_group_asym": ([N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 1], group=2, pads=[0, 1, 1, 0])],
                         {"x": X4}, {"w": f32(4, 2, 2, 3)}),
    "convT_1d": ([N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[3], dilations=[2])],
                 {"x": f32(2, 3, 7)}, {"w": f32(3, 2, 3), "b": f32(2)}),
    # ---- dense
    "gemm_full": ([N("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transA=1, transB=1)],
                  {"a": f32(5, 3)}, {"b": f32(4, 5), "c": f32(4)}),
    "gemm_noc": ([N("Gemm", ["a", "b"], ["y"])], {"a": f32(3, 5)}, {"b": f32(5, 4)}),
    "matmul_3d": ([N("MatMul", ["a", "b"], ["y"])], {"a": f32(2, 3, 5)}, {"b": f32(5, 4)}),
    "einsum": ([N("Einsum", ["a", "b"], ["y"], equation="bij, bjk -> bik")],
               {"a": f32(2, 3, 4), "b": f32(2, 4, 5)}, {}),
    # ---- norms
    "batchnorm": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], {"x": X4},
                  {"s": f32(4), "b": f32(4), "m": f32(4), "v": f32(4, lo=0.5, hi=2)}),
    "batchnorm_opset7": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=1)], {"x": X4},
                         {"s": f32(4), "b": f32(4), "m": f32(4), "v": f32(4, lo=0.5, hi=2)}, 7),
    "layernorm_last": ([N("LayerNormalization", ["x", "s", "b"], ["y"])], {"x": X4},
                       {"s": f32(10), "b": f32(10)}),
    "layernorm_axis1": ([N("LayerNormalization", ["x", "s"], ["y"], axis=1, epsilon=1e-3)], {"x": X4},
                        {"s": f32(4, 9, 10)}),
    "instancenorm": ([N("InstanceNormalization", ["x", "s", "b"], ["y"])], {"x": X4}, {"s": f32(4), "b": f32(4)}),
    "groupnorm_21": ([N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)], {"x": X4},
                     {"s": f32(4), "b": f32(4)}, 21),
    "groupnorm_18": ([N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)], {"x": X4},
                     {"s": f32(2), "b": f32(2)}, 18),
    # ---- pooling
    "maxpool": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], {"x": X4}, {}),
    "maxpool_ceil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)], {"x": X4}, {}),
    "maxpool_asym_dil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], dilations=[2, 1], pads=[0, 2, 1, 0])],
                         {"x": X4}, {}),
    "maxpool_same": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")],
                     {"x": X4}, {}),
    "maxpool_asym_ceil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[4, 4], strides=[3, 3], pads=[3, 2, 3, 1],
                             ceil_mode=1)], {"x": X4}, {}),
    "avgpool_asym_ceil": ([N("AveragePool", ["x"], ["y"], kernel_shape=[1, 2], strides=[3, 2], pads=[0, 0, 0, 1],
                             ceil_mode=1)], {"x": X4}, {}),
    "avgpool_excl": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                     {"x": X4}, {}),
    "avgpool_incl_ceil": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0],
                             count_include_pad=1, ceil_mode=1)], {"x": X4}, {}),
    "avgpool_ceil_nopad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                           {"x": X4}, {}),
    "global_pools": ([N("GlobalAveragePool", ["x"], ["a"]), N("GlobalMaxPool", ["x"], ["m"]),
                      N("Add", ["a", "m"], ["y"])], {"x": X4}, {}),
    # ---- softmax across opsets (opset < 13 flattens at axis)
    "softmax_11": ([N("Softmax", ["x"], ["y"], axis=1)], {"x": X4}, {}, 11),
    "logsoftmax_11": ([N("LogSoftmax", ["x"], ["y"])], {"x": X4}, {}, 11),
    "softmax_13": ([N("Softmax", ["x"], ["y"], axis=1)], {"x": X4}, {}, 13),
    "logsoftmax_13": ([N("LogSoftmax", ["x"], ["y"])], {"x": X4}, {}, 13),
    # ---- clip forms
    "clip_attr": ([N("Clip", ["x"], ["y"], min=-0.3, max=0.4)], {"x": X4}, {}, 9),
    "clip_inputs": ([N("Clip", ["x", "lo", "hi"], ["y"])], {"x": X4},
                    {"lo": np.array(-0.3, np.float32), "hi": np.array(0.4, np.float32)}, 11),
    "clip_min_only": ([N("Clip", ["x", "lo"], ["y"])], {"x": X4}, {"lo": np.array(-0.3, np.float32)}, 13),
    # ---- binary, variadic, logic
    "binary_bcast": ([N("Add", ["a", "b"], ["s"]), N("Sub", ["s", "b"], ["d"]), N("Mul", ["d", "b"], ["m"]),
                      N("Div", ["m", "c"], ["y"])], {"a": X4, "b": f32(4, 1, 10)}, {"c": f32(10, lo=0.5, hi=1)}),
    "pow": ([N("Pow", ["a", "p"], ["y"])], {"a": f32(3, 4, lo=0.1, hi=2)}, {"p": np.array([2.0, 0.5, 3.0, 1.5], np.float32)}),
    "int_div": ([N("Div", ["a", "b"], ["y"])], {"a": i64(7, -7, 9, 10)}, {"b": i64(2, 2, -4, 3)}),
    "variadic": ([N("Max", ["a", "b", "c"], ["mx"]), N("Min", ["a", "b", "c"], ["mn"]),
                  N("Sum", ["a", "b", "c"], ["s"]), N("Mean", ["a", "b", "c"], ["me"]),
                  N("Concat", ["mx", "mn", "s", "me"], ["y"], axis=0)],
                 {"a": f32(2, 3), "b": f32(3), "c": f32(1, 3)}, {}),
    "logic_where": ([N("Greater", ["a", "b"], ["g"]), N("Less", ["a", "c"], ["l"]), N("Equal", ["g", "l"], ["e"]),
                     N("Not", ["e"], ["n"]), N("And", ["n", "g"], ["an"]), N("Where", ["an", "a", "b"], ["y"])],
                    {"a": f32(3, 4), "b": f32(4), "c": f32(3, 1)}, {}),
    # ---- reductions (attribute axes up to 17, input axes from 18; ReduceSum input from 13)
    "reduce_attr_13": ([N("ReduceMean", ["x"], ["a"], axes=[2, 3]), N("ReduceMax", ["x"], ["b"], axes=[1], keepdims=0),
                        N("ReduceMin", ["x"], ["c"], axes=[-1]), N("ReduceL2", ["x"], ["d"], axes=[1, 3], keepdims=0),
                        N("ReduceSum", ["x", "ax"], ["e"], keepdims=0), N("ReduceMean", ["x"], ["f"])],
                       {"x": X4}, {"ax": i64(0, 2)}, 13, ["a", "b", "c", "d", "e", "f"]),
    "reduce_input_18": ([N("ReduceMean", ["x", "ax"], ["a"]), N("ReduceMax", ["x", "ax"], ["b"], keepdims=0),
                         N("ReduceL2", ["x", "ax"], ["c"]), N("ReduceSum", ["x"], ["d"]),
                         N("ReduceMin", ["x", "ax"], ["e"]), N("ReduceProd", ["x", "ax"], ["f"], keepdims=0),
                         N("ReduceProd", ["x"], ["g"])],
                        {"x": X4}, {"ax": i64(1, -1)}, 18, ["a", "b", "c", "d", "e", "f", "g"]),
    "argmax": ([N("ArgMax", ["x"], ["a"], axis=1), N("ArgMax", ["x"], ["b"], axis=-1, keepdims=0, select_last_index=1)],
               {"x": np.round(X4 * 2)}, {}, 13, ["a", "b"]),
    # ---- shape and tensor ops
    "reshape_flatten": ([N("Reshape", ["x", "s"], ["r"]), N("Flatten", ["r"], ["y"], axis=2)],
                        {"x": X4}, {"s": i64(0, -1, 5, 2)}),
    "reshape_allowzero": ([N("Reshape", ["x", "s"], ["y"], allowzero=1)], {"x": f32(2, 3)}, {"s": i64(3, 2)}, 14),
    "transpose": ([N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), N("Transpose", ["t"], ["y"])], {"x": X4}, {}),
    "squeeze_attr": ([N("Unsqueeze", ["x"], ["u"], axes=[0, -1]), N("Squeeze", ["u"], ["y"], axes=[0])],
                     {"x": f32(3, 4)}, {}, 11),
    "squeeze_input": ([N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u"], ["y"])],
                      {"x": f32(3, 4)}, {"a": i64(1, 3)}, 13),
    "split_attr": ([N("Split", ["x"], ["a", "b"], axis=1, split=[1, 3])], {"x": X4}, {}, 11),
    "split_input": ([N("Split", ["x", "s"], ["a", "b", "c"], axis=-1)], {"x": X4}, {"s": i64(2, 5, 3)}, 13),
    "split_equal": ([N("Split", ["x"], ["a", "b"], axis=1)], {"x": X4}, {}, 13),
    "split_num_outputs": ([N("Split", ["x"], ["a", "b", "c"], axis=3, num_outputs=3)], {"x": X4}, {}, 18),
    "slice_attr": ([N("Slice", ["x"], ["y"], starts=[1, -5], ends=[100, -1], axes=[1, 3])], {"x": X4}, {}, 9),
    "slice_steps": ([N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], {"x": X4},
                    {"st": i64(-1, 0, 8), "en": i64(-100, 9, 1), "ax": i64(3, 2, 1), "sp": i64(-2, 3, -3)}, 13),
    "gather": ([N("Gather", ["x", "i"], ["a"], axis=1), N("Gather", ["x", "j"], ["b"], axis=-1)],
               {"x": X4}, {"i": np.array([[0, -1], [2, 1]], np.int64), "j": np.array(-2, np.int64)}, 13, ["a", "b"]),
    "shape_size": ([N("Shape", ["x"], ["s"], start=1, end=-1), N("Size", ["x"], ["n"]), N("Shape", ["x"], ["f"])],
                   {"x": X4}, {}, 15, ["s", "n", "f"]),
    "cast": ([N("Cast", ["x"], ["i"], to=TensorProto.INT32), N("Cast", ["i"], ["y"], to=TensorProto.FLOAT)],
             {"x": X4 * 3}, {}),
    "const_of_shape_expand_tile": (
        [N("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
         N("Expand", ["x", "e"], ["ex"]), N("Tile", ["ex", "r"], ["t"]), N("Mul", ["t", "c"], ["y"])],
        {"x": f32(3, 1)}, {"s": i64(2, 3, 4), "e": i64(2, 1, 2), "r": i64(1, 1, 2)}),
    "identity_dropout": ([N("Identity", ["x"], ["i"]), N("Dropout", ["i"], ["y"], ratio=0.5)], {"x": X4}, {}, 11),
    "range": ([N("Range", ["a", "b", "c"], ["y"])], {},
              {"a": np.array(1.0, np.float32), "b": np.array(7.5, np.float32), "c": np.array(1.5, np.float32)}, 11),
    "constant_forms": ([N("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]), N("Constant", [], ["k"], value_int=2),
                        N("Cast", ["k"], ["kf"], to=TensorProto.FLOAT), N("Mul", ["c", "kf"], ["m"]),
                        N("Add", ["x", "m"], ["y"])], {"x": f32(2, 3)}, {}, 13),
    "shape_subgraph": ([N("Shape", ["x"], ["s"]), N("Gather", ["s", "z"], ["g"], axis=0),
                        N("Unsqueeze", ["g", "z1"], ["u"]), N("Concat", ["u", "m1"], ["c"], axis=0),
                        N("Reshape", ["x", "c"], ["y"])], {"x": X4},
                       {"z": np.array(0, np.int64), "z1": i64(0), "m1": i64(-1)}, 13),
    # ---- pads
    "pad_const_11": ([N("Pad", ["x", "p", "v"], ["y"])], {"x": X4},
                     {"p": i64(0, 0, 1, 2, 0, 0, 2, -1), "v": np.array(0.5, np.float32)}, 11),
    "pad_reflect": ([N("Pad", ["x", "p"], ["y"], mode="reflect")], {"x": X4}, {"p": i64(0, 0, 2, 3, 0, 1, 1, 2)}, 13),
    "pad_edge": ([N("Pad", ["x", "p"], ["y"], mode="edge")], {"x": X4}, {"p": i64(0, 1, 2, 3, 0, 0, 1, 2)}, 13),
    "pad_attr_opset9": ([N("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")], {"x": X4}, {}, 9),
    "pad_axes_18": ([N("Pad", ["x", "p", "", "a"], ["y"], mode="edge")], {"x": X4}, {"p": i64(1, 2, 3, 0), "a": i64(-1, 2)}, 18),
}

UNARY = {"Relu": {}, "LeakyRelu": {"alpha": 0.2}, "Sigmoid": {}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
         "HardSwish": {}, "Tanh": {}, "Elu": {"alpha": 0.7}, "Selu": {}, "Erf": {}, "Softplus": {}, "Neg": {},
         "Abs": {}, "Exp": {}, "Floor": {}, "Ceil": {}, "Round": {}}
for _op, _attrs in UNARY.items():
    CASES[f"unary_{_op}"] = ([N(_op, ["x"], ["y"], **_attrs)], {"x": X4 * 3}, {})
for _op in ("Sqrt", "Log", "Reciprocal"):
    CASES[f"unary_{_op}"] = ([N(_op, ["x"], ["y"])], {"x": f32(2, 5, lo=0.1, hi=3)}, {})
CASES["round_ties"] = ([N("Round", ["x"], ["y"])], {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32)}, {})
CASES["prelu"] = ([N("PRelu", ["x", "s"], ["y"])], {"x": X4}, {"s": f32(4, 1, 1)})
for _approx in ("none", "tanh"):
    CASES[f"gelu_{_approx}"] = ([N("Gelu", ["x"], ["y"], approximate=_approx)], {"x": X4 * 3}, {}, 20)

# ---- Resize / Upsample: every coordinate and nearest mode torch can express
EMPTY = np.zeros(0, np.float32)
for _coord in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"):
    for _mode, _nearest in (("nearest", "round_prefer_floor"), ("nearest", "round_prefer_ceil"),
                            ("nearest", "floor"), ("nearest", "ceil"), ("linear", None)):
        if _coord == "tf_half_pixel_for_nn" and _mode == "linear":
            continue
        _extra = {"nearest_mode": _nearest} if _nearest else {}
        for _what, _val in (("up", np.array([1, 1, 2, 1.5], np.float32)), ("down", np.array([1, 1, 0.5, 0.25], np.float32))):
            CASES[f"resize_{_mode}_{_nearest}_{_coord}_{_what}"] = (
                [N("Resize", ["x", "roi", "sc"], ["y"], mode=_mode, coordinate_transformation_mode=_coord, **_extra)],
                {"x": X4}, {"roi": EMPTY, "sc": _val}, 13)
CASES["resize_linear_symmetric"] = ([N("Resize", ["x", "", "sc"], ["y"], mode="linear",
                                       coordinate_transformation_mode="half_pixel_symmetric")], {"x": X4},
                                    {"sc": np.array([1, 1, 1.7, 0.6], np.float32)}, 19)
CASES["resize_sizes_linear"] = ([N("Resize", ["x", "", "", "sz"], ["y"], mode="linear")], {"x": X4},
                                {"sz": i64(2, 4, 5, 17)}, 13)
CASES["resize_sizes_nearest_axes"] = ([N("Resize", ["x", "", "", "sz"], ["y"], axes=[3, 2])], {"x": X4},
                                      {"sz": i64(5, 18)}, 18)
CASES["resize_10"] = ([N("Resize", ["x", "sc"], ["y"])], {"x": X4}, {"sc": np.array([1, 1, 2, 3], np.float32)}, 10)
CASES["resize_10_linear"] = ([N("Resize", ["x", "sc"], ["y"], mode="linear")], {"x": X4},
                             {"sc": np.array([1, 1, 2, 2], np.float32)}, 10)
CASES["upsample_9"] = ([N("Upsample", ["x", "sc"], ["y"])], {"x": X4}, {"sc": np.array([1, 1, 2, 2], np.float32)}, 9)
CASES["upsample_7_linear"] = ([N("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 3.0])], {"x": X4}, {}, 7)


def _lstm_case(direction, layout=0, states=True, bias=True):
    nd, hid, inp, seq, batch = (2 if direction == "bidirectional" else 1), 5, 3, 6, 2
    inits = {"w": f32(nd, 4 * hid, inp), "r": f32(nd, 4 * hid, hid)}
    names = ["x", "w", "r", "b" if bias else "", "", "h0" if states else "", "c0" if states else ""]
    if bias:
        inits["b"] = f32(nd, 8 * hid)
    st = (batch, nd, hid) if layout else (nd, batch, hid)
    if states:
        inits.update(h0=f32(*st), c0=f32(*st))
    x = f32(batch, seq, inp) if layout else f32(seq, batch, inp)
    node = N("LSTM", names, ["y", "yh", "yc"], hidden_size=hid, direction=direction, layout=layout)
    return [node], {"x": x}, inits, 14


CASES["lstm_bidirectional"] = _lstm_case("bidirectional")
CASES["lstm_forward_nostate"] = _lstm_case("forward", states=False, bias=False)
CASES["lstm_reverse"] = _lstm_case("reverse")


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case):
    nodes, inputs, inits, *rest = CASES[case]
    opset = rest[0] if rest else 17
    outputs = rest[1] if len(rest) > 1 else None
    model = make(nodes, inputs, inits, opset, outputs)
    assert unsupported_ops(model) == {}
    assert_close(run_torch(model, inputs, outputs), run_ort(model, inputs, outputs))


def test_the_comparison_can_fail():
    """A wrong attribute reading would be caught: the same graph with another alpha differs."""
    model = make([N("LeakyRelu", ["x"], ["y"], alpha=0.2)], {"x": X4})
    other = make([N("LeakyRelu", ["x"], ["y"], alpha=0.21)], {"x": X4})
    with pytest.raises(AssertionError):
        assert_close(run_torch(other, {"x": X4}), run_ort(model, {"x": X4}))


# ---------------------------------------------------------------- the committed models

with open(MODELS / "MODELS.json") as _f:
    CORPUS = json.load(_f)


def _corpus_feeds(path: Path, batch: int = 2) -> dict[str, np.ndarray]:
    """Random feeds at the shapes MODELS.json records, or the declared ones (symbolic dims -> batch)."""
    rng = np.random.default_rng(1)
    if path.name in CORPUS:
        shapes = CORPUS[path.name]["input_shapes"]
        return {k: rng.random([batch] + s[1:], dtype=np.float32) for k, s in shapes.items()}
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            pytest.skip(f"{path.name}: input {inp.name} needs a shape (add it to MODELS.json)")
        feeds[inp.name] = rng.random([batch] + dims[1:], dtype=np.float32)
    return feeds


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.onnx")), ids=lambda p: p.name)
def test_model_matches_onnxruntime(path):
    model = onnx.load(str(path))
    assert unsupported_ops(model) == {}
    feeds = _corpus_feeds(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(names, feeds)))
    got = run_torch(model, feeds)
    for k, want in ref.items():
        assert got[k].shape == want.shape
        assert np.abs(got[k] - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_on_cpu():
    path = MODELS / "yolo_c2f.onnx"
    feeds = _corpus_feeds(path)
    gm = GraphModule(onnx.load(str(path)))
    with torch.no_grad():
        want = gm({k: torch.from_numpy(v) for k, v in feeds.items()})
        got = gm.to("cuda")({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})
    for k in want:
        torch.testing.assert_close(got[k].cpu(), want[k], rtol=1e-3, atol=1e-4)


def test_intermediate_outputs_and_pruned_execution():
    """Any value can be requested, and nodes it does not need are not run (nor their inputs fed)."""
    nodes = [N("Relu", ["a"], ["ra"]), N("Sigmoid", ["b"], ["sb"]), N("Add", ["ra", "sb"], ["y"])]
    a, b = f32(3, 4), f32(3, 4)
    gm = GraphModule(make(nodes, {"a": a, "b": b}))
    got = gm({"a": torch.from_numpy(a)}, ["ra"])
    np.testing.assert_allclose(got["ra"].numpy(), np.maximum(a, 0))
    full = gm({"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, ["sb", "y"])
    assert set(full) == {"sb", "y"}
    with pytest.raises(KeyError):
        gm({"a": torch.from_numpy(a)}, ["y"])
    with pytest.raises(KeyError):
        gm({"a": torch.from_numpy(a)}, ["no_such_value"])


# ---------------------------------------------------------------- training


def _conv_model():
    nodes = [N("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
             N("BatchNormalization", ["c", "bn.w", "bn.b", "bn.m", "bn.v"], ["n"]),
             N("Relu", ["n"], ["r"]), N("GlobalAveragePool", ["r"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1)]
    inits = {"conv.weight": f32(6, 4, 3, 3), "conv.bias": f32(6), "bn.w": f32(6), "bn.b": f32(6),
             "bn.m": f32(6), "bn.v": f32(6, lo=0.5, hi=2), "fc.w": f32(3, 6), "fc.b": f32(3)}
    return make(nodes, {"x": X4}, inits)


def test_default_trainable_and_gradients_flow():
    gm = GraphModule(_conv_model())
    assert sorted(gm.parameter_names()) == ["bn.b", "bn.w", "conv.bias", "conv.weight", "fc.b", "fc.w"]
    out = gm({"x": torch.from_numpy(X4)})["y"]
    (out ** 2).mean().backward()
    grad = gm.parameter_for("conv.weight").grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert all("." not in key for key in gm.params)


def test_lstm_weights_are_trainable_by_default():
    nodes, feeds, inits, opset = _lstm_case("bidirectional")
    gm = GraphModule(make(nodes, feeds, inits, opset))
    assert {"w", "r", "b"} <= set(gm.parameter_names()) and "h0" not in gm.parameter_names()
    out = gm({"x": torch.from_numpy(feeds["x"])})["y"]
    (out ** 2).mean().backward()
    for name in ("w", "r", "b"):
        grad = gm.parameter_for(name).grad
        assert grad is not None and float(grad.abs().sum()) > 0


def test_trainable_predicate():
    gm = GraphModule(_conv_model(), trainable=lambda name, node, idx: node.op_type == "Conv" and idx == 1)
    assert gm.parameter_names() == ["conv.weight"]


def test_state_arrays_round_trip():
    model = _conv_model()
    gm = GraphModule(model)
    with torch.no_grad():
        gm.parameter_for("conv.weight").mul_(-0.5)
        gm.parameter_for("fc.b").add_(1.0)
        want = gm({"x": torch.from_numpy(X4)})["y"].numpy()
    arrays = gm.state_arrays()
    assert arrays["conv.weight"].dtype == np.float32 and arrays["conv.weight"].shape == (6, 4, 3, 3)
    updated = apply_state_arrays(model, arrays)
    assert model.graph.initializer[0].raw_data != updated.graph.initializer[0].raw_data  # a copy was changed
    got = run_ort(updated, {"x": X4})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, run_ort(model, {"x": X4})["y"], atol=1e-3)


def test_constant_node_weights_are_trainable_and_written_back():
    """paddle2onnx stores weights as Constant nodes, sometimes behind Identity."""
    w = f32(3, 4, 1, 1)
    nodes = [N("Constant", [], ["cw"], value=numpy_helper.from_array(w)), N("Identity", ["cw"], ["iw"]),
             N("Conv", ["x", "iw"], ["y"])]
    model = make(nodes, {"x": X4})
    gm = GraphModule(model)
    assert gm.parameter_names() == ["cw"]
    with torch.no_grad():
        gm.parameter_for("cw").add_(0.25)
        want = gm({"x": torch.from_numpy(X4)})["y"].numpy()
    got = run_ort(apply_state_arrays(model, gm.state_arrays()), {"x": X4})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError):
        apply_state_arrays(model, {"not_a_weight": w})


# ---------------------------------------------------------------- refusals


def test_custom_domain_op_is_unsupported():
    nodes = [N("Relu", ["x"], ["r"]), N("FusedThing", ["r"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    assert unsupported_ops(model) == {"com.example:FusedThing": 1}
    with pytest.raises(UnsupportedGraph, match="com.example:FusedThing x1"):
        GraphModule(model)


def test_resize_tie_within_float_rounding_is_refused():
    """Scale 0.6f maps 10 -> 6 onto near-ties of round_prefer_ceil: onnxruntime's float
    arithmetic picks a side we cannot reproduce, so the executor refuses instead of guessing."""
    node = N("Resize", ["x", "", "sc"], ["y"], coordinate_transformation_mode="tf_half_pixel_for_nn",
             nearest_mode="round_prefer_ceil")
    model = make([node], {"x": X4}, {"sc": np.array([1, 1, 1, 0.6], np.float32)}, 13)
    with pytest.raises(UnsupportedGraph, match="tie"):
        run_torch(model, {"x": X4})


@pytest.mark.parametrize("node,inits,opset", [
    (N("Resize", ["x", "roi", "sc"], ["y"], mode="cubic"), {"roi": EMPTY, "sc": np.array([1, 1, 2, 2], np.float32)}, 13),
    (N("Resize", ["x", "roi", "sc"], ["y"], coordinate_transformation_mode="tf_crop_and_resize"),
     {"roi": EMPTY, "sc": np.array([1, 1, 2, 2], np.float32)}, 13),
    (N("Resize", ["x", "roi", "sc"], ["y"], mode="linear", antialias=1),
     {"roi": EMPTY, "sc": np.array([1, 1, 0.5, 0.5], np.float32)}, 18),
    (N("Resize", ["x", "", "sc"], ["y"], coordinate_transformation_mode="half_pixel_symmetric"),
     {"sc": np.array([1, 1, 2, 2], np.float32)}, 19),
    (N("ConvTranspose", ["x", "w"], ["y"], output_shape=[19, 21], strides=[2, 2]), {"w": f32(4, 2, 3, 3)}, 17),
    (N("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2]), {}, 17),
    (N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), {}, 19),
    (N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], auto_pad="SAME_UPPER"), {}, 17),
    (N("Conv", ["x", "w"], ["y"], dilations=[2, 2], auto_pad="SAME_LOWER"), {"w": f32(2, 4, 3, 3)}, 17),
    (N("Dropout", ["x", "r", "t"], ["y"]), {"r": np.array(0.5, np.float32), "t": np.array(True)}, 13),
    (N("LSTM", ["x", "w", "r"], ["y"], hidden_size=2, clip=1.0), {"w": f32(1, 8, 10), "r": f32(1, 8, 2)}, 14),
    (N("LSTM", ["x", "w", "r"], ["y"], hidden_size=2, layout=1), {"w": f32(1, 8, 10), "r": f32(1, 8, 2)}, 14),
    (N("TopK", ["x", "k"], ["v", "i"]), {"k": i64(2)}, 13),
])
def test_inexpressible_nodes_are_unsupported(node, inits, opset):
    model = make([node], {"x": X4}, inits, opset)
    assert unsupported_ops(model) == {node.op_type: 1}
    with pytest.raises(UnsupportedGraph, match=node.op_type):
        GraphModule(model)
