"""onnxruntime's fused Attention: heads are its output channels, exact against zero mode."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress.channels.rules._testing import Net, remove_and_zero
from onnxcompress.runtime import Session

#: the registered ops this file tests
COVERED = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}

HEADS, D, TOKENS = 4, 3, 5


def _with_output_shape(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Unchecked builder graphs leave the output shapeless; the verifier's full check wants one."""
    proto.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, TOKENS, 2]))
    return proto


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((1, TOKENS, 12)).astype(np.float32)}


def fused_block(n: Net, *, tracked_input: bool, **attrs) -> str:
    """x (1, 5, 12) [-> MatMul to 8 features] -> Attention(4 heads of 3) -> MatMul -> Relu -> MatMul(2)."""
    n.extra_opsets["com.microsoft"] = 1
    x = n.input((1, TOKENS, 12))
    k = 12
    if tracked_input:
        x = n.op("Add", [n.op("MatMul", [x, n.const(n.rng.standard_normal((12, 8)) * 0.5)], name="pre"),
                         n.const(n.rng.uniform(-1, 1, 8))], name="pre_b")
        k = 8
    e = HEADS * D
    att = n.op("Attention", [x, n.const(n.rng.standard_normal((k, 3 * e)) * 0.5), n.const(n.rng.uniform(-1, 1, 3 * e))],
               name="att", domain="com.microsoft", num_heads=HEADS, **attrs)
    o = n.op("MatMul", [att, n.const(n.rng.standard_normal((e, e)) * 0.5)], name="out_proj")
    return n.op("MatMul", [n.op("Relu", [o]), n.const(n.rng.standard_normal((e, 2)))], name="y")


def check_fused_attention(tracked_input: bool = False) -> None:
    n = Net()
    y = fused_block(n, tracked_input=tracked_input)
    c = n.analyse([y], check=False)
    ids = c.ids("att")
    roots = c.roots[ids].reshape(HEADS, D)
    assert (roots == roots[:, :1]).all() and len(set(roots[:, 0])) == HEADS  # a head is one element
    w_slot = c.slot("att", "out")
    assert w_slot[1] == 1 and list(c.roots[w_slot[2]]) == list(c.roots[ids]) * 3  # its q, k and v columns
    assert c.blocks_at("att") == []
    assert sorted(c.roots[c.analysis.heads]) == sorted(roots[:, 0])  # reported as heads
    if tracked_input:
        assert c.slot("att", "in")[1] == 0
    c.check_const({"att": [3, 4, 5]}, "att")  # head 1 outputs v's bias
    assert ("att", 36, 18) in c.widths()  # 2 of 4 heads, counted in q, k and v columns


@pytest.mark.parametrize("tracked_input", [False, True])
def test_fused_attention(tracked_input: bool) -> None:
    check_fused_attention(tracked_input)


def test_fused_attention_heads_are_removed_exactly(tmp_path) -> None:
    """The written model (num_heads 2, sliced q/k/v columns, the removed heads' v bias folded
    into the next MatMul, the removed input features' constants into the Attention bias)
    computes what the zero-filter model computes."""
    n = Net()
    outs = remove_and_zero(_with_output_shape(n.proto([fused_block(n, tracked_input=True)], check=False)), tmp_path, _feeds())
    m = onnx.load(tmp_path / "remove.onnx")
    att = next(nd for nd in m.graph.node if nd.op_type == "Attention")
    assert [a.i for a in att.attribute if a.name == "num_heads"] == [2]
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attrs,reason", [
    ({"qkv_hidden_sizes": [12, 6, 18]},
     "fused Attention with weights we cannot split into heads (or q's and k's widths differ)"),
    ({"do_rotary": 1}, "fused Attention with rotary embeddings"),
])
def test_fused_attention_it_cannot_follow_keeps_its_channels(attrs, reason) -> None:
    n = Net()
    y = fused_block(n, tracked_input=True, **attrs)
    c = n.analyse([y], check=False)
    assert set(c.blocks_at("att")) == {("Attention", reason)}
    assert not c.tracked("att")


def projected_block(n: Net, op: str, *, mask_heads: int = 1) -> str:
    """x (1, 5, 12) -> q, k, v MatMuls -> MultiHeadAttention (with a q|k|v bias) or ai.onnx
    Attention (opset 23, with an additive mask of ``mask_heads`` heads) -> MatMul -> Relu -> MatMul(2)."""
    x = n.input((1, TOKENS, 12))
    e = HEADS * D
    q, k, v = (n.op("MatMul", [x, n.const(n.rng.standard_normal((12, e)) * 0.5)], name=nm) for nm in "qkv")
    if op == "MultiHeadAttention":
        n.extra_opsets["com.microsoft"] = 1
        att = n.op(op, [q, k, v, n.const(n.rng.uniform(-1, 1, 3 * e))], name="att", domain="com.microsoft",
                   num_heads=HEADS)
    else:
        mask = n.const(n.rng.standard_normal((1, mask_heads, TOKENS, TOKENS)))
        att = n.op(op, [q, k, v, mask], name="att", q_num_heads=HEADS, kv_num_heads=HEADS)
    o = n.op("MatMul", [att, n.const(n.rng.standard_normal((e, e)) * 0.5)], name="out_proj")
    return n.op("MatMul", [n.op("Relu", [o]), n.const(n.rng.standard_normal((e, 2)))], name="y")


