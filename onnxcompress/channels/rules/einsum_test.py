"""Einsum: attention's two products as einsums (MaxViT) are followed; other equations block."""

from __future__ import annotations

import numpy as np
import onnx

from onnxcompress.channels.rules._testing import Net, remove_and_zero
from onnxcompress.channels.rules.einsum import REASON

#: the registered ops this file tests
COVERED = {"Einsum"}

HEADS, D, TOKENS = 4, 3, 5


def einsum_block(n: Net) -> str:
    """x (1, 5, 12) -> q, k, v -> (B, H, T, d) -> einsum scores -> Softmax -> einsum P @ V -> out -> 2."""
    x = n.input((1, TOKENS, 12))
    e = HEADS * D

    def heads(name: str) -> str:
        t = n.op("MatMul", [x, n.const(n.rng.standard_normal((12, e)) * 0.5)], name=name)
        t = n.op("Add", [t, n.const(n.rng.uniform(-1, 1, e))])
        return n.op("Transpose", [n.op("Reshape", [t, n.const([1, TOKENS, HEADS, D], np.int64)])], perm=[0, 2, 1, 3])

    q, k, v = heads("q"), heads("k"), heads("v")
    s = n.op("Einsum", [q, k], name="scores", equation="BHID, BHJD -> BHIJ")
    p = n.op("Softmax", [n.op("Mul", [s, n.const(np.array(D ** -0.5))])], axis=-1, name="p")
    o = n.op("Einsum", [p, v], name="pv", equation="bhij,bhjd->bhid")
    o = n.op("Reshape", [n.op("Transpose", [o], perm=[0, 2, 1, 3]), n.const([1, TOKENS, e], np.int64)], name="merge")
    o = n.op("MatMul", [o, n.const(n.rng.standard_normal((e, e)) * 0.5)], name="out_proj")
    return n.op("MatMul", [n.op("Relu", [o]), n.const(n.rng.standard_normal((e, 2)))], name="y")


def test_einsum_attention_heads(tmp_path) -> None:
    n = Net()
    y = einsum_block(n)
    c = n.analyse([y])
    roots = c.roots[c.out_ids("q")].reshape(HEADS, D)
    assert (roots == roots[:, :1]).all() and len(set(roots[:, 0])) == HEADS
    assert (c.roots[c.out_ids("k")] == c.roots[c.out_ids("q")]).all()
    assert (c.roots[c.out_ids("v")] == c.roots[c.out_ids("q")]).all()
    assert c.axes("scores") == (1,) and c.axes("pv") == (1, 3)
    assert c.blocks_at("scores") == [] and c.blocks_at("pv") == []
    assert set(c.roots[c.analysis.heads]) == set(roots[:, 0])  # reported as heads
    c.check_const({"q": [3, 4, 5]}, "p")
    c.check_const({"q": [3, 4, 5]}, "merge")
    outs = remove_and_zero(n.proto([y]), tmp_path, {"x": np.random.default_rng(0).standard_normal((1, TOKENS, 12)).astype(np.float32)})
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
    q_w = [i for i in onnx.load(tmp_path / "remove.onnx").graph.initializer if list(i.dims) == [12, 2 * D]]
    assert len(q_w) == 3  # q, k and v keep 2 heads of 3


def test_other_einsums_keep_their_channels() -> None:
    for eq, inputs in (("nchw->nhwc", 1), ("nchw,nchw->nhw", 2)):
        n = Net()
        a = n.conv(n.input(), 3, 8, name="c1")
        n.op("Einsum", [a] * inputs, name="op", equation=eq)
        c = n.analyse(["op"])
        assert set(c.blocks_at("op")) == {("Einsum", REASON)}
        assert c.widths() == []
