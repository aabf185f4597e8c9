"""Refit: the grouped normal equations, weight layouts, and a pruned depthwise block refit end to end."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.pruning import recover
from onnxcompress.channels.rules import consumer_of
from onnxcompress.pruning.recover import _NormalEquations, refittable

rng = np.random.default_rng(0)


@pytest.mark.parametrize("groups", [1, 3, 8])
def test_normal_equations_recover_a_linear_map_per_group(groups, monkeypatch):
    """Noise-free targets y = x @ W_g + b_g: each group's solution is its own W_g, b_g (tiny ridge)."""
    monkeypatch.setattr(recover, "RIDGE", 1e-12)
    k, out = 5, 2
    w = rng.standard_normal((groups, k, out))
    b = rng.standard_normal((groups, out))
    eq = _NormalEquations(bias=True)
    for _ in range(3):  # streamed in batches
        x = rng.standard_normal((groups, 40, k))
        eq.add(x, np.matmul(x, w) + b[:, None, :])
    got_w, got_b = eq.solve()
    assert got_w.shape == (groups, k, out) and got_b.shape == (groups, out)
    np.testing.assert_allclose(got_w, w, atol=1e-8)
    np.testing.assert_allclose(got_b, b, atol=1e-8)


def test_dead_inputs_do_not_make_the_system_singular():
    eq = _NormalEquations(bias=False)
    eq.add(np.zeros((2, 10, 3)), np.zeros((2, 10, 1)))
    w, b = eq.solve()
    assert b is None and np.array_equal(w, np.zeros((2, 3, 1)))


def _conv_model(c_in: int, c_out: int, group: int, k: int = 3) -> tuple[ir.Model, np.ndarray, np.ndarray]:
    w = rng.standard_normal((c_out, c_in // group, k, k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], group=group, pads=[1, 1, 1, 1], name="c")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, c_in, 6, 6])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, c_out, 6, 6])],
                     [nh.from_array(w, "w"), nh.from_array(b, "b")])
    return ir.serde.deserialize_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)])), w, b


@pytest.mark.parametrize(("c_in", "c_out", "group"), [(4, 6, 1), (6, 6, 3), (8, 8, 8), (4, 8, 4)])
def test_grouped_conv_rows_and_weights_reproduce_the_conv(c_in, c_out, group):
    """(G, rows, K) patches times the (G, K, out/G) matrices + bias equal onnxruntime's conv output;
    writing the matrices back gives the same weight."""
    import onnxruntime as ort

    model, w, b = _conv_model(c_in, c_out, group)
    node = next(iter(model.graph))
    assert refittable(node) is None
    x = rng.standard_normal((2, c_in, 6, 6)).astype(np.float32)
    y = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    hooks = consumer_of(node)
    mat, bias = hooks.matrices(node)
    assert mat.shape == (group, c_in // group * 9, c_out // group) and bias.shape == (group, c_out // group)
    rows = hooks.as_rows(node, x.astype(np.float64), w.shape)
    pred = np.matmul(rows, mat) + bias[:, None, :]  # (G, N*H*W, out/G)
    want = np.moveaxis(y, 1, -1).reshape(-1, group, c_out // group).transpose(1, 0, 2)
    np.testing.assert_allclose(pred, want, rtol=1e-4, atol=1e-4)
    hooks.write(model, node, mat * 2, bias * 3)
    assert np.allclose(node.inputs[1].const_value.numpy(), 2 * w) and np.allclose(node.inputs[2].const_value.numpy(), 3 * b)


def _dw_model(tmp_path) -> tuple[str, str]:
    """conv 3->16, 1x1 conv 16->16, depthwise 3x3, 1x1 conv 16->4 (ReLUs between), and 64 calibration inputs."""
    r = np.random.default_rng(1)
    inits = [nh.from_array(r.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.5, "w1"),
             nh.from_array(r.standard_normal(16).astype(np.float32) * 0.1, "b1"),
             nh.from_array(r.standard_normal((16, 16, 1, 1)).astype(np.float32) * 0.3, "w2"),
             nh.from_array(r.standard_normal((16, 1, 3, 3)).astype(np.float32), "w3"),
             nh.from_array(r.standard_normal(16).astype(np.float32) * 0.1, "b3"),
             nh.from_array(r.standard_normal((4, 16, 1, 1)).astype(np.float32), "w4")]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"], name="pw1"),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], group=16, name="dw"),
             h.make_node("Relu", ["c3"], ["r3"]),
             h.make_node("Conv", ["r3", "w4"], ["c4"], name="pw2"),
             h.make_node("GlobalAveragePool", ["c4"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 12, 12])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4, 1, 1])], inits)
    path = tmp_path / "dw.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=r.standard_normal((64, 3, 12, 12)).astype(np.float32))
    return str(path), str(calib)


