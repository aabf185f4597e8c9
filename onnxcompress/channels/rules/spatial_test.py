"""Spatial rules: pools, Resize/Upsample, Pad, spatial reductions, Softmax (opset 13+), Shape/Size.

Channels pass through unchanged; the constant a removed channel carries is checked against
onnxruntime in zero mode wherever the rule promises it.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.channels.rules._testing import Net

I64 = np.int64
BIAS = np.array([-1.2, 0.3, 1.4, -0.6, 0.9, 2.3, -0.2, 0.7], np.float32)

POOLS: dict[str, dict] = {
    "MaxPool": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    "AveragePool": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    "LpPool": {"kernel_shape": [2, 2], "p": 2},
    "GlobalAveragePool": {},
    "GlobalMaxPool": {},
    "GlobalLpPool": {"p": 2},
    "MaxRoiPool": {"pooled_shape": [2, 2]},
}
#: pools whose const_eval passes the constant through though the op does not (an Lp norm of
#: a constant map c over k positions is |c| * k ** (1/p)): the rule is wrong, see the report


def check_pool(op: str) -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    ins = [a, n.const([[0, 0, 0, 3, 3]])] if op == "MaxRoiPool" else [a]
    n.conv(n.op(op, ins, name="op", **POOLS[op]), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.axes("op") == (1,)
    np.testing.assert_array_equal(c.in_ids("c2"), c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [0, 2, 5]}, "op")
    assert c.notes == []


@pytest.mark.parametrize("op", sorted(POOLS))
def test_pool(op: str) -> None:
    check_pool(op)


def test_average_pool_counting_pads_is_reported_inexact() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(n.op("AveragePool", [a], name="op", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), 8, 4, name="c2")
    c = n.analyse(["c2"])
    c.rule_consts(c.removed_mask({"c1": [1]}))
    assert c.notes == ["AveragePool op averages zero padding into removed channels' constants"]


def check_resize(op: str) -> None:
    n = Net(9 if op == "Upsample" else 17)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    scales = n.const([1, 1, 2, 2])
    ins = [a, scales] if op == "Upsample" else [a, "", scales]
    n.conv(n.op(op, ins, name="op", mode="nearest"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [3, 4]}, "op")


@pytest.mark.parametrize("op", ["Resize", "Upsample"])
def test_resize(op: str) -> None:
    check_resize(op)


def test_resize_with_sizes_is_rewritten_and_channel_scaling_blocks() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    r = n.op("Resize", [a, "", "", n.const([1, 8, 12, 12], I64)], name="op", mode="nearest")
    n.conv(r, 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.node("op") in c.analysis.rewrites
    n2 = Net()
    a = n2.conv(n2.input(), 3, 8, name="c1")
    n2.op("Resize", [a, "", n2.const([1, 2, 1, 1])], name="op", mode="nearest")
    c2 = n2.analyse(["op"])
    assert set(c2.blocks_at("op")) == {("Resize", "Resize resizes the channel axis")}


def check_pad(mode: str = "reflect") -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    n.conv(n.op("Pad", [a, n.const([0, 0, 1, 2, 0, 0, 2, 1], I64)], name="op", mode=mode), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    if mode == "constant":
        c.rule_consts(c.removed_mask({"c1": [1]}))
        assert c.notes == ["Pad op pads removed channels' constants with its pad value"]
    else:
        c.check_const({"c1": [1, 5]}, "op")
        assert c.notes == []


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_pad(mode: str) -> None:
    check_pad(mode)


def test_pad_on_the_channel_axis_blocks() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(n.op("Pad", [a, n.const([0, 1, 0, 0, 0, 1, 0, 0], I64)], name="op"), 10, 4, name="c2")
    c = n.analyse(["c2"])
    assert set(c.blocks_at("op")) == {("Pad", "Pad on the channel axis")}
    assert c.widths() == []


REDUCE = ["ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceSumSquare"]


def check_reduce(op: str, keepdims: int = 1) -> None:
    n = Net(18)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    r = n.op(op, [a, n.const([2, 3], I64)], name="op", keepdims=keepdims)
    if keepdims:
        n.conv(r, 8, 4, name="c2")
    else:
        n.op("Gemm", [r, n.const(n.rng.standard_normal((8, 4)))], name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.axes("op") == (1,)
    np.testing.assert_array_equal(c.in_ids("c2"), c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    got = c.check_const({"c1": [0, 2, 5]}, "op")
    assert np.isfinite(got).all()


@pytest.mark.parametrize("op", REDUCE)
def test_reduce(op: str) -> None:
    check_reduce(op)


def test_reduce_without_keepdims() -> None:
    check_reduce("ReduceMean", keepdims=0)


def test_reduce_over_the_channel_axis_blocks() -> None:
    """Only a ReduceMean over exactly the channels, keeping the axis, is lossy (norm_test); the rest block."""
    for op, keepdims in (("ReduceMax", 1), ("ReduceSum", 1), ("ReduceMean", 0)):
        n = Net(18)
        a = n.conv(n.input(), 3, 8, name="c1")
        n.op(op, [a, n.const([1], I64)], name="op", keepdims=keepdims)
        c = n.analyse(["op"], allow_lossy=True)
        assert set(c.blocks_at("op")) == {(op, f"{op} over the channel axis")}
        assert c.analysis.lossy == []


def test_an_empty_axes_input_reduces_every_axis_unless_noop() -> None:
    """ONNX: an empty axes list reduces every axis (the channels too) unless noop_with_empty_axes is 1."""
    for noop, blocked in ((0, True), (1, False)):
        n = Net(18)
        a = n.conv(n.input(), 3, 8, name="c1")
        r = n.op("ReduceSum", [a, n.const(np.zeros(0), I64)], name="op", keepdims=1, noop_with_empty_axes=noop)
        n.conv(r, 8, 4, name="c2")
        c = n.analyse(["c2"])
        assert (c.blocks_at("op") == [("ReduceSum", "ReduceSum over the channel axis")]) is blocked
        assert c.tracked("op") is not blocked


def check_softmax(op: str) -> None:
    n = Net(13)
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(n.op(op, [a], name="op", axis=-1), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    n2 = Net(13)
    a = n2.conv(n2.input(), 3, 8, name="c1")
    n2.conv(n2.op(op, [a], name="op", axis=1), 8, 4, name="c2")
    c2 = n2.analyse(["c2"])
    assert set(c2.blocks_at("op")) == {(op, f"{op} over the channel axis mixes channels")}
    assert c2.widths() == []


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_opset13(op: str) -> None:
    check_softmax(op)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_before_opset13_flattens_from_its_axis(op: str) -> None:
    """Opset 11 normalises every axis from ``axis`` on (default 1): channels before it stay
    apart (a removed channel's constant becomes uniform over H*W), channels inside it mix."""
    n = Net(11)
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(n.op(op, [a], name="op", axis=2), 8, 4, name="c2")
    c = n.analyse(["c2"])
    assert c.blocks_at("op") == [] and c.widths() == [("c1", 8, 4)]
    got = c.check_const({"c1": [1, 6]}, "op")
    want = -np.log(36.0) if op == "LogSoftmax" else 1 / 36.0  # H*W = 6*6 positions, flattened
    np.testing.assert_allclose(got, [want, want], rtol=1e-5)
    for axis in (None, 1):  # default axis 1: the channels are flattened in
        n2 = Net(11)
        b = n2.conv(n2.input(), 3, 8, name="c1")
        sm = n2.op(op, [b], name="op") if axis is None else n2.op(op, [b], name="op", axis=axis)
        n2.conv(sm, 8, 4, name="c2")
        c2 = n2.analyse(["c2"])
        assert set(c2.blocks_at("op")) == {(op, f"{op} over the channel axis mixes channels")}


def check_shape(op: str) -> None:
    """Shape/Size read a channel tensor without blocking it (they adapt to pruned widths)."""
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(a, 8, 4, name="c2")
    n.op(op, [a], name="op")
    c = n.analyse(["c2", "op"])
    assert not c.tracked("op")
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]


@pytest.mark.parametrize("op", ["Shape", "Size"])
def test_shape_and_size(op: str) -> None:
    check_shape(op)


#: the registered ops this file tests
COVERED = set(POOLS) | {"Resize", "Upsample", "Pad", "Softmax", "LogSoftmax", "Shape", "Size"} | set(REDUCE)