@pytest.mark.parametrize("op", ["MultiHeadAttention", "Attention"])
def test_projected_attention_heads(op: str, tmp_path) -> None:
    """q, k and v's channels of a head are one element; removing heads is exact and rewrites the head count."""
    n = Net(23)
    y = projected_block(n, op)
    c = n.analyse([y], check=False)
    roots = c.roots[c.ids("q")].reshape(HEADS, D)
    assert (roots == roots[:, :1]).all() and len(set(roots[:, 0])) == HEADS
    assert (c.roots[c.ids("k")] == c.roots[c.ids("q")]).all() and (c.roots[c.ids("v")] == c.roots[c.ids("q")]).all()
    assert c.blocks_at("att") == []
    c.check_const({"q": [3, 4, 5]}, "att")  # head 1 outputs v's constant (and its bias)
    outs = remove_and_zero(_with_output_shape(n.proto([y], check=False)), tmp_path, _feeds())
    att = next(nd for nd in onnx.load(tmp_path / "remove.onnx").graph.node if nd.op_type == op)
    heads = {a.name: a.i for a in att.attribute if a.name.endswith("num_heads")}
    assert set(heads.values()) == {2}
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)


def test_a_per_head_mask_keeps_the_heads() -> None:
    n = Net(23)
    c = n.analyse([projected_block(n, "Attention", mask_heads=HEADS)], check=False)
    assert set(c.blocks_at("att")) == {("Attention", "Attention with a per-head bias or mask")}
    assert not c.tracked("att")


HQ, HKV, DG = 4, 2, 16  # grouped queries: 4 q heads share 2 kv heads; onnxruntime's CPU rotary wants d % 16 == 0


