from __future__ import annotations

import numpy as np
import onnx.helper as h
from onnx import TensorProto, numpy_helper

import onnxcompress as oc
from onnxcompress.io import load_model
from onnxcompress.pruning.nothing_to_prune import nothing_to_prune


def _conv(name, x, y, cin, cout, rng):
    w = numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), f"{name}.w")
    return h.make_node("Conv", [x, w.name], [y], pads=[1, 1, 1, 1], name=name), w


def _model(nodes, inits, opset=17, extra_inputs=()):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]), *extra_inputs],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_layers_inside_an_if_are_named_and_compress_warns():
    """silero-vad's whole graph sits in an If: compress wrote it unchanged with "0 total" and no reason."""
    rng = np.random.default_rng(0)
    branches = []
    for b in ("then", "else"):
        c1, w1 = _conv(f"{b}1", "x", f"{b}_h", 4, 8, rng)
        c2, w2 = _conv(f"{b}2", f"{b}_h", f"{b}_y", 8, 4, rng)
        branches.append(h.make_graph([c1, h.make_node("Relu", [f"{b}_h"], [f"{b}_r"]), c2], b, [],
                                     [h.make_tensor_value_info(f"{b}_y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2]))
    cond = h.make_tensor_value_info("cond", TensorProto.BOOL, [])  # an input, so no pass can pick the branch
    proto = _model([h.make_node("If", ["cond"], ["y"], then_branch=branches[0], else_branch=branches[1])], [],
                   extra_inputs=[cond])
    assert nothing_to_prune(load_model(proto)) == (
        "nothing to prune: 4 of the model's layers sit inside If subgraphs, which are not analysed")
    rep = oc.compress(proto, oc.CompressConfig(ratio=0.5)).report
    assert rep.groups["total"] == 0 and rep.after.macs == rep.before.macs
    assert any(w.startswith("nothing to prune: 4 of the model's layers sit inside If") for w in rep.warnings)
    assert oc.inspect(proto).warnings[-1].startswith("nothing to prune: 4 of the model's layers")


def test_a_quantized_model_says_to_prune_the_float_one():
    """A QDQ int8 ResNet-50: its Conv weights come out of DequantizeLinear, so no group is found."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.round(w / 0.05).astype(np.int8), "wq"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [h.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]),
             h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    proto = _model(nodes, inits)
    rep = oc.compress(proto, oc.CompressConfig(ratio=0.5)).report
    assert rep.groups == {"total": 0, "pruned": 0, "blocked": 0}
    assert any(w.startswith("nothing to prune: the model is quantized (DequantizeLinear)") for w in rep.warnings)


def test_a_graph_without_layers_and_a_prunable_one():
    proto = _model([h.make_node("Relu", ["x"], ["y"])], [])
    assert nothing_to_prune(load_model(proto)) == "nothing to prune: the graph has no Conv, ConvTranspose, Gemm or MatMul layer"
    # a MatMul of two activations: a layer, but no constant weight to cut
    acts = _model([h.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]), h.make_node("MatMul", ["x", "t"], ["y"])], [])
    rep = oc.compress(acts, oc.CompressConfig(ratio=0.5)).report
    assert rep.groups["total"] == 0 and ("nothing to prune: no layer has a constant weight whose output channels could "
                                         "be cut (a MatMul of two activations, or weights fed as inputs)") in rep.warnings
    rng = np.random.default_rng(2)
    c1, w1 = _conv("c1", "x", "h", 4, 32, rng)
    c2, w2 = _conv("c2", "r", "y", 32, 4, rng)
    rep = oc.compress(_model([c1, h.make_node("Relu", ["h"], ["r"]), c2], [w1, w2]), oc.CompressConfig(ratio=0.5)).report
    assert rep.groups["pruned"] == 1 and not any(w.startswith("nothing to prune") for w in rep.warnings)


def test_sensitivity_on_a_model_with_nothing_to_measure_says_so(tmp_path, capsys):
    """magika (every group blocked) printed an empty table and an empty plot with no word; a quantized model
    likewise."""
    from onnxcompress.cli import main

    rng = np.random.default_rng(3)
    path = tmp_path / "q.onnx"
    dq = _model([h.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]), h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                [numpy_helper.from_array(np.ones((4, 4, 3, 3), np.int8), "wq"),
                 numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    import onnx

    onnx.save(dq, path)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 4, 8, 8)).astype(np.float32))
    assert main(["sensitivity", str(path), "--calib", str(tmp_path / "calib.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onnxcompress: error: sensitivity: nothing to measure: the model is quantized (DequantizeLinear), and "
                   "quantized weights are not pruned; prune the float model, then quantize it"]
