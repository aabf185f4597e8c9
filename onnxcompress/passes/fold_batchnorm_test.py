"""BatchNormalization folding: every producer layout, opsets, refusals, and the model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.passes.fold_batchnorm import FoldBatchNormPass
from onnxcompress.passes.fold_constants import FoldConstantWeightsPass

MODELS = Path(__file__).resolve().parents[2] / "models"
rng = np.random.default_rng(0)


def _run(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def _bn_params(c: int, prefix: str = "bn") -> list[onnx.TensorProto]:
    return [
        nh.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), f"{prefix}_g"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), f"{prefix}_b"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), f"{prefix}_m"),
        nh.from_array(rng.uniform(0.1, 3.0, c).astype(np.float32), f"{prefix}_v"),
    ]


def _model(producer: onnx.NodeProto, inits, x_shape, y_shape, c, opset=17, bn_attrs=None, ir_version=None):
    bn = h.make_node(
        "BatchNormalization", ["p", "bn_g", "bn_b", "bn_m", "bn_v"], ["y"], name="bn", epsilon=1e-3, **(bn_attrs or {})
    )
    g = h.make_graph(
        [producer, bn],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_shape)],
        initializer=list(inits) + _bn_params(c),
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    if ir_version is not None:
        m.ir_version = ir_version
    return m


def _fold_and_compare(m: onnx.ModelProto, x: np.ndarray) -> tuple[ir.Model, FoldBatchNormPass]:
    ref = _run(m, {"x": x})
    model = ir.serde.deserialize_model(m)
    p = FoldBatchNormPass()
    p(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    got = _run(out, {"x": x})
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    return model, p


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv(bias, depthwise):
    cin, cout = (6, 6) if depthwise else (3, 8)
    group = 6 if depthwise else 1
    w = rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32)
    inits = [nh.from_array(w, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(nh.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        ins.append("b")
    conv = h.make_node("Conv", ins, ["p"], name="conv", pads=[1, 1, 1, 1], group=group)
    m = _model(conv, inits, ["N", cin, "H", "W"], ["N", cout, "H", "W"], cout)
    model, p = _fold_and_compare(m, rng.standard_normal((2, cin, 7, 5)).astype(np.float32))
    assert _ops(model) == ["Conv"]
    assert len(model.graph.node(0).inputs) == 3
    assert p.report["folded"] == 1 and p.report["not_folded"] == []
    assert model.graph.outputs[0].name == "y"
    assert set(model.graph.initializers) == ({"w", "b"} if bias else {"w", "conv_bias_bnfold"})


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_transpose_groups(group):
    cin, per_group = 8, 3
    w = rng.standard_normal((cin, per_group, 3, 3)).astype(np.float32)
    ct = h.make_node("ConvTranspose", ["x", "w"], ["p"], name="ct", group=group, strides=[2, 2])
    c = per_group * group
    m = _model(ct, [nh.from_array(w, "w")], [1, cin, 4, 4], [1, c, 9, 9], c)
    model, p = _fold_and_compare(m, rng.standard_normal((1, cin, 4, 4)).astype(np.float32))
    assert _ops(model) == ["ConvTranspose"]
    assert p.report["folded"] == 1


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("bias_shape", [None, (5,), (1, 5), ()])
def test_gemm(trans_b, beta, bias_shape):
    k, n = 4, 5
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits = [nh.from_array(w, "w")]
    ins = ["x", "w"]
    if bias_shape is not None:
        inits.append(nh.from_array(rng.standard_normal(bias_shape).astype(np.float32), "c"))
        ins.append("c")
    gemm = h.make_node("Gemm", ins, ["p"], name="fc", transB=trans_b, alpha=0.7, beta=beta)
    m = _model(gemm, inits, ["N", k], ["N", n], n)
    model, p = _fold_and_compare(m, rng.standard_normal((3, k)).astype(np.float32))
    assert _ops(model) == ["Gemm"]
    assert p.report["folded"] == 1


@pytest.mark.parametrize("opset,attrs", [(7, {"spatial": 1}), (9, {}), (14, {"training_mode": 0})])
def test_old_opsets(opset, attrs):
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv")
    # Old exporters list every initializer among the inputs as well (IR version 3).
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 5, 5], [1, 4, 5, 5], 4, opset=opset, bn_attrs=attrs, ir_version=3)
    for t in m.graph.initializer:
        m.graph.input.append(h.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model, p = _fold_and_compare(m, rng.standard_normal((1, 3, 5, 5)).astype(np.float32))
    assert _ops(model) == ["Conv"]
    inits = set(model.graph.initializers)
    assert inits == {v.name for v in model.graph.inputs} - {"x"}
    assert not any(name.startswith("bn_") for name in inits)


def test_spatial_zero_is_refused():
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv")
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 5, 5], [1, 4, 5, 5], 4, opset=7, bn_attrs={"spatial": 0})
    model = ir.serde.deserialize_model(m)
    p = FoldBatchNormPass()
    assert not p(model).modified
    assert _ops(model) == ["Conv", "BatchNormalization"]
    assert "spatial=0" in p.report["not_folded"][0]["reason"]


def test_producer_output_used_twice_is_kept():
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv")
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 5, 5], [1, 4, 5, 5], 4)
    m.graph.node.append(h.make_node("Relu", ["p"], ["r"]))
    m.graph.output.append(h.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [1, 4, 5, 5]))
    model = ir.serde.deserialize_model(m)
    p = FoldBatchNormPass()
    p(model)
    assert "BatchNormalization" in _ops(model)
    assert "used elsewhere" in p.report["not_folded"][0]["reason"]


def test_shared_weight_is_copied():
    """Two convs share W; folding the BN after one of them must not change the other."""
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv")
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 5, 5], [1, 4, 5, 5], 4)
    m.graph.node.append(h.make_node("Conv", ["x", "w"], ["q"], name="conv2"))
    m.graph.output.append(h.make_tensor_value_info("q", onnx.TensorProto.FLOAT, [1, 4, 5, 5]))
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    ref = _run(m, {"x": x})
    model = ir.serde.deserialize_model(m)
    FoldBatchNormPass()(model)
    got = _run(ir.to_proto(model), {"x": x})
    assert _ops(model) == ["Conv", "Conv"]
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert np.array_equal(model.graph.initializers["w"].const_value.numpy(), w)


def _fold_file(name: str, rtol: float = 1e-5, atol: float = 1e-4):
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnxcompress.analysis.shapes import resolve_input_shapes
    from onnxcompress.runtime import Session, random_feeds

    model = ir.load(path)
    feeds = random_feeds(model, resolve_input_shapes(model), seed=0)
    ref = Session(model, optimize=False).run(feeds)
    FoldConstantWeightsPass()(model)
    bn = FoldBatchNormPass()
    bn(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = Session(model, optimize=False).run(feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=rtol, atol=atol)
    return model, bn


def test_weightnorm_model_folds_to_plain_weights():
    model, bn = _fold_file("weightnorm_nofold.onnx")
    ops = set(_ops(model))
    assert "BatchNormalization" not in ops, bn.report
    assert not ops & {"Div", "Pow", "Sqrt", "ReduceL2", "ReduceSum", "Constant"}, ops
    for node in model.graph:
        if node.op_type in ("Conv", "Gemm", "ConvTranspose"):
            assert node.inputs[1].const_value is not None


@pytest.mark.parametrize("name", ["zoo_opset9_resnet.onnx", "zoo_opset8_bn_spatial.onnx", "convtranspose_unet.onnx"])
def test_zoo_models_bn_folds(name):
    model, bn = _fold_file(name)
    assert "BatchNormalization" not in _ops(model), bn.report
    assert bn.report["folded"] > 0


def test_bn_after_bn_folds_both():
    """The second BN is computed ahead while its input is still the first BN: it is redone once that folds."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv", pads=[1, 1, 1, 1])
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 6, 6], [1, 4, 6, 6], 4)
    m.graph.node[1].output[0] = "mid"
    m.graph.node.append(h.make_node("BatchNormalization", ["mid", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["y"], name="bn2"))
    m.graph.initializer.extend(_bn_params(4, "bn2"))
    model, p = _fold_and_compare(m, rng.standard_normal((1, 3, 6, 6)).astype(np.float32))
    assert _ops(model) == ["Conv"]
    assert p.report["folded"] == 2 and p.report["not_folded"] == []


def test_two_bns_on_one_shared_weight():
    """Both folds are computed ahead from the shared W; each conv ends with its own scaled copy."""
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = h.make_node("Conv", ["x", "w"], ["p"], name="conv")
    m = _model(conv, [nh.from_array(w, "w")], [1, 3, 5, 5], [1, 4, 5, 5], 4)
    m.graph.node.append(h.make_node("Conv", ["x", "w"], ["q"], name="conv2"))
    m.graph.node.append(h.make_node("BatchNormalization", ["q", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["z"], name="bn2"))
    m.graph.initializer.extend(_bn_params(4, "bn2"))
    m.graph.output.append(h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 5, 5]))
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    ref = _run(m, {"x": x})
    model = ir.serde.deserialize_model(m)
    p = FoldBatchNormPass()
    p(model)
    assert _ops(model) == ["Conv", "Conv"] and p.report["folded"] == 2
    got = _run(ir.to_proto(model), {"x": x})
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    w1, w2 = (n.inputs[1] for n in model.graph)
    assert w1 is not w2


