"""Attention heads end to end: whole heads leave q, k, v and the output projection together,
the Reshape targets (constant or built at run time from the batch) follow, and the smaller
model computes exactly what the zero-filter model computes, at any batch size.

The graph is the shape torch's legacy exporter gives ``nn.MultiheadAttention`` (ViT-B/16):
one in-projection reshaped to (N, T, 3, H, d) and split by Gather, heads merged with the
batch as (N*H, T, d) through a target ``Concat(N * H, T, d)`` computed at run time.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcompress.api import compress
from onnxcompress.config import CompressConfig

T, H, D = 6, 4, 3
E = H * D


def _mha_model(path, *, heads_constant: bool = True, shape_target: bool = False) -> str:
    """x (N, T, E) -> attention -> out_proj -> mean over tokens -> 5 scores.

    ``heads_constant`` False spells N*H as Shape(x)[0] * Shape(x)[2] / d, which no rewrite can
    follow: the heads must then stay. ``shape_target`` builds the (N, H, T, d) target as torch's
    dynamo exporter does, from ``Shape(k)[:-2]`` of k viewed as (N, H, T, d).
    """
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    x = "x"
    node("Shape", [x], "shape")
    n = node("Gather", ["shape", const("i0", 0, np.int64)], "n", axis=0)
    n1 = node("Unsqueeze", [n, const("ax0", [0], np.int64)], "n1")
    if heads_constant:
        nh = node("Mul", [n, const("heads", H, np.int64)], "nh")
    else:
        e = node("Gather", ["shape", const("i2", 2, np.int64)], "e", axis=0)
        nh = node("Div", [node("Mul", [n, e], "ne"), const("dd", D, np.int64)], "nh")
    nh1 = node("Unsqueeze", [nh, "ax0"], "nh1")

    qkv = node("Add", [node("MatMul", [x, const("w_in", rng.standard_normal((E, 3 * E)) * 0.4)], "in_proj"),
                       const("b_in", rng.uniform(-1, 1, 3 * E))], "in_proj_b")
    t5 = node("Concat", [n1, const("t5", [T, 3, H, D], np.int64)], "target5", axis=0)
    qkv = node("Transpose", [node("Reshape", [qkv, t5], "split5")], "qkv", perm=[2, 0, 3, 1, 4])  # (3, N, H, T, d)
    t3 = node("Concat", [nh1, const("td", [T, D], np.int64)], "target3", axis=0)
    q, k, v = (node("Reshape", [node("Gather", [qkv, const(f"g{i}", i, np.int64)], f"pick{i}", axis=0), t3], f"r{i}")
               for i in range(3))  # (N*H, T, d)
    q = node("Mul", [q, const("scale", D ** -0.5)], "qs")
    s = node("MatMul", [q, node("Transpose", [k], "kt", perm=[0, 2, 1])], "scores")
    o = node("MatMul", [node("Softmax", [s], "p", axis=-1), v], "pv")  # (N*H, T, d)
    t4 = node("Concat", [n1, const("t4", [H, T, D], np.int64)], "target4", axis=0)
    if shape_target:
        k4 = node("Reshape", [k, t4], "k4")  # (N, H, T, d)
        lead = node("Slice", [node("Shape", [k4], "k4_shape"), const("lo", [np.iinfo(np.int64).min], np.int64),
                              const("hi", [-2], np.int64)], "k4_lead")
        t4 = node("Concat", [lead, const("td2", [T, D], np.int64)], "target4_dyn", axis=0)
    o = node("Transpose", [node("Reshape", [o, t4], "unmerge")], "o_t", perm=[0, 2, 1, 3])  # (N, T, H, d)
    t2 = node("Concat", [n1, const("t2", [T, E], np.int64)], "target2", axis=0)
    o = node("Reshape", [o, t2], "merge")
    o = node("Add", [node("MatMul", [o, const("w_out", rng.standard_normal((E, E)) * 0.4)], "out_proj"),
                     const("b_out", rng.uniform(-1, 1, E))], "out_proj_b")
    o = node("Add", [x, o], "residual")
    o = node("ReduceMean", [o], "pool", axes=[1], keepdims=0)
    node("Gemm", [o, const("w_cls", rng.standard_normal((5, E))), const("b_cls", np.zeros(5))], "y", transB=1)
    graph = helper.make_graph(nodes, "mha", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", T, E])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return str(path)


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _heads_group(result) -> dict:
    groups = result.report.passes["prune"]["group_details"]
    heads = [g for g in groups if g["unit"] == "head"]
    assert len(heads) == 1 and all(g["channels_per_atom"] == 1 for g in groups if g["unit"] == "channel")
    return heads[0]


@pytest.mark.parametrize("shape_target", [False, True])
def test_whole_heads_are_removed_exactly_at_any_batch(tmp_path, shape_target):
    src = _mha_model(tmp_path / "mha.onnx", shape_target=shape_target)
    cfg = dict(ratio=0.5, input_shapes={"x": (1, T, E)}, round_to=1, simplify=False)  # onnxsim would rewrite N*H as -1
    removed = compress(src, CompressConfig(**cfg))
    removed.save(tmp_path / "removed.onnx")
    zeroed = compress(src, CompressConfig(mode="zero", **cfg))
    zeroed.save(tmp_path / "zeroed.onnx")
    g = _heads_group(removed)
    assert (g["atoms"], g["kept"], g["channels_per_atom"]) == (H, 2, 3 * D)  # q, k and v of a head go together
    m = onnx.load(tmp_path / "removed.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert [i.dims for i in m.graph.initializer if i.name == "w_in"] == [[E, 3 * 2 * D]]
    assert [i.dims for i in m.graph.initializer if i.name == "w_out"] == [[2 * D, E]]
    # N * heads: the heads constant of the run-time target now says 2
    int_muls = [int(inits[i]) for nd in m.graph.node if nd.op_type == "Mul" for i in nd.input
                if i in inits and inits[i].dtype == np.int64 and inits[i].size == 1]
    assert int_muls == [2]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, T, E)).astype(np.float32)
        got, ref = _run(str(tmp_path / "removed.onnx"), x), _run(str(tmp_path / "zeroed.onnx"), x)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert not np.allclose(got, _run(src, x), atol=1e-3)  # something was really removed
    assert removed.report.exactness["exact"] is True


def test_a_run_time_head_count_that_cannot_be_rewritten_keeps_the_heads(tmp_path):
    src = _mha_model(tmp_path / "mha.onnx", heads_constant=False)
    res = compress(src, CompressConfig(ratio=0.5, input_shapes={"x": (1, T, E)}, round_to=1))
    reasons = [b.reason for b in res.report.blockers]
    assert "Reshape target spells the channel count at run time in a way we cannot rewrite" in reasons
    assert not any(g["channels_per_atom"] > 1 for g in res.report.passes["prune"]["group_details"])
    res.save(tmp_path / "out.onnx")
    x = np.random.default_rng(0).standard_normal((2, T, E)).astype(np.float32)
    assert _run(str(tmp_path / "out.onnx"), x).shape == (2, 5)


@pytest.mark.parametrize("fused", [False, True])
def test_transformer_block_heads_and_mlp_prune_together(tmp_path, fused):
    """The unit-test block (HF BERT's separate q/k/v, or one fused projection with Gather, and a
    per-head position bias as in Swin) through the whole pipeline: heads halve, and the written
    model matches zero mode."""
    from onnxcompress.channels.rules._testing import Net
    from onnxcompress.channels.rules.linear_test import attention_block

    n = Net()
    out = attention_block(n, n.input((1, 5, 12)), fused=fused, pos_bias=True)
    out = n.op("MatMul", [n.op("Relu", [out]), n.const(n.rng.standard_normal((12, 2)))], name="y")
    onnx.save(n.proto([out]), tmp_path / "blk.onnx")
    cfg = dict(ratio=0.5, round_to=1)
    r = compress(str(tmp_path / "blk.onnx"), CompressConfig(**cfg))
    r.save(tmp_path / "r.onnx")
    z = compress(str(tmp_path / "blk.onnx"), CompressConfig(mode="zero", **cfg))
    z.save(tmp_path / "z.onnx")
    g = _heads_group(r)
    assert (g["atoms"], g["kept"]) == (4, 2)
    x = np.random.default_rng(0).standard_normal((1, 5, 12)).astype(np.float32)
    got = _run(str(tmp_path / "r.onnx"), x)
    ref = _run(str(tmp_path / "z.onnx"), x)
    assert got.shape == (1, 5, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_inspect_lists_heads_as_a_group(tmp_path):
    """``inspect --groups`` sees what compress sees: the heads are one group of 4 units of 9 channels."""
    from onnxcompress.api import inspect

    rep = inspect(_mha_model(tmp_path / "mha.onnx"), {"x": (1, T, E)}, groups=True)
    heads = [g for g in rep.groups if g["unit"] == "head"]
    assert [(g["prunable_units"], g["channels_per_unit"], g["outcome"]) for g in heads] == [(H, 3 * D, "exact")]
    assert all(g["unit"] == "channel" for g in rep.groups if g not in heads)


@pytest.mark.parametrize("shape_target", [False, True])
def test_head_dims_are_removed_exactly_with_attention_dims(tmp_path, shape_target):
    """--attention dims: every head stays, the same dims go from each (q's with k's and, through the
    fused projection's q/k/v thirds, v's), the head_dim constants of the targets follow, and the
    written model matches zero mode at any batch."""
    src = _mha_model(tmp_path / "mha.onnx", shape_target=shape_target)
    cfg = dict(ratio=0.5, input_shapes={"x": (1, T, E)}, round_to=1, simplify=False, attention="dims")
    removed = compress(src, CompressConfig(**cfg))
    removed.save(tmp_path / "removed.onnx")
    compress(src, CompressConfig(mode="zero", **cfg)).save(tmp_path / "zeroed.onnx")
    groups = removed.report.passes["prune"]["group_details"]
    assert not any(g["unit"] == "head" for g in groups)
    dims = [g for g in groups if g["channels_per_atom"] == 3 * H]  # dim j of q, k and v in every head
    assert len(dims) == 1 and (dims[0]["atoms"], dims[0]["kept"]) == (D, 2)
    m = onnx.load(tmp_path / "removed.onnx")
    shapes = {i.name: list(i.dims) for i in m.graph.initializer}
    assert shapes["w_in"] == [E, 3 * H * 2] and shapes["w_out"] == [H * 2, E]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, T, E)).astype(np.float32)
        got, ref = _run(str(tmp_path / "removed.onnx"), x), _run(str(tmp_path / "zeroed.onnx"), x)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert not np.allclose(got, _run(src, x), atol=1e-3)
    assert removed.report.exactness["exact"] is True


def test_head_dims_with_separate_projections_split_qk_from_v(tmp_path):
    """HF-style q, k, v projections: q's dims go with k's, v's with the output projection, two
    groups of H channels per dim; the remove-mode model matches zero mode (a per-head position
    bias is added to the scores before the softmax)."""
    from onnxcompress.channels.rules._testing import Net
    from onnxcompress.channels.rules.linear_test import attention_block

    n = Net()
    out = attention_block(n, n.input((1, 5, 12)), heads=4, d=3, pos_bias=True)
    out = n.op("MatMul", [n.op("Relu", [out]), n.const(n.rng.standard_normal((12, 2)))], name="y")
    onnx.save(n.proto([out]), tmp_path / "blk.onnx")
    cfg = dict(ratio=0.5, round_to=1, attention="dims")
    r = compress(str(tmp_path / "blk.onnx"), CompressConfig(**cfg))
    r.save(tmp_path / "r.onnx")
    compress(str(tmp_path / "blk.onnx"), CompressConfig(mode="zero", **cfg)).save(tmp_path / "z.onnx")
    per_dim = sorted((g["filters"], g["channels_per_atom"], g["atoms"], g["kept"])
                     for g in r.report.passes["prune"]["group_details"] if g["channels_per_atom"] > 1)
    assert per_dim == [(["k", "q"], 4, 3, 2), (["v"], 4, 3, 2)]  # dim j of every one of the 4 heads
    x = np.random.default_rng(0).standard_normal((1, 5, 12)).astype(np.float32)
    got, ref = _run(str(tmp_path / "r.onnx"), x), _run(str(tmp_path / "z.onnx"), x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert r.report.exactness["exact"] is True


@pytest.mark.parametrize("attention,atoms", [("heads", H), ("dims", D)])
def test_sensitivity_command_measures_heads_or_dims(tmp_path, attention, atoms):
    """`onnxcompress sensitivity --attention`: the attention group's atoms are its H heads, or its
    d dims (each across every head), and each is measured."""
    import json

    from onnxcompress.cli import main

    src = _mha_model(tmp_path / "mha.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((16, T, E)).astype(np.float32))
    out = tmp_path / "s.json"
    assert main(["sensitivity", src, "--calib", str(tmp_path / "calib.npz"), "--input-shape", f"x:1,{T},{E}",
                 "--ratios", "0.25,0.5", "--round-to", "1", "--attention", attention, "--json", str(out), "-q"]) == 0
    groups = json.loads(out.read_text())["groups"]
    attn = [g for g in groups if "in_proj" in " ".join(g["filters"])]
    assert len(attn) == 1 and attn[0]["atoms"] == atoms and attn[0]["curve"]
