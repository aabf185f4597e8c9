"""--distill-train changed: the weights pruning left alone stay the original's, the rest train."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune.graph_module import GraphModule  # noqa: E402
from onnxcompress.finetune.trained import frozen_for, unchanged_weights  # noqa: E402


def _two_convs(w2: np.ndarray, first_as_constant: bool) -> ir.Model:
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    b2 = np.zeros(w2.shape[0], np.float32)
    nodes, inits = [], [onh.from_array(b1, "b1"), onh.from_array(w2, "w2"), onh.from_array(b2, "b2")]
    if first_as_constant:  # a Paddle-style Constant-node weight
        nodes.append(oh.make_node("Constant", [], ["w1"], value=onh.from_array(w1)))
    else:
        inits.append(onh.from_array(w1, "w1"))
    nodes += [oh.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["h"], ["r"]),
              oh.make_node("Conv", ["r", "w2", "b2"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return ir.from_proto(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))


W2 = np.arange(2 * 4, dtype=np.float32).reshape(2, 4, 1, 1)


@pytest.mark.parametrize("constant", [False, True])
def test_changed_trains_only_what_pruning_changed(constant):
    teacher = _two_convs(W2, first_as_constant=constant)
    student = _two_convs(W2[:, :3] * 2, first_as_constant=False)  # the second conv lost an input channel and was refit
    assert unchanged_weights(student, teacher) == {"w1", "b1", "b2"}
    trained = GraphModule(ir.to_proto(student), frozen=frozen_for("changed", student, teacher)).parameter_names()
    assert trained == ["w2"]
    assert sorted(GraphModule(ir.to_proto(student), frozen=frozen_for("all", student, teacher)).parameter_names()) == [
        "b1", "b2", "w1", "w2"]


def test_one_changed_value_is_enough_to_train():
    teacher = _two_convs(W2, first_as_constant=False)
    nudged = W2.copy()
    nudged[0, 0, 0, 0] += 1e-6
    student = _two_convs(nudged, first_as_constant=False)
    assert "w2" not in unchanged_weights(student, teacher)
    assert unchanged_weights(_two_convs(W2, first_as_constant=False), teacher) == {"w1", "b1", "w2", "b2"}


def test_unknown_mode_is_refused():
    m = _two_convs(W2, first_as_constant=False)
    with pytest.raises(ValueError, match="'all' or 'changed'"):
        frozen_for("some", m, m)


def test_cli_changed_keeps_the_unpruned_first_layer_as_the_refit_wrote_it(tmp_path):
    """digits CNN at 0.6x MACs: conv1 keeps its 32 filters and its inputs, so ``changed`` leaves it be."""
    import json
    from pathlib import Path

    from onnxcompress.cli import main

    models = Path(__file__).resolve().parents[2] / "models"
    np.savez(tmp_path / "calib.npz", input=np.load(models / "digits_eval.npz")["x"][:160])
    common = [str(models / "digits_cnn.onnx"), "--calib", str(tmp_path / "calib.npz"), "--target-macs", "0.6",
              "-q", "--no-simplify"]
    weights, reports = {}, {}
    for mode in ("refit", "all", "changed"):
        extra = ["--recover", "refit"] if mode == "refit" else [
            "--recover", "distill", "--distill-steps", "50", "--distill-train", mode]
        assert main([*common, *extra, "-o", str(tmp_path / f"{mode}.onnx"), "--report", str(tmp_path / f"{mode}.json")]) == 0
        weights[mode] = {i.name: onh.to_array(i) for i in onnx.load(tmp_path / f"{mode}.onnx").graph.initializer}
        reports[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    runs = {m: reports[m]["recovery"]["distill"] for m in ("all", "changed")}
    assert [runs[m]["kept"] for m in runs] == ["distill", "distill"]
    assert (runs["all"]["train"], runs["changed"]["train"]) == ("all", "changed")
    assert (runs["all"]["trained_tensors"], runs["changed"]["trained_tensors"]) == (12, 10)
    same = sorted(n for n, a in weights["changed"].items() if np.array_equal(a, weights["refit"][n]))
    assert same == ["/conv1/conv1.0/Conv_bias_bnfold", "conv1.0.weight"]
    assert not any(np.array_equal(weights["all"][n], weights["refit"][n]) for n in same)  # trained with "all"


def test_nothing_changed_keeps_the_refit_with_a_warning():
    from onnxcompress.finetune.distill import DistillConfig
    from onnxcompress.pruning.distill_step import run_distillation

    model = _two_convs(W2, first_as_constant=False)
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    outcome = run_distillation(model, _two_convs(W2, first_as_constant=False), [], [{"x": x}], [{"x": x}],
                               DistillConfig(train="changed", steps=5))
    assert outcome["kept"] == "refit" and outcome["train"] == "changed"
    assert outcome["warning"] == "distillation skipped: no weight to train (--distill-train changed); the refit is kept"


def test_config_refuses_an_unknown_train_mode():
    from onnxcompress.config import CompressConfig
    from onnxcompress.errors import InputError

    with pytest.raises(InputError, match="--distill-train must be all or changed, got 'some'"):
        CompressConfig(distill_train="some").validate()
