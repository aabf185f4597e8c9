"""Biases and LayerNorm affines written as their own Add / Mul are found, and only those."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

from onnxcompress.finetune.separate_affines import separate_affines

F = onnx.TensorProto.FLOAT


def _found(model: onnx.ModelProto) -> dict[str, str | None]:
    return separate_affines(ir.from_proto(model))


def _model(nodes, inits: dict[str, np.ndarray], x_shape=("N", 3, 8, 8), opset: int = 13) -> onnx.ModelProto:
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", F, list(x_shape))],
                      [oh.make_tensor_value_info("y", F, None)],
                      [onh.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])


def _layernorm(x: str, out: str) -> list[onnx.NodeProto]:
    """An opset < 17 LayerNorm over the last axis, as paddle2onnx and torch's old exporter write it."""
    return [oh.make_node("ReduceMean", [x], [f"{out}.mu"], axes=[-1]),
            oh.make_node("Sub", [x, f"{out}.mu"], [f"{out}.c"]),
            oh.make_node("Mul", [f"{out}.c", f"{out}.c"], [f"{out}.sq"]),
            oh.make_node("ReduceMean", [f"{out}.sq"], [f"{out}.var"], axes=[-1]),
            oh.make_node("Add", [f"{out}.var", "eps"], [f"{out}.ve"]),
            oh.make_node("Sqrt", [f"{out}.ve"], [f"{out}.sd"]),
            oh.make_node("Div", [f"{out}.c", f"{out}.sd"], [out])]


def _net() -> onnx.ModelProto:
    """Conv (bias in an Add behind an Identity) -> pool -> MatMul + Add -> LayerNorm * gamma + beta,
    then a Gemm(transB) + Add."""
    nodes = [oh.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             oh.make_node("Identity", ["h"], ["h_id"]),
             oh.make_node("Add", ["h_id", "b1"], ["hb"]), oh.make_node("Relu", ["hb"], ["r"]),
             oh.make_node("GlobalAveragePool", ["r"], ["p"]), oh.make_node("Flatten", ["p"], ["f"]),
             oh.make_node("MatMul", ["f", "w2"], ["m"]), oh.make_node("Add", ["b2", "m"], ["mb"])]
    nodes += _layernorm("mb", "n")
    nodes += [oh.make_node("Mul", ["n", "gamma"], ["ng"]), oh.make_node("Add", ["ng", "beta"], ["nb"]),
              oh.make_node("Gemm", ["nb", "w3"], ["o"], transB=1), oh.make_node("Add", ["o", "b3"], ["y"])]
    rng = np.random.default_rng(0)
    return _model(nodes, {"w1": rng.normal(size=(4, 3, 3, 3)), "b1": rng.normal(size=(1, 4, 1, 1)),
                          "w2": rng.normal(size=(4, 6)), "b2": rng.normal(size=6), "eps": 1e-5,
                          "gamma": rng.normal(size=6), "beta": rng.normal(size=6),
                          "w3": rng.normal(size=(5, 6)), "b3": rng.normal(size=(1, 5))})


def test_biases_and_norm_affines_are_found_with_their_layers():
    assert _found(_net()) == {"b1": "w1", "b2": "w2", "gamma": None, "beta": None, "b3": "w3"}


def test_a_constant_node_bias_counts_like_an_initializer():
    m = _net()
    b1 = next(i for i in m.graph.initializer if i.name == "b1")
    m.graph.initializer.remove(b1)
    m.graph.node.insert(0, oh.make_node("Constant", [], ["b1"], value=b1))
    assert _found(m)["b1"] == "w1"


@pytest.mark.parametrize("name, value, why", [
    ("b1", np.zeros((1, 4, 8, 8)), "one value per position, not per channel (a position table)"),
    ("b1", np.zeros((4, 1, 1, 1)), "broadcast on the batch axis"),
    ("b2", np.zeros(5), "one value too few for the MatMul's 6 outputs"),
    ("b3", np.zeros((5, 1)), "a column, not the Gemm's last axis"),
    ("b2", np.zeros(1), "a scalar"),
])
def test_constants_that_are_not_per_channel_are_left(name, value, why):
    m = _net()
    init = next(i for i in m.graph.initializer if i.name == name)
    init.CopyFrom(onh.from_array(np.asarray(value, np.float32), name))
    assert name not in _found(m), why


def test_a_shared_constant_is_left():
    """Training a constant read twice would change its other reader too."""
    m = _net()
    m.graph.node.append(oh.make_node("Add", ["y", "b3"], ["y2"]))
    found = _found(m)
    assert "b3" not in found and found["b2"] == "w2"


def test_a_constant_after_something_else_is_left():
    """An Add after a Relu, a Mul after a Div that is not a LayerNorm's, a layer without a constant weight."""
    rng = np.random.default_rng(1)
    nodes = [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Add", ["r", "c1"], ["a"]),
             oh.make_node("Div", ["a", "two"], ["d"]), oh.make_node("Mul", ["d", "c2"], ["md"]),
             oh.make_node("MatMul", ["md", "md"], ["mm"]), oh.make_node("Add", ["mm", "c3"], ["y"])]
    m = _model(nodes, {"c1": rng.normal(size=8), "two": 2.0, "c2": rng.normal(size=8), "c3": rng.normal(size=8)})
    assert _found(m) == {}


