"""Relative step sizes: each tensor's rate follows its own scale, so no layer is knocked off by one step."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

from onnxcompress.finetune.step_sizes import MIN_FACTOR, relative_step_sizes


def test_factor_is_the_rms_over_the_median_weight_capped_at_one():
    arrays = {"small.w": np.full((4, 4), 1e-3), "mid.w": np.full((4, 4), 0.5), "big.w": np.full((4, 4), 2.0),
              "small.b": np.zeros(4), "ln.scale": np.ones(4), "zero.w": np.zeros((2, 2))}
    f = relative_step_sizes(arrays, {"small.b": "small.w"})
    # median of the weights' RMS (1e-3, 0.5, 2.0, 0): (1e-3 + 0.5) / 2
    median = (1e-3 + 0.5) / 2
    assert f["small.w"] == pytest.approx(1e-3 / median)
    assert f["mid.w"] == 1.0 and f["big.w"] == 1.0  # never above the nominal rate
    assert f["small.b"] == f["small.w"]  # a bias follows its layer's weight, not its own (zero) scale
    assert f["ln.scale"] == 1.0  # a norm's affine has no layer weight: the full rate
    assert f["zero.w"] == MIN_FACTOR  # zeros still move


def test_a_bias_or_affine_stored_as_1_c_1_1_is_no_weight():
    """paddle2onnx's Conv + Add bias is [1, C, 1, 1]: it takes its layer's factor and leaves the median alone."""
    arrays = {"w1": np.full((4, 3, 3, 3), 1e-3), "w2": np.full((4, 4, 1, 1), 0.5), "w3": np.full((4, 4), 2.0),
              "b1": np.full((1, 4, 1, 1), 3.0), "gamma": np.full((1, 1, 4), 5.0)}
    f = relative_step_sizes(arrays, {"b1": "w1"}, vectors=["b1", "gamma"])
    assert f["w1"] == pytest.approx(1e-3 / 0.5)  # the median of the three weights, not of five tensors
    assert f["b1"] == f["w1"] and f["gamma"] == 1.0
    unlisted = relative_step_sizes(arrays, {}, vectors=[])
    assert unlisted["b1"] == 1.0 and unlisted["w1"] == pytest.approx(1e-3 / 2.0)  # what it did before
    # a Gemm's input-2 C stored 2-D, paired but not listed: a weight of its own, as before the change
    paired = relative_step_sizes(arrays, {"b1": "w1"})
    assert paired["b1"] == 1.0 and paired["w1"] == pytest.approx(1e-3 / 2.0)


def test_no_weights_means_the_nominal_rate_everywhere():
    assert relative_step_sizes({"b": np.ones(3)}, {}) == {"b": 1.0}


torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")


def _two_convs(scale: float, seed: int = 0) -> ir.Model:
    """x -> Conv(W1 * scale) -> Relu -> Conv(W2 / scale) -> logits: the same function for any scale > 0."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (5, 8, 1, 1)).astype(np.float32)
    inits = [onh.from_array(w1 * scale, "w1"), onh.from_array(np.zeros(8, np.float32), "b1"),
             onh.from_array(w2 / scale, "w2"), onh.from_array(np.zeros(5, np.float32), "b2")]
    nodes = [oh.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["h"], ["r"]),
             oh.make_node("Conv", ["r", "w2", "b2"], ["c"]), oh.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0)]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 6, 6])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])], inits)
    return ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))


def test_graph_module_pairs_each_bias_with_its_layer_weight():
    from onnxcompress.finetune.graph_module import GraphModule

    assert GraphModule(ir.to_proto(_two_convs(1.0))).bias_weights() == {"b1": "w1", "b2": "w2"}


@pytest.mark.parametrize("step_sizes", ["absolute", "relative"])
def test_a_layer_stored_1e4_smaller_trains_only_with_relative_steps(step_sizes):
    """The teacher and the student compute the same function; the student's first conv is stored 1e4
    times smaller (its second 1e4 larger), as BN folding and refit leave real graphs. Both start from a
    student that is a little off the teacher. Absolute steps move the tiny conv by many times its own
    size at once and the held-out loss jumps; relative steps lower it."""
    from onnxcompress.finetune.distill import DistillConfig, Distiller

    teacher = _two_convs(1.0)
    student = _two_convs(1e-4, seed=0)
    w2 = student.graph.initializers["w2"]
    w2.const_value = ir.tensor(w2.const_value.numpy() * np.float32(1.3))  # something to recover
    rng = np.random.default_rng(1)
    batches = [{"x": rng.normal(0, 1, (8, 3, 6, 6)).astype(np.float32)} for _ in range(6)]
    cfg = DistillConfig(seconds=120, steps=20, lr=1e-3, eval_every=10, min_steps=1000, step_sizes=step_sizes)
    result = Distiller(student, teacher, [], batches[:4], batches[4:], cfg).run()
    start, after = result["history"][0]["held_out_loss"], result["history"][1]["held_out_loss"]
    assert result["step_sizes"] == step_sizes
    if step_sizes == "absolute":
        assert after > 10 * start, result["history"]
    else:
        assert after < start, result["history"]
        assert result["kept"] == "distill"
