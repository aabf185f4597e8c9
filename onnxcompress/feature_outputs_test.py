from __future__ import annotations

import numpy as np
import onnx.helper as h
from onnx import TensorProto, numpy_helper

from onnxcompress.feature_outputs import feature_outputs
from onnxcompress.io import load_model


def _model(nodes, outputs, inits=(), inputs=(("x", [2, 8]),), opset=17):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(inits))
    return load_model(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]))


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def test_a_vector_divided_by_its_own_norm_is_a_feature():
    """torch's F.normalize as exported (EfficientWord-Net's ResNet-50 embedding): x / Expand(Clip(Pow(ReduceSum(
    Pow(Abs(x), 2)), 0.5), eps)); also x / Sqrt(ReduceSumSquare(x)) and x / ReduceL2(x). A division by a
    constant, by another tensor's norm, or by a plain or weighted sum (a softmax written out) is not."""
    inits = [_const("two", 2.0), _const("half", 0.5), _const("eps", 1e-12), _const("k", 3.0),
             numpy_helper.from_array(np.array([1], np.int64), "ax"), numpy_helper.from_array(np.array([2, 8], np.int64), "shape")]
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["e"]),
        h.make_node("Abs", ["e"], ["abs"]), h.make_node("Pow", ["abs", "two"], ["p"]),
        h.make_node("ReduceSum", ["p", "ax"], ["s"], keepdims=1), h.make_node("Pow", ["s", "half"], ["r"]),
        h.make_node("Clip", ["r", "eps"], ["c"]), h.make_node("Expand", ["c", "shape"], ["d"]),
        h.make_node("Div", ["e", "d"], ["normalize"]),
        h.make_node("ReduceSumSquare", ["e"], ["ss"], axes=[1]), h.make_node("Sqrt", ["ss"], ["n2"]),
        h.make_node("Div", ["e", "n2"], ["sumsquare"]),
        h.make_node("ReduceL2", ["e"], ["l2"], axes=[1]), h.make_node("Div", ["e", "l2"], ["l2norm"]),
        h.make_node("Div", ["e", "k"], ["scaled"]),
        h.make_node("ReduceL2", ["x"], ["lx"], axes=[1]), h.make_node("Div", ["e", "lx"], ["other_norm"]),
        # a softmax written out, and a sum weighted by a constant: not norms
        h.make_node("Exp", ["e"], ["ex"]), h.make_node("ReduceSum", ["ex", "ax"], ["z"], keepdims=1),
        h.make_node("Div", ["ex", "z"], ["softmax"]),
        h.make_node("Mul", ["e", "k"], ["ek"]), h.make_node("ReduceSum", ["ek", "ax"], ["wz"], keepdims=1),
        h.make_node("Div", ["e", "wz"], ["weighted"]),
        h.make_node("Mul", ["e", "e"], ["ee"]), h.make_node("ReduceSum", ["ee", "ax"], ["se"], keepdims=1),
        h.make_node("Sqrt", ["se"], ["rse"]), h.make_node("Div", ["e", "rse"], ["squared"]),
    ]
    inits.append(numpy_helper.from_array(np.eye(8, dtype=np.float32), "w"))
    model = _model(nodes, ["normalize", "sumsquare", "l2norm", "scaled", "other_norm", "softmax", "weighted", "squared"],
                   inits, opset=13)
    assert feature_outputs(model) == {"normalize", "sumsquare", "l2norm", "squared"}


def test_recurrent_states_are_features_also_when_stacked():
    """silero-vad's (2, N, 128) state is Concat(Unsqueeze(Squeeze(LSTM.Y_h)), Unsqueeze(Squeeze(LSTM.Y_c))): read as a
    CTC sequence it 'collapsed' while the speech probability kept a cosine of 0.98. A Concat with a non-feature
    part stays scores."""
    hid, inp = 4, 3
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * hid, inp)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hid, hid)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((inp, hid)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0], np.int64), "a0")]
    nodes = [h.make_node("LSTM", ["x", "W", "R"], ["Y", "Y_h", "Y_c"], hidden_size=hid),
             h.make_node("Squeeze", ["Y_h", "a0"], ["h1"]), h.make_node("Unsqueeze", ["h1", "a0"], ["h2"]),
             h.make_node("Squeeze", ["Y_c", "a0"], ["c1"]), h.make_node("Unsqueeze", ["c1", "a0"], ["c2"]),
             h.make_node("Concat", ["h2", "c2"], ["state"], axis=0),
             h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Concat", ["h2", "m"], ["mixed"], axis=0)]
    model = _model(nodes, ["Y", "Y_h", "state", "mixed"], inits, inputs=(("x", [5, 1, inp]),))
    assert feature_outputs(model) == {"Y", "Y_h", "state"}
