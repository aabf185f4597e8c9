"""Allocation rounds: the round targets, kept channels composed across rounds, and two rounds on the digits CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxcompress as oc
from onnxcompress.pruning.rounds import compose_keep, round_targets
from onnxcompress.runtime import Session

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_round_targets_are_geometric_and_end_at_the_target():
    assert round_targets(0.64, 1) == [0.64]
    got = round_targets(0.64, 2)
    assert got[0] == pytest.approx(0.8) and got[1] == pytest.approx(0.64)
    assert round_targets(0.5, 3)[-1] == pytest.approx(0.5)


def test_kept_channels_compose_in_the_original_indexing():
    first = np.array([True, False, True, True, False, True])
    assert compose_keep(None, None) is None
    assert compose_keep(first, None) is first
    np.testing.assert_array_equal(compose_keep(None, first), first)
    # the second round keeps channels 0 and 2 of the four the first kept: originals 0 and 3
    np.testing.assert_array_equal(compose_keep(first, np.array([True, False, True, False])),
                                  [True, False, False, True, False, False])
    with pytest.raises(ValueError):
        compose_keep(first, np.array([True, False]))


def test_two_rounds_reach_the_target_and_refit_against_the_original(tmp_path):
    z = np.load(MODELS / "digits_eval.npz")
    np.savez(tmp_path / "calib.npz", input=z["x"][:128])
    model = str(MODELS / "digits_cnn.onnx")
    cfg = oc.CompressConfig(target_macs=0.5, calib=str(tmp_path / "calib.npz"), allocation_rounds=2)
    res = oc.compress(model, cfg)
    rep = res.report
    assert rep.after.macs / rep.before.macs <= 0.5 + 1e-9
    rounds = rep.search["rounds"]
    assert [r["target_macs"] for r in rounds] == pytest.approx([0.5 ** 0.5, 0.5])
    assert all(r["estimated_macs_kept"] <= r["target_macs"] + 1e-9 for r in rounds)
    assert rounds[0]["estimated_macs_kept"] > 0.5 + 1e-9  # the first round stopped on the way
    assert rep.search["target_macs"] == 0.5
    # the layers' channel counts run from the original to the last round's
    conv = [layer for layer in rep.layers if layer.before != layer.after]
    assert conv and all(layer.before in (16, 32, 64, 128) for layer in conv)
    # refit rows compare with the original: a refit was kept, and the drift is against the original
    assert any(row["kept"] for row in rep.recovery["layers"])
    assert rep.recovery["drift_after_refit"] < rep.recovery["drift_before_refit"]
    out = next(iter(Session(res.model).run({"input": z["x"][128:]}).values()))
    assert float((out.argmax(1) == z["y"][128:]).mean()) >= 0.95


def _tokens_model():
    """Conv -> channels-last MatMul (bias Add) -> Relu -> MatMul without a bias -> head: removing the
    hidden features folds their mean into a new bias after the second MatMul."""
    import onnx
    from onnx import helper as h, numpy_helper as nh

    rng = np.random.default_rng(3)
    inits = [nh.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in
             [("wc", (16, 3, 3, 3)), ("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 16)), ("wg", (10, 16)), ("bg", (10,))]]
    nodes = [h.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]), h.make_node("MatMul", ["t", "w1"], ["m1"]),
             h.make_node("Add", ["m1", "b1"], ["a1"]), h.make_node("Relu", ["a1"], ["h"]),
             h.make_node("MatMul", ["h", "w2"], ["m2"]), h.make_node("Transpose", ["m2"], ["back"], perm=[0, 3, 1, 2]),
             h.make_node("GlobalAveragePool", ["back"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    g = h.make_graph(nodes, "tokens", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_a_bias_folded_twice_after_one_matmul_gets_new_names(tmp_path):
    """A second round (or a second run on a compressed model) folds another bias after the same
    MatMul: its Add and renamed output need new names, or the model is invalid."""
    import onnx

    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32))
    cfg = oc.CompressConfig(ratio=0.5, calib=str(tmp_path / "calib.npz"), recover="refit", simplify=False)
    once = oc.compress(_tokens_model(), cfg).model
    twice = oc.compress(once, cfg).model
    proto = ir_to_proto(twice)
    onnx.checker.check_model(proto, full_check=True)
    adds = [n.name for n in proto.graph.node if "folded_bias" in n.name]
    assert len(adds) >= 2 and len(set(adds)) == len(adds)
    y = Session(twice).run({"x": np.ones((2, 3, 8, 8), np.float32)})
    assert next(iter(y.values())).shape == (2, 10)


def ir_to_proto(model):
    import onnx_ir as ir

    return ir.to_proto(model)