def test_depthwise_conv_after_a_pruned_layer_is_refit(tmp_path):
    """The 1x1 conv loses inputs, so the drift starts there; the depthwise conv after it is refit (it
    was skipped as "grouped conv" before), and its refit is kept only where its held-out error drops."""
    import onnxcompress as oc

    path, calib = _dw_model(tmp_path)
    res = oc.compress(path, oc.CompressConfig(ratio=0.5, round_to=1, calib=calib))
    layers = {row["layer"]: row for row in res.report.recovery["layers"]}
    assert set(layers) == {"pw1", "dw", "pw2"}, layers
    dw = layers["dw"]
    assert "reason" not in dw  # it was "grouped conv (not refit)"
    assert dw["held_out_error_before"] > 0
    if dw["kept"]:
        assert dw["held_out_error_after"] < dw["held_out_error_before"]
    dw_node = next(n for n in res.model.graph if n.name == "dw")
    assert dw_node.attributes["group"].as_int() == dw_node.inputs[1].const_value.shape[0] == 8


def test_a_3d_conv_is_not_refit_even_without_kernel_shape():
    w = ir.Value(name="w", shape=ir.Shape([4, 2, 3, 3, 3]))
    node = ir.Node("", "Conv", [ir.Value(name="x"), w])
    assert refittable(node) == "3-D conv (not refit)"
    w2 = ir.Value(name="w2", shape=ir.Shape([4, 2, 3, 3]))
    assert refittable(ir.Node("", "Conv", [ir.Value(name="x2"), w2])) is None


def test_refit_augment_solves_on_perturbed_copies_too_with_the_same_allocation(tmp_path):
    """The digits CNN at 0.6x MACs: by default the refit also solves on perturbed copies of its
    samples (same channels kept, other weights); --refit-augment 0 solves on the samples alone."""
    from pathlib import Path

    import onnxcompress as oc
    from onnxcompress.runtime import Session

    models = Path(__file__).resolve().parents[2] / "models"
    z = np.load(models / "digits_eval.npz")
    np.savez(tmp_path / "calib.npz", input=z["x"][:128])
    runs = {}
    for share in (None, 0.0):  # None: the default, on for a classifier
        cfg = oc.CompressConfig(target_macs=0.6, calib=str(tmp_path / "calib.npz"), refit_augment=share)
        runs[share] = oc.compress(str(models / "digits_cnn.onnx"), cfg)
    on, off = runs[None].report, runs[0.0].report
    assert on.recovery["refit_augment"] == ["input"] and off.recovery["refit_augment"] == []
    assert "refit_augment_off" not in on.recovery
    assert [(x.before, x.after) for x in on.layers] == [(x.before, x.after) for x in off.layers]
    w_on = {i.name: np.asarray(i.const_value) for i in runs[None].model.graph.initializers.values()}
    w_off = {i.name: np.asarray(i.const_value) for i in runs[0.0].model.graph.initializers.values()}
    assert w_on.keys() == w_off.keys()
    assert any(w_on[k].shape == w_off[k].shape and not np.allclose(w_on[k], w_off[k]) for k in w_on)
    for res in runs.values():
        out = next(iter(Session(res.model).run({"input": z["x"][128:]}).values()))
        assert float((out.argmax(1) == z["y"][128:]).mean()) >= 0.9
    with pytest.raises(oc.InputError, match="--refit-augment"):
        oc.compress(str(models / "digits_cnn.onnx"), oc.CompressConfig(calib=str(tmp_path / "calib.npz"), refit_augment=2.0))