def test_conv_transpose_channels_are_its_weight_axis_1_times_group():
    rng = np.random.default_rng(2)
    nodes = [oh.make_node("ConvTranspose", ["x", "w"], ["h"], group=3), oh.make_node("Add", ["h", "b"], ["y"])]
    m = _model(nodes, {"w": rng.normal(size=(3, 2, 2, 2)), "b": rng.normal(size=(6, 1, 1))})
    assert _found(m) == {"b": "w"}
    m.graph.initializer[1].CopyFrom(onh.from_array(np.zeros((2, 1, 1), np.float32), "b"))
    assert _found(m) == {}


@pytest.mark.parametrize("rsqrt", ["Reciprocal", "Div"])
def test_a_tf2onnx_layernorm_gamma_times_rsqrt_and_its_beta_are_found(rsqrt):
    """tf2onnx and jax2tf: s = rsqrt(var + eps) * gamma, then x * s + (beta - mean * s)."""
    rng = np.random.default_rng(4)
    nodes = [oh.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), oh.make_node("Sub", ["x", "mu"], ["c"]),
             oh.make_node("Mul", ["c", "c"], ["sq"]), oh.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             oh.make_node("Add", ["var", "eps"], ["ve"]), oh.make_node("Sqrt", ["ve"], ["sd"]),
             oh.make_node("Reciprocal", ["sd"], ["r"]) if rsqrt == "Reciprocal" else oh.make_node("Div", ["one", "sd"], ["r"]),
             oh.make_node("Mul", ["r", "gamma"], ["s"]), oh.make_node("Mul", ["x", "s"], ["xs"]),
             oh.make_node("Neg", ["mu"], ["nmu"]), oh.make_node("Mul", ["nmu", "s"], ["ms"]),
             oh.make_node("Add", ["ms", "beta"], ["shift"]), oh.make_node("Add", ["xs", "shift"], ["y"])]
    m = _model(nodes, {"eps": 1e-5, "one": 1.0, "gamma": rng.normal(size=6), "beta": rng.normal(size=6)},
               x_shape=("N", 4, 6))
    assert _found(m) == {"gamma": None, "beta": None}
    nodes[5] = oh.make_node("Exp", ["ve"], ["sd"])  # not a square root: not a norm's deviation
    assert _found(_model(nodes, {"eps": 1e-5, "one": 1.0, "gamma": rng.normal(size=6),
                                           "beta": rng.normal(size=6)}, x_shape=("N", 4, 6))) == {}


def test_tf_batch_normalization_beta_in_a_sub_is_found():
    """tf.nn.batch_normalization (BERT's LayerNorm in TF): x * s + Sub(beta, mean * s), s = rsqrt(var + eps) * gamma."""
    rng = np.random.default_rng(5)
    nodes = [oh.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), oh.make_node("Sub", ["x", "mu"], ["c"]),
             oh.make_node("Mul", ["c", "c"], ["sq"]), oh.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             oh.make_node("Add", ["var", "eps"], ["ve"]), oh.make_node("Sqrt", ["ve"], ["sd"]),
             oh.make_node("Reciprocal", ["sd"], ["r"]), oh.make_node("Mul", ["r", "gamma"], ["s"]),
             oh.make_node("Mul", ["x", "s"], ["xs"]), oh.make_node("Mul", ["mu", "s"], ["ms"]),
             oh.make_node("Sub", ["beta", "ms"], ["shift"]), oh.make_node("Add", ["xs", "shift"], ["y"])]
    m = _model(nodes, {"eps": 1e-5, "gamma": rng.normal(size=6), "beta": rng.normal(size=6)}, x_shape=("N", 4, 6))
    assert _found(m) == {"gamma": None, "beta": None}


@pytest.mark.parametrize("name, value", [("gamma", np.ones((1, 4, 6))), ("beta", np.zeros((1, 4, 6))),
                                         ("gamma", np.ones((6, 1))), ("beta", np.zeros((6, 1)))])
def test_a_table_after_a_norm_is_left(name, value):
    """A position table, or a mask across the normalized axis, after a norm is not its scale or shift."""
    m = _net()
    next(i for i in m.graph.initializer if i.name == name).CopyFrom(onh.from_array(value.astype(np.float32), name))
    assert name not in _found(m)


def test_a_div_of_x_minus_the_mean_of_something_else_is_no_layernorm():
    m = _net()
    node = next(n for n in m.graph.node if n.op_type == "ReduceMean" and n.input[0] == "mb")
    node.input[0] = "f"  # the mean of the MatMul's input, subtracted from its output
    assert "gamma" not in _found(m) and "beta" not in _found(m)


torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")


def test_graph_module_trains_them_pairs_biases_and_honours_frozen():
    from onnxcompress.finetune.graph_module import GraphModule

    m = _net()
    gm = GraphModule(m)
    assert sorted(gm.parameter_names()) == ["b1", "b2", "b3", "beta", "gamma", "w1", "w2", "w3"]
    assert gm.bias_weights() == {"b1": "w1", "b2": "w2", "b3": "w3"}
    assert sorted(gm.affine_names()) == ["b1", "b2", "b3", "beta", "gamma"]
    x = torch.tensor(np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32))
    gm({"x": x})["y"].sum().backward()
    for name in ("b1", "b2", "gamma", "beta", "b3"):
        grad = gm.parameter_for(name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    frozen = GraphModule(m, frozen=frozenset({"b1", "gamma", "w3"}))
    assert sorted(frozen.parameter_names()) == ["b2", "b3", "beta", "w1", "w2"]
    assert frozen.bias_weights() == {"b2": "w2"}  # b3's weight is a constant now: b3 keeps the full rate
    assert sorted(frozen.affine_names()) == ["b2", "b3", "beta"]
    custom = GraphModule(m, trainable=lambda name, node, idx: node.op_type == "Conv")
    assert custom.parameter_names() == ["w1"]  # a caller's own rule gets no extras
