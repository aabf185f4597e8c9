"""onnxruntime's fused stream norms: the stream is one lossy group from the embedding tables on."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper as oh, numpy_helper as nh

from onnxcompress.channels.rules._testing import Net

#: the registered ops this file tests
COVERED = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization"}

H, T, VOCAB = 8, 5, 50


def mini_bert(n: Net, skip_op: str = "SkipLayerNormalization") -> str:
    """EmbedLayerNormalization -> MatMul -> SkipLN(+ the embedding) -> MatMul -> BiasGelu -> MatMul ->
    SkipLN(+ the previous) -> MatMul(3): a post-LN block as onnxruntime's BERT optimizer writes it."""
    n.extra_opsets["com.microsoft"] = 1
    ids = n.input((1, T), name="ids", dtype=onnx.TensorProto.INT32)
    seg = n.input((1, T), name="seg", dtype=onnx.TensorProto.INT32)
    r = n.rng
    e = n.op("EmbedLayerNormalization", [ids, seg, n.const(r.standard_normal((VOCAB, H))), n.const(r.standard_normal((16, H))),
                                         n.const(r.standard_normal((2, H))), n.const(r.uniform(0.5, 1.5, H)), n.const(r.uniform(-1, 1, H))],
             name="embed", n_out=2, domain="com.microsoft")[0]

    def skip(x: str, res: str, name: str) -> str:
        params = [n.const(r.uniform(0.5, 1.5, H)), n.const(r.uniform(-1, 1, H)), n.const(r.uniform(-1, 1, H))]
        if skip_op != "SkipLayerNormalization":
            params = [params[0], params[2]]  # gamma, bias
        return n.op(skip_op, [x, res, *params], name=name, domain="com.microsoft", epsilon=1e-5)

    s1 = skip(n.op("MatMul", [e, n.const(r.standard_normal((H, H)) * 0.5)], name="attn_out"), e, "skip1")
    f = n.op("BiasGelu", [n.op("MatMul", [s1, n.const(r.standard_normal((H, 16)) * 0.5)], name="fc1"),
                          n.const(r.uniform(-1, 1, 16))], name="gelu", domain="com.microsoft")
    s2 = skip(n.op("MatMul", [f, n.const(r.standard_normal((16, H)) * 0.5)], name="fc2"), s1, "skip2")
    return n.op("MatMul", [s2, n.const(r.standard_normal((H, 3)))], name="head")


@pytest.mark.parametrize("skip_op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_the_stream_is_one_lossy_group_from_the_tables_on(skip_op: str) -> None:
    n = Net(17)
    y = mini_bert(n, skip_op)
    blocked = n.analyse([y], check=False)
    assert {op for op, _ in blocked.blocks_at("skip1")} == {skip_op}  # lossy: kept without calibration
    c = n.analyse([y], check=False, allow_lossy=True)
    assert c.blocks_at("embed") == [] and c.blocks_at("skip1") == [] and c.blocks_at("skip2") == []
    stream = c.roots[c.ids("embed")]
    for v in ("attn_out", "skip1", "fc2", "skip2"):
        assert (c.roots[c.ids(v)] == stream).all(), v
    assert len(set(stream)) == H  # one element per channel
    tables = [(v, ax) for v, ax, _ in c.slots("embed", "out")]
    assert [ax for _, ax in tables] == [1, 1, 1]  # word, position and segment columns
    assert sorted(r.node for r in c.analysis.lossy) == ["embed", "skip1", "skip2"]
    assert (c.roots[c.ids("fc1")] != stream[0]).all()  # the MLP features are their own group


def _run(nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info(k, oh.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()],
                      [oh.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
                      [nh.from_array(v, k) for k, v in inits.items()])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(outputs, inputs)


def test_masked_simulations_equal_the_pruned_fused_norms() -> None:
    """What the sensitivity model runs for each fused norm equals the op on the kept channels."""
    from onnxcompress.channels.rules.fused_norm import EmbedLayerNormRule, SkipLayerNormRule

    r = np.random.default_rng(0)
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    mask = {"m": keep.astype(np.float32).reshape(1, 1, H), "f": np.array([H / keep.sum()], np.float32)}
    p = {k: r.uniform(0.5, 1.5, H).astype(np.float32) for k in ("g", "b", "bias")}
    x, s = (r.standard_normal((2, T, H)).astype(np.float32) for _ in range(2))
    node = oh.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y", "", "", "sum"], domain="com.microsoft",
                        epsilon=1e-5)
    got = _run(SkipLayerNormRule().simulate(node, "m", "f", 2, 17, np.dtype(np.float32)), {"x": x, "s": s, **mask}, p, ["y", "sum"])
    want = _run([oh.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y", "", "", "sum"], domain="com.microsoft",
                              epsilon=1e-5)], {"x": x[..., keep], "s": s[..., keep]}, {k: v[keep] for k, v in p.items()}, ["y", "sum"])
    np.testing.assert_allclose(got[0][..., keep], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1][..., keep], want[1], rtol=1e-5, atol=1e-6)
    tables = {"w": r.standard_normal((VOCAB, H)), "pos": r.standard_normal((16, H)), "st": r.standard_normal((2, H)),
              "g": r.uniform(0.5, 1.5, H), "b": r.uniform(-1, 1, H)}
    tables = {k: v.astype(np.float32) for k, v in tables.items()}
    feeds = {"ids": r.integers(0, VOCAB, (2, T)).astype(np.int32), "seg": r.integers(0, 2, (2, T)).astype(np.int32)}
    ins = ["ids", "seg", "w", "pos", "st", "g", "b"]
    node = oh.make_node("EmbedLayerNormalization", ins, ["y", "mask_index"], domain="com.microsoft", epsilon=1e-5)
    got = _run(EmbedLayerNormRule().simulate(node, "m", "f", 2, 17, np.dtype(np.float32)), {**feeds, **mask}, tables, ["y"])
    pruned = {k: (v[:, keep] if v.ndim == 2 else v[keep]) for k, v in tables.items()}
    want = _run([node], feeds, pruned, ["y"])
    np.testing.assert_allclose(got[0][..., keep], want[0], rtol=1e-4, atol=1e-5)


