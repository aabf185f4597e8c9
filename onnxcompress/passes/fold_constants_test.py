"""Constant-weight folding: weight_norm chains, shape-op chains, Constant nodes, and what must stay."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.passes.fold_constants import FoldConstantWeightsPass

MODELS = Path(__file__).resolve().parents[2] / "models"
F = onnx.TensorProto.FLOAT
rng = np.random.default_rng(2)


def _model(nodes, inputs, outputs, inits=(), opset=17, ir_version=None) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    if ir_version is not None:
        m.ir_version = ir_version
    return m


def _run(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def _fold(m: onnx.ModelProto, feeds: dict) -> tuple[ir.Model, FoldConstantWeightsPass]:
    ref = _run(m, feeds)
    model = ir.serde.deserialize_model(m)
    p = FoldConstantWeightsPass()
    p(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    for a, b in zip(ref, _run(out, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    return model, p


def _ops(model: ir.Model) -> Counter:
    return Counter(n.op_type for n in model.graph)


@pytest.mark.parametrize("norm", ["pow_sum_sqrt", "reduce_l2"])
def test_weight_norm_chain_folds(norm):
    v = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    g = rng.uniform(0.5, 2, (8, 1, 1, 1)).astype(np.float32)
    axes = h.make_node("Constant", [], ["axes"], value=nh.from_array(np.array([1, 2, 3], np.int64)))
    if norm == "reduce_l2":
        chain = [axes, h.make_node("ReduceL2", ["v", "axes"], ["n"], keepdims=1)]
    else:
        chain = [
            axes,
            h.make_node("Pow", ["v", "two"], ["v2"]),
            h.make_node("ReduceSum", ["v2", "axes"], ["s"], keepdims=1),
            h.make_node("Sqrt", ["s"], ["n"]),
        ]
    nodes = chain + [
        h.make_node("Div", ["v", "n"], ["vn"]),
        h.make_node("Mul", ["g", "vn"], ["w"]),
        h.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        nh.from_array(v, "v"),
        nh.from_array(g, "g"),
        nh.from_array(np.zeros(8, np.float32), "b"),
    ] + ([nh.from_array(np.array(2, np.float32), "two")] if norm == "pow_sum_sqrt" else [])
    m = _model(nodes, [h.make_tensor_value_info("x", F, ["N", 3, "H", "W"])], [h.make_tensor_value_info("y", F, ["N", 8, "H", "W"])], inits, opset=18)
    model, p = _fold(m, {"x": rng.standard_normal((2, 3, 6, 5)).astype(np.float32)})
    assert _ops(model) == Counter({"Conv": 1})
    assert set(model.graph.initializers) == {"w", "b"}
    w = model.graph.initializers["w"].const_value.numpy()
    np.testing.assert_allclose(w, g * v / np.linalg.norm(v.reshape(8, -1), axis=1).reshape(8, 1, 1, 1), rtol=1e-5)
    assert p.report["constants_lifted"] == 1
    assert p.report["nodes_folded"] == len(chain) - 1 + 2


def test_shape_op_chain_folds():
    w = rng.standard_normal((6, 4)).astype(np.float64)
    nodes = [
        h.make_node("Cast", ["w64"], ["w32"], to=F),
        h.make_node("Transpose", ["w32"], ["wt"], perm=[1, 0]),  # [4, 6]
        h.make_node("Unsqueeze", ["wt", "ax0"], ["wu"]),  # [1, 4, 6]
        h.make_node("Squeeze", ["wu", "ax0"], ["ws"]),  # [4, 6]
        h.make_node("Concat", ["ws", "ws"], ["wc"], axis=1),  # [4, 12]
        h.make_node("Reshape", ["wc", "shape"], ["wr"]),  # [4, 12]
        h.make_node("Mul", ["wr", "scale"], ["wm"]),
        h.make_node("Add", ["wm", "shift"], ["wa"]),
        h.make_node("MatMul", ["x", "wa"], ["y"]),
    ]
    inits = [
        nh.from_array(w, "w64"),
        nh.from_array(np.array([0], np.int64), "ax0"),
        nh.from_array(np.array([4, -1], np.int64), "shape"),
        nh.from_array(np.array(0.5, np.float32), "scale"),
        nh.from_array(np.array(0.25, np.float32), "shift"),
    ]
    m = _model(nodes, [h.make_tensor_value_info("x", F, ["N", 4])], [h.make_tensor_value_info("y", F, ["N", 12])], inits)
    model, p = _fold(m, {"x": rng.standard_normal((3, 4)).astype(np.float32)})
    assert _ops(model) == Counter({"MatMul": 1})
    assert list(model.graph.initializers) == ["wa"]
    assert p.report["nodes_folded"] == 8


def test_constant_node_weights_are_lifted():
    """Paddle style: every weight is a Constant node, some in the value_floats form."""
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [
        h.make_node("Constant", [], ["w"], value=nh.from_array(w)),
        h.make_node("Constant", [], ["b"], value_floats=[0.5, -1.0, 2.0, 0.0]),
        h.make_node("Conv", ["x", "w", "b"], ["y"]),
    ]
    m = _model(nodes, [h.make_tensor_value_info("x", F, [1, 3, "H", "W"])], [h.make_tensor_value_info("y", F, [1, 4, "H", "W"])])
    model, p = _fold(m, {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)})
    assert _ops(model) == Counter({"Conv": 1})
    assert set(model.graph.initializers) == {"w", "b"}
    assert p.report["constants_lifted"] == 2


def test_old_ir_version_lists_new_initializers_as_inputs():
    nodes = [
        h.make_node("Mul", ["a", "k"], ["w"]),
        h.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    inits = [nh.from_array(rng.standard_normal((3, 2)).astype(np.float32), "a"), nh.from_array(np.array(3.0, np.float32), "k")]
    inputs = [h.make_tensor_value_info("x", F, [1, 3]), h.make_tensor_value_info("a", F, [3, 2]), h.make_tensor_value_info("k", F, [])]
    m = _model(nodes, inputs, [h.make_tensor_value_info("y", F, [1, 2])], inits, opset=9, ir_version=3)
    model, _ = _fold(m, {"x": rng.standard_normal((1, 3)).astype(np.float32)})
    assert [v.name for v in model.graph.inputs] == ["x", "w"]
    assert list(model.graph.initializers) == ["w"]


def test_runtime_shape_random_custom_and_quantized_stay():
    nodes = [
        # Shape of a runtime tensor: depends on the graph input, must stay.
        h.make_node("Shape", ["x"], ["xs"]),
        h.make_node("Gather", ["xs", "zero"], ["n"], axis=0),
        # A random op on constants.
        h.make_node("RandomNormalLike", ["c"], ["r"], seed=1.0),
        h.make_node("Add", ["r", "x"], ["y1"]),
        # A custom-domain op on constants.
        h.make_node("Scale", ["c"], ["cs"], domain="my.ops"),
        # A quantized weight: dequantizing it would undo the quantization.
        h.make_node("DequantizeLinear", ["q", "qs"], ["dq"]),
        h.make_node("Add", ["dq", "x"], ["y2"]),
    ]
    inits = [
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.ones(4, np.float32), "c"),
        nh.from_array(np.arange(4, dtype=np.int8), "q"),
        nh.from_array(np.array(0.1, np.float32), "qs"),
    ]
    m = _model(
        nodes,
        [h.make_tensor_value_info("x", F, ["N", 4])],
        [h.make_tensor_value_info(o, t, None) for o, t in (("n", onnx.TensorProto.INT64), ("y1", F), ("y2", F), ("cs", F))],
        inits,
    )
    m.opset_import.append(h.make_opsetid("my.ops", 1))
    model = ir.serde.deserialize_model(m)
    p = FoldConstantWeightsPass()
    assert not p(model).modified
    assert _ops(model) == Counter({"Shape": 1, "Gather": 1, "RandomNormalLike": 1, "Add": 2, "Scale": 1, "DequantizeLinear": 1})
    reasons = {s["op"]: s["reason"] for s in p.report["not_folded"]}
    assert reasons["RandomNormalLike"] == "random op"
    assert "custom domain" in reasons["Scale"]
    assert "kept on purpose" in reasons["DequantizeLinear"]
    assert "Shape" not in reasons and "Gather" not in reasons


def test_huge_result_is_not_folded():
    nodes = [
        h.make_node("ConstantOfShape", ["shape"], ["big"], value=nh.from_array(np.array([1.0], np.float32))),
        h.make_node("Add", ["x", "big"], ["y"]),
    ]
    inits = [nh.from_array(np.array([1000, 1000], np.int64), "shape")]
    m = _model(nodes, [h.make_tensor_value_info("x", F, [1000, 1000])], [h.make_tensor_value_info("y", F, [1000, 1000])], inits)
    model = ir.serde.deserialize_model(m)
    p = FoldConstantWeightsPass()
    p(model)
    assert "ConstantOfShape" in _ops(model)
    assert "too large" in p.report["not_folded"][0]["reason"]


def test_paddle_style_model():
    path = MODELS / "paddle_style_mbv3.onnx"
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnxcompress.runtime import Session, random_feeds

    model = ir.load(path)
    dims = [str(d) for d in model.graph.inputs[0].shape]
    feeds = random_feeds(model, {"x": (2, 3, 64, 48)}, seed=0)
    ref = Session(model, optimize=False).run(feeds)
    p = FoldConstantWeightsPass()
    p(model)
    assert "Constant" not in _ops(model)
    assert p.report["constants_lifted"] > 0
    for node in model.graph:
        if node.op_type in ("Conv", "MatMul"):
            assert any(v is not None and v.const_value is not None for v in node.inputs[:2]), node.name
    assert [str(d) for d in model.graph.inputs[0].shape] == dims
    got = Session(model, optimize=False).run(feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_dynamo_model_runs_after_folding():
    path = MODELS / "dynamo_ext.onnx"
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnxcompress.analysis.shapes import resolve_input_shapes
    from onnxcompress.runtime import Session, random_feeds

    # Read the external data in: a session built from bytes cannot resolve its path.
    model = ir.serde.deserialize_model(onnx.load(path))
    feeds = random_feeds(model, resolve_input_shapes(model), seed=0)
    ref = Session(model, optimize=False).run(feeds)
    FoldConstantWeightsPass()(model)
    got = Session(model, optimize=False).run(feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)