@pytest.mark.parametrize("threads", ["1", "3"])
def test_threads_give_the_serial_bytes(monkeypatch, threads):
    """Eight Conv+BN blocks folded on 1 or 3 threads (windows of 2 and 6): identical weights."""
    monkeypatch.setenv("ONNXCOMPRESS_THREADS", threads)
    nodes, inits, prev = [], [], "x"
    for i in range(8):
        inits.append(nh.from_array(np.random.default_rng(i).standard_normal((4, 4, 3, 3)).astype(np.float32), f"w{i}"))
        inits.extend(_bn_params(4, f"bn{i}"))
        nodes.append(h.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(h.make_node("BatchNormalization", [f"c{i}"] + [f"bn{i}_{k}" for k in "gbmv"], [f"y{i}"]))
        prev = f"y{i}"
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 6, 6])],
                     [h.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, [1, 4, 6, 6])], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model = ir.serde.deserialize_model(m)
    FoldBatchNormPass()(model)
    weights = [n.inputs[1].const_value.numpy() for n in model.graph]
    for i, got in enumerate(weights):
        bn = {k: nh.to_array(next(t for t in inits if t.name == f"bn{i}_{k}")).astype(np.float64) for k in "gbmv"}
        scale = bn["g"] / np.sqrt(bn["v"] + 1e-5)
        w = nh.to_array(inits[5 * i]).astype(np.float64)
        assert np.array_equal(got, (w * scale[:, None, None, None]).astype(np.float32))
