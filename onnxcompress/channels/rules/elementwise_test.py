"""Elementwise rules: unary ops keep each channel, PRelu's slope is a slot, binary ops couple.

Every test builds Conv -> op -> Conv and checks the exact ids, the planned widths and the
constant a removed channel carries after the op (against onnxruntime in zero mode).
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.channels.rules._testing import Net
from onnxcompress.channels.rules.elementwise import _BINARY, _UNARY

OPSET = 20  # Gelu needs 20, Mish 18
#: mixed signs, values around Relu's/ThresholdedRelu's kinks and away from .5 (Round)
BIAS = np.array([-1.2, 0.3, 1.4, -0.6, 0.9, 2.3, -0.2, 0.7], np.float32)
POSITIVE = {"Log", "Sqrt", "Reciprocal"}

UNARY_ATTRS: dict[str, dict] = {
    "LeakyRelu": {"alpha": 0.2},
    "Elu": {"alpha": 0.7},
    "Celu": {"alpha": 1.3},
    "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
    "ThresholdedRelu": {"alpha": 1.0},
    "Gelu": {"approximate": "tanh"},
    "Cast": {"to": 1},
}


#: the registered ops this file tests
COVERED = set(_UNARY) | set(_BINARY) | {"PRelu", "BiasGelu", "FastGelu"}


def _unary(n: Net, op: str, a: str) -> str:
    if op == "Clip":
        return n.op(op, [a, n.const(-0.5), n.const(0.8)], name="op")
    return n.op(op, [a], name="op", **UNARY_ATTRS.get(op, {}))


def check_unary(op: str) -> None:
    n = Net(OPSET)
    bias = np.abs(BIAS) + 0.1 if op in POSITIVE else BIAS
    a = n.conv(n.input(), 3, 8, bias=bias, name="c1")
    n.conv(_unary(n, op, a), 8, 4, name="c2")
    c = n.analyse(["c2"])
    ids = c.ids("c1")
    np.testing.assert_array_equal(c.ids("op"), ids)
    assert c.axes("op") == (1,)
    np.testing.assert_array_equal(c.in_ids("c2"), ids)
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    c.assert_free(ids)
    assert c.widths() == [("c1", 8, 4)]
    # ThresholdedRelu maps the kept channels' unknown (NaN) to 0: harmless, consumers fold removed channels only
    got = c.check_const({"c1": [0, 2, 5, 6]}, "op", kept_nan=op != "ThresholdedRelu")
    assert np.isfinite(got).all()


@pytest.mark.parametrize("op", sorted(_UNARY))
def test_unary(op: str) -> None:
    check_unary(op)


def test_gelu_exact_form() -> None:
    n = Net(OPSET)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    n.conv(n.op("Gelu", [a], name="op"), 8, 4, name="c2")
    n.analyse(["c2"]).check_const({"c1": [0, 2, 3]}, "op")


def test_unary_with_a_channel_tensor_parameter_blocks() -> None:
    n = Net(OPSET)
    a = n.conv(n.input(), 3, 8, name="c1")
    # Clip's bound must be a scalar; the analysis only sees that a channel tensor feeds it
    n.conv(n.op("Clip", [a, a], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"], check=False)
    assert set(c.blocks_at("op")) == {("Clip", "Clip with a channel tensor as a parameter")}
    assert not c.tracked("op")


def check_prelu() -> None:
    n = Net(OPSET)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    slope = n.const(np.linspace(0.1, 0.8, 8).reshape(8, 1, 1))
    n.conv(n.op("PRelu", [a, slope], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.slot("op", "param")[:2] == (slope, 0)
    np.testing.assert_array_equal(c.slot("op", "param")[2], c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    want = np.where(BIAS >= 0, BIAS, np.linspace(0.1, 0.8, 8) * BIAS)[[0, 3, 5]]
    np.testing.assert_allclose(c.check_const({"c1": [0, 3, 5]}, "op"), want, rtol=1e-5)


def test_prelu() -> None:
    check_prelu()


VARIADIC = {"Sum", "Max", "Min", "Mean"}


def check_binary(op: str) -> None:
    """Two (three for variadic ops) conv outputs meet: their k-th channels become one atom."""
    n = Net(OPSET)
    x = n.input()
    b1 = np.abs(BIAS) + 0.2 if op == "Pow" else BIAS
    names = ["c1", "c2", "c3"] if op in VARIADIC else ["c1", "c2"]
    ins = [n.conv(x, 3, 8, bias=b1 if k == 0 else True, name=nm) for k, nm in enumerate(names)]
    n.conv(n.op(op, ins, name="op"), 8, 4, name="out")
    c = n.analyse(["out"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    for other in names[1:]:
        assert c.same_atoms(c.out_ids("c1"), c.out_ids(other))
    c.assert_free(c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("+".join(names), 8, 4)]
    got = c.check_const({"c1": [1, 2, 6]}, "op")
    assert np.isfinite(got).all()


@pytest.mark.parametrize("op", sorted(_BINARY))
def test_binary(op: str) -> None:
    check_binary(op)


@pytest.mark.parametrize("shape,slot_axis", [((1, 8, 1, 1), 1), ((8, 1, 1), 0)])
def test_per_channel_constant_is_a_param_slot(shape, slot_axis) -> None:
    n = Net(OPSET)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    scale = np.linspace(0.5, 2.0, 8).reshape(shape)
    k = n.const(scale)
    n.conv(n.op("Mul", [n.op("Add", [a, n.const(0.25)], name="add"), k], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    assert c.slots("add") == []  # a scalar broadcasts over channels
    assert c.slot("op", "param")[:2] == (k, slot_axis)
    np.testing.assert_array_equal(c.slot("op", "param")[2], c.ids("c1"))
    c.assert_only_output_blocks()
    np.testing.assert_allclose(c.check_const({"c1": [2, 7]}, "op"), (BIAS[[2, 7]] + 0.25) * scale.ravel()[[2, 7]], rtol=1e-5)


def test_per_element_and_channel_broadcast_constants() -> None:
    n = Net(OPSET)
    a = n.conv(n.input(), 3, 8, name="c1")
    k = n.const(np.ones((1, 8, 6, 6)))
    n.conv(n.op("Add", [a, k], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    # per-element constant: its channel axis is 8 wide, so it is a param slot, not a block
    assert c.slot("op", "param")[:2] == (k, 1)
    n2 = Net(OPSET)
    a = n2.conv(n2.input(), 3, 8, name="c1")
    k = n2.const(np.ones((1, 1, 6, 6)) * 2)
    n2.conv(n2.op("Add", [a, k], name="op"), 8, 4, name="c2")
    c2 = n2.analyse(["c2"])
    assert c2.slots("op") == [] and c2.blocks_at("op") == []  # size 1 on the channel axis


@pytest.mark.parametrize("op,with_bias", [("BiasGelu", True), ("FastGelu", True), ("FastGelu", False)])
def test_fused_bias_gelu_keeps_each_channel(op: str, with_bias: bool, tmp_path) -> None:
    """x (1, 5, 12) -> MatMul(8) -> BiasGelu / FastGelu (onnxruntime's fused MLP activation) -> MatMul:
    the 8 features are one free group, the bias is a per-channel slot, a removed feature carries
    Gelu(its constant + its bias), and remove mode equals zero mode."""
    from onnxcompress.channels.rules._testing import remove_and_zero

    n = Net(17)
    n.extra_opsets["com.microsoft"] = 1
    x = n.input((1, 5, 12))
    h = n.op("MatMul", [x, n.const(n.rng.standard_normal((12, 8)) * 0.5)], name="fc1")
    ins = [h, n.const(BIAS)] if with_bias else [h]
    g = n.op(op, ins, name="op", domain="com.microsoft")
    y = n.op("MatMul", [g, n.const(n.rng.standard_normal((8, 3)))], name="fc2")
    c = n.analyse([y], check=False)
    ids = c.ids("fc1")
    np.testing.assert_array_equal(c.ids("op"), ids)
    assert c.blocks_at("op") == []
    c.assert_free(ids)
    if with_bias:
        assert c.slot("op", "param")[1] == 0
    got = c.check_const({"fc1": [0, 2, 5]}, "op")  # checked against onnxruntime in zero mode
    assert got.shape == (3,) and np.isfinite(got).all()
    proto = n.proto([y], check=False)
    proto.graph.output[0].CopyFrom(__import__("onnx").helper.make_tensor_value_info(y, 1, [1, 5, 3]))
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 5, 12)).astype(np.float32)}
    outs = remove_and_zero(proto, tmp_path, feeds)
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