def test_fused_stream_prunes_with_calibration(tmp_path) -> None:
    """--calib --target-macs: the stream is measured (each fused norm simulated over the kept
    channels), pruned across every table, MatMul and norm, and the written model runs."""
    import onnxcompress as oc

    n = Net(17)
    y = mini_bert(n)
    proto = n.proto([y], check=False)
    proto.graph.output[0].CopyFrom(oh.make_tensor_value_info(y, onnx.TensorProto.FLOAT, [1, T, 3]))
    onnx.save(proto, tmp_path / "m.onnx")
    r = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", ids=r.integers(0, VOCAB, (48, T)).astype(np.int32),
             seg=r.integers(0, 2, (48, T)).astype(np.int32))
    calib = str(tmp_path / "calib.npz")
    res = oc.compress(str(tmp_path / "m.onnx"), oc.CompressConfig(target_macs=0.6, calib=calib, round_to=1, simplify=False, force=True))
    groups = {tuple(g["filters"]): g for g in res.report.search["groups"]}
    stream = groups[("attn_out", "embed", "fc2")]
    assert "unmeasured" not in stream and len(stream["curve"]) == 5 and all(c["drift"] > 0.05 for c in stream["curve"])
    # at a ratio every group loses half, the stream too (calibration lets the lossy group go)
    res = oc.compress(str(tmp_path / "m.onnx"), oc.CompressConfig(ratio=0.5, calib=calib, round_to=1, simplify=False, force=True))
    path = res.save(tmp_path / "out.onnx")
    m = onnx.load(path)
    widths = {i.name: list(i.dims) for i in m.graph.initializer}
    embed = next(nd for nd in m.graph.node if nd.op_type == "EmbedLayerNormalization")
    kept = widths[embed.input[2]][1]
    assert kept == H // 2 and widths[embed.input[3]][1] == widths[embed.input[4]][1] == widths[embed.input[5]][0] == kept
    skips = [nd for nd in m.graph.node if nd.op_type == "SkipLayerNormalization"]
    assert [widths[nd.input[2]] for nd in skips] == [[kept], [kept]]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"ids": np.zeros((1, T), np.int32) + 3, "seg": np.zeros((1, T), np.int32)})[0]
    assert out.shape == (1, T, 3) and np.isfinite(out).all()


def test_random_ids_stay_inside_the_tables_embed_layernorm_reads() -> None:
    """Random feeds for token ids, segment ids (input 1) and position ids (input 8, past the mask
    at 7) stay below the rows of the table each indexes."""
    from onnxcompress.io import load_model
    from onnxcompress.runtime import model_index_bounds

    r = np.random.default_rng(0)
    tables = {"w": (VOCAB, H), "pos": (16, H), "st": (2, H), "g": (H,), "b": (H,)}
    inits = [nh.from_array(r.standard_normal(s).astype(np.float32), k) for k, s in tables.items()]
    ins = [oh.make_tensor_value_info(k, onnx.TensorProto.INT32, [1, T]) for k in ("ids", "seg", "mask", "pos_ids")]
    node = oh.make_node("EmbedLayerNormalization", ["ids", "seg", "w", "pos", "st", "g", "b", "mask", "pos_ids"],
                        ["y", "mask_index"], domain="com.microsoft")
    g = oh.make_graph([node], "g", ins, [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
    assert model_index_bounds(load_model(m)) == {"ids": VOCAB, "seg": 2, "pos_ids": 16}