def test_refit_augment_is_off_by_default_on_a_probability_map_and_on_when_asked(tmp_path):
    """A DBNet-like detector (a sigmoid map output): by default the refit solves on the calibration
    samples alone and the report says why; an explicit --refit-augment 1 perturbs them as elsewhere."""
    import sys
    from pathlib import Path

    import onnxcompress as oc

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from test_dense_maps import db_like

    model = db_like(tmp_path / "db.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (96, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    runs = {share: oc.compress(model, oc.CompressConfig(target_macs=0.7, calib=str(tmp_path / "calib.npz"),
                                                        refit_augment=share, recover="refit")).report.recovery
            for share in (None, 1.0)}
    assert runs[None]["refit_augment"] == [] and "'prob' is a probability map" in runs[None]["refit_augment_off"]
    assert runs[1.0]["refit_augment"] == ["x"] and "refit_augment_off" not in runs[1.0]


def _two_matmuls(tmp_path, hidden: int, samples: int):
    """x (N, 16) -> MatMul -> Add -> Relu -> MatMul (bias-less) -> y (N, 5), and calibration samples."""
    import onnx
    import onnx.helper as h
    from onnx import numpy_helper as nh

    r = np.random.default_rng(4)
    inits = [nh.from_array(r.standard_normal((16, hidden)).astype(np.float32) * 0.5, "w1"),
             nh.from_array(r.uniform(-1, 1, hidden).astype(np.float32), "b1"),
             nh.from_array(r.standard_normal((hidden, 5)).astype(np.float32), "w2")]
    nodes = [h.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), h.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             h.make_node("Relu", ["hb"], ["a"], name="relu"), h.make_node("MatMul", ["a", "w2"], ["y"], name="mm2")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=r.standard_normal((samples, 16)).astype(np.float32))
    return path, calib, r.standard_normal((64, 16)).astype(np.float32)


def _folded_addend(model) -> np.ndarray:
    [add] = [n for n in model.graph if n.op_type == "Add" and n.inputs[0].producer() is not None
             and n.inputs[0].producer().name == "mm2"]
    assert add.outputs[0].name == "y"  # the Add took over the output's name
    return add.inputs[1].const_value.numpy().copy()


def test_a_matmul_whose_folded_bias_follows_it_is_refit_with_that_bias(tmp_path):
    """A bias-less MatMul gets the removed channels' constants as an Add after it; the refit solves
    that Add's addend as the MatMul's bias (it skipped the layer before: "bias folded after the node")."""
    import onnxcompress as oc
    from onnxcompress.runtime import Session

    path, calib, x = _two_matmuls(tmp_path, hidden=12, samples=256)
    want = Session(str(path)).run({"x": x})["y"]
    errors, addends = {}, {}
    for recover in ("bias", "refit"):
        res = oc.compress(str(path), oc.CompressConfig(ratio=0.5, round_to=1, calib=str(calib), recover=recover))
        addends[recover] = _folded_addend(res.model)
        out = res.save(tmp_path / f"{recover}.onnx")
        errors[recover] = float(np.abs(Session(str(out)).run({"x": x})["y"] - want).mean())
        if recover == "refit":
            mm2 = next(row for row in res.report.recovery["layers"] if row["layer"] == "mm2")
            assert "reason" not in mm2 and mm2["kept"], mm2
            assert mm2["held_out_error_after"] < mm2["held_out_error_before"]
    assert addends["bias"].shape == addends["refit"].shape == (5,)
    assert np.abs(addends["refit"] - addends["bias"]).max() > 1e-3  # the refit wrote its bias there
    assert errors["refit"] < 0.9 * errors["bias"], errors  # 1.60 against 1.88; before, the refit skipped mm2


def test_a_folded_bias_matmul_with_fewer_rows_than_twice_its_unknowns_is_not_refit(tmp_path):
    """One row per sample and 33 unknowns per output: 32 fit samples cannot pin them down."""
    import onnxcompress as oc

    path, calib, _x = _two_matmuls(tmp_path, hidden=64, samples=40)
    res = oc.compress(str(path), oc.CompressConfig(ratio=0.5, round_to=1, calib=str(calib), recover="refit"))
    mm2 = next(row for row in res.report.recovery["layers"] if row["layer"] == "mm2")
    import re

    found = re.fullmatch(r"bias folded after the node, (\d+) fit rows for (\d+) unknowns \(not refit\)", mm2["reason"])
    assert not mm2["kept"] and found, mm2
    rows, unknowns = int(found[1]), int(found[2])
    assert unknowns == 33 and 0 < rows < 2 * unknowns