def gqa_block(n: Net, op: str, *, past: bool = False, rotary: bool = False) -> str:
    """x (1, 5, 12) -> q (4 heads of 8), k and v (2 heads of 8) MatMuls -> GroupQueryAttention or
    ai.onnx Attention with grouped queries -> MatMul(12) -> Relu -> MatMul(2)."""
    x = n.input((1, TOKENS, 12))
    q = n.op("MatMul", [x, n.const(n.rng.standard_normal((12, HQ * DG)) * 0.5)], name="q")
    k, v = (n.op("MatMul", [x, n.const(n.rng.standard_normal((12, HKV * DG)) * 0.5)], name=nm) for nm in "kv")
    if op == "GroupQueryAttention":
        n.extra_opsets["com.microsoft"] = 1
        cache = [n.const(np.zeros((1, HKV, 0, DG))), n.const(np.zeros((1, HKV, 0, DG)))] if past else ["", ""]
        lengths = [n.const([TOKENS - 1], np.int32), n.const(TOKENS, np.int32)]
        extra = {}
        if rotary:
            angles = np.arange(TOKENS)[:, None] * 0.1 * (1 + np.arange(DG // 2))[None, :]
            lengths += [n.const(np.cos(angles)), n.const(np.sin(angles))]
            extra["do_rotary"] = 1
        att = n.op(op, [q, k, v, *cache, *lengths], name="att", n_out=3, domain="com.microsoft", num_heads=HQ,
                   kv_num_heads=HKV, **extra)[0]
    else:
        att = n.op(op, [q, k, v], name="att", q_num_heads=HQ, kv_num_heads=HKV)
    o = n.op("MatMul", [att, n.const(n.rng.standard_normal((HQ * DG, 12)) * 0.5)], name="out_proj")
    return n.op("MatMul", [n.op("Relu", [o]), n.const(n.rng.standard_normal((12, 2)))], name="y")


@pytest.mark.parametrize("op,rotary", [("GroupQueryAttention", False), ("GroupQueryAttention", True),
                                       ("Attention", False)])
def test_grouped_query_attention_removes_whole_kv_groups(op: str, rotary: bool, tmp_path) -> None:
    """A kv head goes with the q heads that read it (q head h reads kv head h // 2): one element per
    group; removing a group is exact, and both head counts are rewritten."""
    n = Net(23)
    y = gqa_block(n, op, rotary=rotary)
    c = n.analyse([y], check=False)
    assert c.blocks_at("att") == []
    q = c.roots[c.ids("q")].reshape(HQ, DG)[:, 0]
    k = c.roots[c.ids("k")].reshape(HKV, DG)[:, 0]
    assert (q == np.repeat(k, HQ // HKV)).all() and len(set(k)) == HKV
    assert (c.roots[c.ids("v")].reshape(HKV, DG)[:, 0] == k).all()
    c.check_const({"k": list(range(DG, 2 * DG))}, "att")  # group 1 (q heads 2, 3) outputs v's constant
    outs = remove_and_zero(_with_output_shape(n.proto([y], check=False)), tmp_path, _feeds())
    m = onnx.load(tmp_path / "remove.onnx")
    att = next(nd for nd in m.graph.node if nd.op_type == op)
    heads = {a.name: a.i for a in att.attribute if a.name.endswith("num_heads")}
    assert heads == ({"num_heads": 2, "kv_num_heads": 1} if op == "GroupQueryAttention"
                     else {"q_num_heads": 2, "kv_num_heads": 1})
    weights = {nd.output[0]: nd.input[1] for nd in m.graph.node if nd.op_type == "MatMul"}
    dims = {i.name: list(i.dims) for i in m.graph.initializer}
    assert [dims[weights[p]] for p in ("q", "k", "v", "out_proj")] == [[12, 2 * DG], [12, DG], [12, DG], [2 * DG, 6]]  # out_proj is a group too
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
    original = next(iter(Session(str(tmp_path / "model.onnx")).run(_feeds()).values()))
    assert not np.allclose(outs["remove"], original, atol=1e-3)  # a group was really removed


def test_a_key_value_cache_keeps_the_groups() -> None:
    n = Net(23)
    c = n.analyse([gqa_block(n, "GroupQueryAttention", past=True)], check=False)
    assert set(c.blocks_at("att")) == {("GroupQueryAttention", "GroupQueryAttention with a key-value cache")}
    assert not c.tracked("att")


def _dims_of(c, name: str, heads: int) -> np.ndarray:
    return c.roots[c.ids(name)].reshape(heads, -1)


@pytest.mark.parametrize("op", ["FusedAttention", "MultiHeadAttention", "Attention", "GroupedAttention"])
def test_attention_dims_in_fused_ops_are_removed_exactly(op: str, tmp_path) -> None:
    """--attention dims: every head stays and the same dims go from each, q's with k's and v's
    apart. The written op keeps its head count, gets the new widths (qkv_hidden_sizes where it
    has one) and its scale pinned to 1/sqrt(d) of the original head; it equals zero mode."""
    n = Net(23)
    if op == "FusedAttention":
        y, heads, d = fused_block(n, tracked_input=True), HEADS, D
    elif op == "GroupedAttention":
        y, heads, d = gqa_block(n, "Attention"), HQ, DG
    else:
        y, heads, d = projected_block(n, op), HEADS, D
    c = n.analyse([y], check=False, attention="dims")
    assert c.blocks_at("att") == []
    if op == "FusedAttention":
        w = c.slot("att", "out")[2].reshape(3, heads, d)
        qk, v = c.roots[w[0]], c.roots[w[2]]
        assert (c.roots[w[1]] == qk).all()
    else:
        qk, v = _dims_of(c, "q", heads), _dims_of(c, "v", HKV if op == "GroupedAttention" else heads)
        k = _dims_of(c, "k", HKV if op == "GroupedAttention" else heads)
        assert (k == qk[: len(k)]).all()
    assert (qk == qk[:1]).all() and len(set(qk[0])) == d  # dim j of every head is one element
    assert (v == v[:1]).all() and len(set(v[0])) == d and not set(v.ravel()) & set(qk.ravel())
    settings = {"attention": "dims"} if op != "GroupedAttention" else {"attention": "dims", "ratio": 0.25}
    outs = remove_and_zero(_with_output_shape(n.proto([y], check=False)), tmp_path, _feeds(), **settings)
    m = onnx.load(tmp_path / "remove.onnx")
    att = next(nd for nd in m.graph.node if nd.op_type in ("Attention", "MultiHeadAttention"))
    attrs = {a.name: (a.ints if a.ints else (a.i if a.type == onnx.AttributeProto.INT else a.f)) for a in att.attribute}
    assert {v for k_, v in attrs.items() if k_.endswith("num_heads")} == {heads} | ({HKV} if op == "GroupedAttention" else set())
    if op == "FusedAttention":
        q_w, _, v_w = attrs["qkv_hidden_sizes"]
        assert q_w < heads * d and q_w % heads == 0 and v_w % heads == 0
        from onnxcompress.channels.rules._testing import Case

        again = Case.of(m)  # the written model (q = k != v) is analysed again, not blocked
        assert again.blocks_at("att") == [] and again.tracked("att")
    assert attrs["scale"] == pytest.approx(1 / np.sqrt(d))  # the smaller head keeps the original scale
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
    original = next(iter(Session(str(tmp_path / "model.onnx")).run(_feeds()).values()))
    assert not np.allclose(outs["remove"], original, atol=1e-3)  # dims were really removed


def test_grouped_query_attention_keeps_whole_heads_under_dims() -> None:
    """One head size for q, k and v: --attention dims falls back to whole kv groups."""
    n = Net(23)
    c = n.analyse([gqa_block(n, "GroupQueryAttention")], check=False, attention="dims")
    k = c.roots[c.ids("k")].reshape(HKV, DG)
    assert (k == k[:, :1]).all() and len(set(k[:, 0])) == HKV
