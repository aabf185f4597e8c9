"""Weight projection: the right filter axis per layout, byte-identity when untouched, SVD clipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.passes.project import ProjectWeightsPass

MODELS = Path(__file__).resolve().parents[2] / "models"
rng = np.random.default_rng(1)
F = onnx.TensorProto.FLOAT


def _conv_model(group: int = 1) -> onnx.ModelProto:
    w = (3 * rng.standard_normal((8, 6 // group, 3, 3))).astype(np.float32)
    g = h.make_graph(
        [h.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group, pads=[1, 1, 1, 1])],
        "g",
        [h.make_tensor_value_info("x", F, [1, 6, 5, 5])],
        [h.make_tensor_value_info("y", F, [1, 8, 5, 5])],
        initializer=[nh.from_array(w, "w")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _convt_model(group: int) -> onnx.ModelProto:
    w = (3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32)
    g = h.make_graph(
        [h.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", group=group)],
        "g",
        [h.make_tensor_value_info("x", F, [1, 8, 4, 4])],
        [h.make_tensor_value_info("y", F, [1, 3 * group, 6, 6])],
        initializer=[nh.from_array(w, "w")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _fc_model(op: str, trans_b: int = 0) -> onnx.ModelProto:
    k, n = 12, 7
    w = (2 * rng.standard_normal((n, k) if trans_b else (k, n))).astype(np.float32)
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    g = h.make_graph(
        [h.make_node(op, ["x", "w"], ["y"], name="fc", **attrs)],
        "g",
        [h.make_tensor_value_info("x", F, [2, k])],
        [h.make_tensor_value_info("y", F, [2, n])],
        initializer=[nh.from_array(w, "w")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _filters(w: np.ndarray, case: str, group: int = 1) -> np.ndarray:
    """Output filters as rows, computed independently of the pass (by output channel)."""
    if case == "conv":
        return w.reshape(w.shape[0], -1)
    if case == "convt":
        cin, per_group = w.shape[0], w.shape[1]
        rows = []
        for o in range(per_group * group):
            gi, j = divmod(o, per_group)
            rows.append(w[gi * (cin // group) : (gi + 1) * (cin // group), j].ravel())
        return np.stack(rows)
    if case == "gemm_t":
        return w
    return w.T  # gemm with transB=0, MatMul


CASES = [
    ("conv", lambda: _conv_model(1), 1),
    ("conv", lambda: _conv_model(2), 2),
    ("convt", lambda: _convt_model(1), 1),
    ("convt", lambda: _convt_model(2), 2),
    ("gemm_t", lambda: _fc_model("Gemm", 1), 1),
    ("gemm", lambda: _fc_model("Gemm", 0), 1),
    ("matmul", lambda: _fc_model("MatMul"), 1),
]


def _weight(model: ir.Model) -> np.ndarray:
    return model.graph.initializers["w"].const_value.numpy()


@pytest.mark.parametrize("case,build,group", CASES)
def test_max_norm_axis(case, build, group):
    model = ir.serde.deserialize_model(build())
    w0 = _weight(model).copy()
    norms0 = np.linalg.norm(_filters(w0.astype(np.float64), case, group), axis=1)
    ranked = np.sort(norms0)
    c = float(ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2  # between two filters
    p = ProjectWeightsPass(max_norm=c)
    assert p(model).modified
    w1 = _weight(model)
    norms1 = np.linalg.norm(_filters(w1.astype(np.float64), case, group), axis=1)
    assert (norms1 <= c * (1 + 1e-6)).all()
    # Filters under the bound are untouched; those over it are scaled, not rotated.
    under = norms0 <= c
    np.testing.assert_array_equal(_filters(w1, case, group)[under], _filters(w0, case, group)[under])
    np.testing.assert_allclose(norms1[~under], c, rtol=1e-6)
    layer = p.report["layers"][0]
    assert layer["filters_clipped"] == int((~under).sum()) == p.report["filters_projected"]
    assert layer["max_norm_before"] == pytest.approx(norms0.max(), rel=1e-6)
    assert layer["max_norm_after"] <= c * (1 + 1e-6)
    assert layer["max_rel_change"] == pytest.approx(1 - c / norms0.max(), rel=1e-5)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


@pytest.mark.parametrize("case,build,group", CASES)
def test_bound_above_every_norm_leaves_bytes(case, build, group):
    proto = build()
    before = proto.graph.initializer[0].SerializeToString()
    model = ir.serde.deserialize_model(proto)
    tensor = model.graph.initializers["w"].const_value
    p = ProjectWeightsPass(max_norm=1e6, spectral_clip=1e6)
    assert not p(model).modified
    assert model.graph.initializers["w"].const_value is tensor
    assert ir.to_proto(model).graph.initializer[0].SerializeToString() == before
    assert p.report["layers_projected"] == 0


@pytest.mark.parametrize("case,build,group", CASES)
def test_spectral_clip(case, build, group):
    model = ir.serde.deserialize_model(build())
    w0 = _weight(model)
    sigma0 = np.linalg.svd(_filters(w0.astype(np.float64), case, group), compute_uv=False)
    c = float(sigma0[0] / 2)
    p = ProjectWeightsPass(spectral_clip=c)
    p(model)
    sigma1 = np.linalg.svd(_filters(_weight(model).astype(np.float64), case, group), compute_uv=False)
    assert sigma1[0] <= c * (1 + 1e-6)
    # Singular values under the bound survive.
    np.testing.assert_allclose(sigma1[sigma0 < c], sigma0[sigma0 < c], rtol=1e-4)
    assert p.report["max_sigma_before"] == pytest.approx(sigma0[0], rel=1e-6)
    assert p.report["max_sigma_after"] <= c * (1 + 1e-6)


def test_both_constraints_hold_together():
    model = ir.serde.deserialize_model(_conv_model())
    w0 = _weight(model).reshape(8, -1).astype(np.float64)
    c_norm = float(np.median(np.linalg.norm(w0, axis=1)))
    c_sigma = float(np.linalg.norm(w0, 2) / 3)
    ProjectWeightsPass(max_norm=c_norm, spectral_clip=c_sigma)(model)
    w1 = _weight(model).reshape(8, -1).astype(np.float64)
    assert np.linalg.norm(w1, axis=1).max() <= c_norm * (1 + 1e-6)
    assert np.linalg.norm(w1, 2) <= c_sigma * (1 + 1e-6)


def test_exclude_and_shared_and_runtime_weights():
    w = (3 * rng.standard_normal((4, 3, 1, 1))).astype(np.float32)
    g = h.make_graph(
        [
            h.make_node("Conv", ["x", "w"], ["a"], name="stem.conv"),
            h.make_node("Conv", ["x", "w"], ["b"], name="other"),
            h.make_node("Conv", ["x", "wx"], ["c"], name="dyn"),
            h.make_node("Conv", ["x", "w2"], ["d"], name="head.conv"),
        ],
        "g",
        [h.make_tensor_value_info("x", F, [1, 3, 2, 2]), h.make_tensor_value_info("wx", F, [4, 3, 1, 1])],
        [h.make_tensor_value_info(n, F, [1, 4, 2, 2]) for n in "abcd"],
        initializer=[nh.from_array(w, "w"), nh.from_array(w.copy(), "w2")],
    )
    model = ir.serde.deserialize_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    p = ProjectWeightsPass(max_norm=0.1, exclude=[r"^head\."])
    p(model)
    reasons = {s["node"]: s["reason"] for s in p.report["skipped"]}
    assert reasons["head.conv"] == "excluded"
    assert "shared" in reasons["stem.conv"] and "shared" in reasons["other"]
    assert reasons["dyn"] == "weight is not a constant"
    assert p.report["layers_projected"] == 0
    np.testing.assert_array_equal(model.graph.initializers["w2"].const_value.numpy(), w)


def test_constant_node_weight_is_projected_in_place():
    w = (3 * rng.standard_normal((4, 3, 1, 1))).astype(np.float32)
    g = h.make_graph(
        [
            h.make_node("Constant", [], ["w"], value=nh.from_array(w)),
            h.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        ],
        "g",
        [h.make_tensor_value_info("x", F, [1, 3, 2, 2])],
        [h.make_tensor_value_info("y", F, [1, 4, 2, 2])],
    )
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model = ir.serde.deserialize_model(proto)
    ProjectWeightsPass(max_norm=0.5)(model)
    out = ir.to_proto(model)
    assert [n.op_type for n in out.graph.node] == ["Constant", "Conv"]
    w1 = nh.to_array(out.graph.node[0].attribute[0].t)
    assert np.linalg.norm(w1.reshape(4, -1), axis=1).max() <= 0.5 * (1 + 1e-6)
    x = rng.standard_normal((1, 3, 2, 2)).astype(np.float32)
    ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("name", ["resnet_small.onnx", "convtranspose_unet.onnx", "weightnorm_nofold.onnx"])
def test_model_files_every_filter_bounded(name):
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnxcompress.analysis.shapes import resolve_input_shapes
    from onnxcompress.passes.fold_batchnorm import FoldBatchNormPass
    from onnxcompress.passes.fold_constants import FoldConstantWeightsPass
    from onnxcompress.runtime import Session, random_feeds

    model = ir.load(path)
    FoldConstantWeightsPass()(model)
    FoldBatchNormPass()(model)
    layouts = {"Conv": "conv", "ConvTranspose": "convt", "MatMul": "matmul"}
    kinds = {}
    for node in model.graph:
        if node.op_type in layouts or node.op_type == "Gemm":
            kind = layouts.get(node.op_type) or ("gemm_t" if node.attributes.get_int("transB", 0) else "gemm")
            kinds[node.name] = (kind, node.attributes.get_int("group", 1), node.inputs[1])
    c = 0.5
    p = ProjectWeightsPass(max_norm=c)
    p(model)
    assert p.report["layers_projected"] > 0 and p.report["skipped"] == []
    for kind, group, w in kinds.values():
        norms = np.linalg.norm(_filters(w.const_value.numpy().astype(np.float64), kind, group), axis=1)
        assert norms.max() <= c * (1 + 1e-6)
    feeds = random_feeds(model, resolve_input_shapes(model), seed=0)
    Session(model).run(feeds)
