"""Gemm and MatMul rules: consumer slots on the input side, new prunable features on the output side."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.channels.rules.linear import ATTENTION_ONLY
from onnxcompress.channels.rules._testing import Case, Net


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
    assert set(c.blocks_at("mm")) == {("MatMul", ATTENTION_ONLY)}
    assert c.widths() == []


def attention_block(n: Net, x: str, *, heads: int = 4, d: int = 3, tokens: int = 5, fused: bool = False,
                    pos_bias: bool = False, pick: str = "gather") -> str:
    """Unfused multi-head attention over x (1, tokens, heads*d), as exporters write it.

    ``fused``: one in-projection, reshaped to (1, T, 3, H, d) and split by Gather (torch's
    MultiheadAttention, torchvision's Swin) or, with ``pick="slice"``, by Slice and Squeeze
    (paddle2onnx's SVTR, at opset 11 where Squeeze takes an attribute); otherwise q, k and v are three MatMuls reshaped to
    (1, T, H, d) (HF BERT). ``pos_bias`` adds a per-head (H, T, T) bias to the scores (Swin).
    """
    e = heads * d
    rng = n.rng

    def proj(width: int, name: str) -> str:
        mm = n.op("MatMul", [x, n.const(rng.standard_normal((e, width)) * 0.5)], name=name)
        return n.op("Add", [mm, n.const(rng.uniform(-1, 1, width))], name=f"{name}_b")

    def heads_of(t: str, perm: list[int]) -> str:
        r = n.op("Reshape", [t, n.const([1, tokens, heads, d], np.int64)])
        return n.op("Transpose", [r], perm=perm)

    if fused:
        qkv = n.op("Reshape", [proj(3 * e, "qkv"), n.const([1, tokens, 3, heads, d], np.int64)])
        qkv = n.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # (3, 1, H, T, d)
        if pick == "gather":
            q, k, v = (n.op("Gather", [qkv, n.const(np.array(i), np.int64)], axis=0) for i in range(3))
        else:  # paddle2onnx: qkv[i:i+1] then Squeeze
            q, k, v = (n.op("Squeeze", [n.op("Slice", [qkv, n.const([i], np.int64), n.const([i + 1], np.int64),
                                                      n.const([0], np.int64)])], axes=[0]) for i in range(3))
        kt = n.op("Transpose", [k], perm=[0, 1, 3, 2])
    else:
        q, kt, v = heads_of(proj(e, "q"), [0, 2, 1, 3]), heads_of(proj(e, "k"), [0, 2, 3, 1]), heads_of(proj(e, "v"), [0, 2, 1, 3])
    q = n.op("Mul", [q, n.const(np.array(d ** -0.5))])
    scores = n.op("MatMul", [q, kt], name="scores")
    if pos_bias:
        scores = n.op("Add", [scores, n.const(rng.standard_normal((heads, tokens, tokens)))], name="pos")
    p = n.op("Softmax", [scores], axis=-1, name="p")
    o = n.op("MatMul", [p, v], name="pv")
    o = n.op("Transpose", [o], perm=[0, 2, 1, 3])
    o = n.op("Reshape", [o, n.const([1, tokens, e], np.int64)], name="merge")
    return n.op("MatMul", [o, n.const(rng.standard_normal((e, e)) * 0.5)], name="out_proj")


@pytest.mark.parametrize("fused,pick,opset", [(False, "gather", 17), (True, "gather", 17), (True, "slice", 11)])
@pytest.mark.parametrize("pos_bias", [False, True])
def test_attention_heads_are_atoms(fused: bool, pick: str, opset: int, pos_bias: bool) -> None:
    """Each head's q, k, v channels are one element; the scores carry the head axis, and the
    removed head's output is V's constant (exact, even with a position bias on the scores)."""
    n = Net(opset)
    out = attention_block(n, n.input((1, 5, 12)), fused=fused, pos_bias=pos_bias, pick=pick)
    c = n.analyse([out])
    first = "qkv" if fused else "q"
    q_ids = c.out_ids(first)
    roots = c.roots[q_ids[:12]].reshape(4, 3)  # q's channels, head by head
    assert (roots == roots[:, :1]).all() and len(set(roots[:, 0])) == 4
    if fused:  # k and v thirds join q's heads column by column
        assert (c.roots[q_ids[12:24]] == c.roots[q_ids[:12]]).all()
    else:
        assert (c.roots[c.out_ids("k")] == c.roots[q_ids]).all() and (c.roots[c.out_ids("v")] == c.roots[q_ids]).all()
    assert c.axes("scores" if not pos_bias else "pos") == (1,) and c.axes("pv") == (1, 3)
    assert c.blocks_at("scores") == [] and c.blocks_at("pv") == []
    # remove head 2: onnxruntime's zero-mode values are the rules' constants
    head2 = {first: [6, 7, 8]}
    if not pos_bias:
        c.check_const(head2, "p")
    c.check_const(head2, "pv")
    got = c.check_const(head2, "merge")
    assert got.shape == (3,)
    want = ("qkv", 36, 18) if fused else ("k+q+v", 12, 6)  # 2 of 4 heads kept, d = 3 channels each
    assert want in c.widths()


def test_attention_products_that_are_not_heads_block() -> None:
    """Q @ K^T without a head axis, or with the channels of only one side, keeps its channels."""
    n = Net()
    x = n.input((1, 5, 6))
    q = n.op("MatMul", [x, n.const(n.rng.standard_normal((6, 6)))], name="q")
    k = n.op("MatMul", [x, n.const(n.rng.standard_normal((6, 6)))], name="k")
    kt = n.op("Transpose", [k], perm=[0, 2, 1])
    s = n.op("MatMul", [q, kt], name="scores")
    c = n.analyse([s])
    assert set(c.blocks_at("scores")) == {("MatMul", ATTENTION_ONLY)}


def _dims_block(between, opset: int = 17, axis: int | None = -1) -> Case:
    """HF-style attention whose scores pass through ``between(n, scores)`` to the softmax."""
    n = Net(opset)
    x = n.input((1, 5, 12))
    rng = n.rng

    def heads_of(name: str, perm: list[int]) -> str:
        mm = n.op("MatMul", [x, n.const(rng.standard_normal((12, 12)))], name=name)
        return n.op("Transpose", [n.op("Reshape", [mm, n.const([1, 5, 4, 3], np.int64)])], perm=perm)

    q, kt, v = heads_of("q", [0, 2, 1, 3]), heads_of("k", [0, 2, 3, 1]), heads_of("v", [0, 2, 1, 3])
    s = between(n, n.op("MatMul", [q, kt], name="scores"))
    p = n.op("Softmax", [s]) if axis is None else n.op("Softmax", [s], axis=axis)
    o = n.op("MatMul", [p, v], name="pv")
    o = n.op("Reshape", [n.op("Transpose", [o], perm=[0, 2, 1, 3]), n.const([1, 5, 12], np.int64)])
    return n.analyse([n.op("MatMul", [o, n.const(rng.standard_normal((12, 12)))], name="out_proj")], attention="dims")


@pytest.mark.parametrize("between,dims", [
    (lambda n, s: n.op("Div", [s, n.const(np.array(2.0))]), True),
    (lambda n, s: n.op("Where", [n.const(np.tril(np.ones((5, 5), bool))), s, n.const(np.array(-1e9))]), True),
    (lambda n, s: n.op("Where", [n.const(np.tril(np.ones((5, 5), bool))), s, n.const(np.array(0.0))]), False),
    (lambda n, s: n.op("Mul", [s, n.const(np.linspace(0.5, 1.5, 5))]), False),
    (lambda n, s: n.op("Relu", [s]), False),
], ids=["scaled", "causal-mask", "mask-filled-with-0", "scaled-per-key", "relu"])
def test_head_dims_only_where_a_score_shift_cannot_reach_the_output(between, dims: bool) -> None:
    """--attention dims: q's dim j joins k's only where a constant added to a row of scores is
    dropped by the softmax; elsewhere the attention falls back to whole heads."""
    c = _dims_block(between)
    q, k, v = (c.roots[c.out_ids(name)].reshape(4, 3) for name in ("q", "k", "v"))
    assert (q == k).all()
    if dims:  # each dim of a head its own element, the same dim tied across heads; v apart
        assert len(set(q[0])) == 3 and (q == q[:1]).all() and not set(v.ravel()) & set(q.ravel())
        assert (v == v[:1]).all() and len(set(v[0])) == 3
    else:  # whole heads for q and k (what follows the scores decides whether v joins them)
        assert (q == q[:, :1]).all() and len(set(q[:, 0])) == 4


def test_head_dims_need_the_softmax_over_keys_before_opset_13() -> None:
    """Before opset 13 a Softmax without ``axis`` normalises over every axis from 1 on: a row of
    scores is not what it sums over, so q and k keep whole heads."""
    q = _dims_block(lambda n, s: s, opset=11, axis=None)
    roots = q.roots[q.out_ids("q")].reshape(4, 3)
    assert (roots == roots[:, :1]).all() and len(set(roots[:, 0])) == 4
    d = _dims_block(lambda n, s: s, opset=11, axis=3)
    roots = d.roots[d.out_ids("q")].reshape(4, 3)
    assert (roots == roots[:1]).all() and len(set(roots[0])) == 3


@pytest.mark.parametrize("axis,passes", [(3, True), (None, False)])
def test_v_passes_an_untracked_softmax_only_when_its_rows_sum_to_one(axis, passes: bool) -> None:
    """P carries nothing (a 0-filled mask blocks the scores): V's channels go through P @ V only
    where the softmax normalises over keys; an opset-11 Softmax without ``axis`` flattens."""
    mask0 = lambda n, s: n.op("Where", [n.const(np.tril(np.ones((5, 5), bool))), s, n.const(np.array(0.0))])  # noqa: E731
    c = _dims_block(mask0, opset=11, axis=axis)
    assert (c.blocks_at("pv") == []) is passes
