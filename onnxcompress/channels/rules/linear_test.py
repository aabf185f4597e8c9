"""Gemm and MatMul rules: consumer slots on the input side, new prunable features on the output side."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.channels.rules._testing import Net


#: the registered ops this file tests
COVERED = {"Gemm", "MatMul"}


def check_gemm(trans_b: int = 1) -> None:
    """conv -> GAP -> Flatten -> Gemm(6, beta 0.5) -> Relu -> Gemm(3) -> output."""
    n = Net()
    a = n.conv(n.input((1, 3, 2, 2)), 3, 4, name="c1")
    f = n.op("Flatten", [n.op("GlobalAveragePool", [a])], axis=1)
    w1 = n.const(n.rng.standard_normal((6, 4) if trans_b else (4, 6)))
    cvec = np.array([0.6, -1.4, 0.3, 2.2, -0.8, 1.1], np.float32)
    b1 = n.const(cvec)
    h = n.op("Relu", [n.op("Gemm", [f, w1, b1], name="fc1", transB=trans_b, beta=0.5)])
    w2 = n.const(n.rng.standard_normal((6, 3)))
    n.op("Gemm", [h, w2, n.const(np.ones((1, 3)))], name="fc2")
    c = n.analyse(["fc2"])
    assert c.slot("fc1", "in")[:2] == (w1, 1 if trans_b else 0)
    np.testing.assert_array_equal(c.in_ids("fc1"), c.ids("c1"))
    assert c.slot("fc1", "out")[:2] == (w1, 0 if trans_b else 1)
    assert c.slot("fc1", "bias")[:2] == (b1, 0)
    ids = c.ids("fc1")
    assert c.axes("fc1") == (1,) and ids.size == 6
    np.testing.assert_array_equal(c.out_ids("fc1"), ids)
    np.testing.assert_array_equal(c.slot("fc1", "bias")[2], ids)
    assert c.analysis.source[ids].all()
    c.assert_free(ids)
    assert c.slot("fc2", "in")[:2] == (w2, 0)
    np.testing.assert_array_equal(c.in_ids("fc2"), ids)
    assert c.slot("fc2", "out")[:2] == (w2, 1)
    assert c.slot("fc2", "bias")[1] == 1  # C of shape (1, 3): its last axis
    assert c.blocks_at("fc1") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 4, 2), ("fc1", 6, 3)]
    # A removed feature outputs beta * C (0 once its bias is zeroed too).
    np.testing.assert_allclose(c.check_const({"fc1": [1, 3, 4]}, "fc1"), 0.5 * cvec[[1, 3, 4]], rtol=1e-6)
    np.testing.assert_array_equal(c.check_const({"fc1": [0]}, "fc1", zero_bias=True), [0.0])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_b: int) -> None:
    check_gemm(trans_b)


def test_gemm_with_a_scalar_bias_keeps_it_when_biases_are_zeroed() -> None:
    n = Net()
    a = n.conv(n.input((1, 3, 1, 1)), 3, 4, name="c1")
    f = n.op("Flatten", [a], axis=1)
    g = n.op("Gemm", [f, n.const(n.rng.standard_normal((4, 6))), n.const([0.75])], name="fc1")
    n.op("Gemm", [g, n.const(n.rng.standard_normal((6, 2)))], name="fc2")
    c = n.analyse(["fc2"])
    assert c.slots("fc1", "bias") == []
    np.testing.assert_array_equal(c.check_const({"fc1": [2]}, "fc1", zero_bias=True), [0.75])


def check_matmul() -> None:
    """Channels-last: conv -> Transpose -> MatMul(6) -> Relu -> MatMul(5) -> output."""
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    t = n.op("Transpose", [a], perm=[0, 2, 3, 1])
    w1 = n.const(n.rng.standard_normal((8, 6)))
    h = n.op("Relu", [n.op("MatMul", [t, w1], name="mm1")])
    w2 = n.const(n.rng.standard_normal((6, 5)))
    n.op("MatMul", [h, w2], name="mm2")
    c = n.analyse(["mm2"])
    assert c.slot("mm1", "in")[:2] == (w1, 0)
    np.testing.assert_array_equal(c.in_ids("mm1"), c.ids("c1"))
    assert c.slot("mm1", "out")[:2] == (w1, 1)
    ids = c.ids("mm1")
    assert c.axes("mm1") == (3,) and ids.size == 6
    np.testing.assert_array_equal(c.out_ids("mm1"), ids)
    c.assert_free(ids)
    np.testing.assert_array_equal(c.in_ids("mm2"), ids)
    assert c.blocks_at("mm1") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4), ("mm1", 6, 3)]
    np.testing.assert_array_equal(c.check_const({"mm1": [0, 5]}, "mm1"), [0.0, 0.0])


def test_matmul() -> None:
    check_matmul()


def test_matmul_with_a_runtime_weight_blocks() -> None:
    n = Net()
    a = n.conv(n.input((1, 3, 2, 2)), 3, 4, name="c1")
    n.op("MatMul", [a, a], name="mm")
    c = n.analyse(["mm"])
    assert set(c.blocks_at("mm")) == {("MatMul", "MatMul is pruned through only as x[..., C] @ W[C, N] with a constant W")}
    assert c.widths() == []
