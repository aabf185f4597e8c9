"""A LayerNorm whose statistics are written as ReduceSum times 1/C (jax2tf, as in magika's model)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcompress.channels.rules._testing import Net

C = 8
LOSSY = ("ReduceSum times 1/C over the channel axis (a LayerNorm's statistics, written out): "
         "the mean covers only the kept channels")
GAMMA = np.linspace(0.5, 1.5, C)
BETA = np.linspace(-1.0, 1.0, C)


def _jax_layernorm_net(scale: float = 1.0 / C, keepdims: int = 0, divide: bool = False, batch: int = 1,
                      const_right: bool = False):
    """Conv(3 -> 8), global max, flatten, then LayerNorm as jax2tf writes it, then MatMul(8 -> 4)."""
    n = Net(13)
    x = n.op("Flatten", [n.op("GlobalMaxPool", [n.conv(n.input((batch, 3, 6, 6)), 3, C, name="c1")])], name="flat")
    axes = n.const(np.array([1]), np.int64)

    def mean(t: str, name: str) -> str:
        s = n.op("ReduceSum", [t, axes], name=name, keepdims=keepdims)
        if divide:
            return n.op("Div", [s, n.const(np.float32(1.0 / scale))], name=f"{name}_mean")
        k = n.const(np.float32(scale))
        return n.op("Mul", [s, k] if const_right else [k, s], name=f"{name}_mean")

    def column(t: str) -> str:
        return t if keepdims else n.op("Unsqueeze", [t, n.const(np.array([1]), np.int64)])

    m = mean(x, "sum")
    var = n.op("Sub", [mean(n.op("Mul", [x, x]), "sumsq"), n.op("Mul", [m, m])])
    rstd = n.op("Reciprocal", [n.op("Sqrt", [n.op("Add", [n.op("Max", [n.const(np.float32(0)), var]),
                                                         n.const(np.float32(1e-6))])])])
    gamma, beta = n.const(GAMMA.reshape(1, C)), n.const(BETA.reshape(1, C))
    scaled = n.op("Mul", [column(rstd), gamma], name="scaled")
    y = n.op("Add", [n.op("Mul", [n.op("Sub", [x, column(m)], name="centred"), scaled], name="normed"), beta],
             name="shift")
    out = n.op("MatMul", [y, n.const(n.rng.standard_normal((C, 4)))], name="mm")
    return n, out, (gamma, beta)


@pytest.mark.parametrize(("keepdims", "divide", "const_right"), [(0, False, False), (1, False, False), (0, True, False),
                                                                 (0, False, True)])
def test_the_written_out_layernorm_is_lossy_with_its_scale_as_a_slot(keepdims, divide, const_right) -> None:
    n, out, (gamma, beta) = _jax_layernorm_net(keepdims=keepdims, divide=divide, const_right=const_right)
    c = n.analyse([out])
    assert {r for _, r in c.blocks_at("sum") + c.blocks_at("sumsq")} == {f"{LOSSY} (lossy: needs calibration data, --calib)"}
    assert c.analysis.fixed[c.out_ids("c1")].all()
    c = n.analyse([out], allow_lossy=True)
    assert [r.node for r in c.analysis.lossy] == ["sum", "sumsq"]
    c.assert_only_output_blocks()
    # the inverse deviation times gamma takes the stream's channels: gamma is a slot of that Mul
    np.testing.assert_array_equal(c.ids("scaled"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("scaled", "param")] == [(gamma, 1)]
    assert [(v, ax) for v, ax, _ in c.slots("shift", "param")] == [(beta, 1)]
    assert c.widths() == [("c1", C, 4)]


@pytest.mark.parametrize("scale", [0.5, 1.0 / (C - 1)])
def test_a_sum_not_scaled_to_a_mean_still_blocks(scale) -> None:
    n, out, _ = _jax_layernorm_net(scale=scale)
    c = n.analyse([out], allow_lossy=True)
    assert c.analysis.lossy == []
    assert ("ReduceSum", "ReduceSum over the channel axis") in c.blocks_at("sum")
    assert c.analysis.fixed[c.out_ids("c1")].all()


@pytest.mark.parametrize("read_by", ["graph output", "another node"])
def test_a_sum_read_by_anything_else_too_still_blocks(read_by) -> None:
    n = Net(13)
    x = n.op("Flatten", [n.op("GlobalMaxPool", [n.conv(n.input(), 3, C, name="c1")])])
    s = n.op("ReduceSum", [x, n.const(np.array([1]), np.int64)], name="sum", keepdims=1)
    m = n.op("Mul", [s, n.const(np.float32(1.0 / C))])
    out = n.op("MatMul", [n.op("Sub", [x, m]), n.const(n.rng.standard_normal((C, 4)))])
    extra = s if read_by == "graph output" else n.op("Relu", [s])
    c = n.analyse([out, extra], allow_lossy=True)
    assert c.analysis.lossy == [] and c.analysis.fixed[c.out_ids("c1")].all()
    assert ("ReduceSum", "ReduceSum over the channel axis") in c.blocks_at("sum")


def test_a_float16_constant_is_read_to_its_own_precision() -> None:
    """1/768 stored as float16 is 2.4e-4 off: still the mean's constant; 1/767 is not."""
    import onnx_ir as ir
    from onnx import helper as oh, numpy_helper as nh

    from onnxcompress.channels.rules.written_mean import mean_scale

    class Consts:
        def __init__(self, model: ir.Model) -> None:
            self.values = {v.name: v.const_value.numpy() for v in model.graph.initializers.values()
                           if v.const_value is not None}

        def const(self, v: ir.Value | None) -> np.ndarray | None:
            return self.values.get(v.name or "") if v is not None else None

        def shape(self, v: ir.Value | None) -> tuple[int, ...] | None:
            return None

    for c, want in ((768, True), (767, False)):
        g = oh.make_graph([oh.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
                           oh.make_node("Mul", ["s", "k"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 768])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1])],
                          [nh.from_array(np.array([1], np.int64), "axes"), nh.from_array(np.array(1 / c, np.float16), "k")])
        model = ir.serde.deserialize_model(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
        node = next(iter(model.graph))
        assert abs(float(np.float16(1 / 768)) * 768 - 1) > 1e-4
        assert (mean_scale(node, Consts(model), 768) is not None) is want


def test_a_runtime_tensor_made_any_other_way_still_blocks() -> None:
    """Per-channel values behind a Relu are not a product of constants alone: the channels stay."""
    n = Net(13)
    x = n.op("Flatten", [n.op("GlobalMaxPool", [n.conv(n.input(), 3, C, name="c1")])])
    row = n.op("ReduceMax", [n.input((1, 5), name="z")], axes=[1], keepdims=1)
    gate = n.op("Relu", [n.op("Mul", [row, n.const(np.ones((1, C)))])], name="relu")
    out = n.op("Mul", [x, gate], name="gate")
    c = n.analyse([out])
    assert ("Mul", "Mul with a tensor whose channels are not tracked (relu)") in c.blocks_at("gate")
    assert c.analysis.fixed[c.out_ids("c1")].all()


def _forward_reference(w: np.ndarray, b: np.ndarray, keep: np.ndarray, mm: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The model's function with the LayerNorm over the kept channels only, in float64."""
    z = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]
    t = z.max(axis=(2, 3))[:, keep]
    mu, var = t.mean(1, keepdims=True), np.maximum((t * t).mean(1, keepdims=True) - t.mean(1, keepdims=True) ** 2, 0)
    y = (t - mu) / np.sqrt(var + 1e-6) * GAMMA[keep] + BETA[keep]
    return y @ mm[keep]


@pytest.mark.parametrize(("keepdims", "divide"), [(0, False), (1, False), (0, True)])
def test_removal_normalises_over_the_kept_channels_and_rewrites_the_constant(tmp_path, keepdims, divide) -> None:
    from onnx import numpy_helper as nh

    from onnxcompress.cli import main

    n, out, _ = _jax_layernorm_net(keepdims=keepdims, divide=divide)
    model = n.proto([out])
    del model.graph.value_info[:]
    for v in (model.graph.input[0], model.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    src, dst, rep = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(model, src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((64, 3, 6, 6)).astype(np.float32))
    assert main([str(src), "--calib", str(calib), "--ratio", "0.5", "--round-to", "1", "--recover", "none",
                 "-o", str(dst), "--report", str(rep), "-q", "--force"]) == 0
    report = json.loads(rep.read_text())
    assert [x["op"] for x in report["exactness"]["lossy"]] == ["ReduceSum", "ReduceSum"]

    orig = {i.name: nh.to_array(i) for i in model.graph.initializer}
    pruned = onnx.load(dst)
    conv = next(x for x in pruned.graph.node if x.op_type == "Conv")
    inits = {i.name: nh.to_array(i) for i in pruned.graph.initializer}
    w_full, b_full = orig[n.nodes[0].input[1]], orig[n.nodes[0].input[2]]
    w_kept = inits[conv.input[1]]
    assert w_kept.shape[0] == C // 2
    keep = np.array([any(np.array_equal(w_full[i], k) for k in w_kept) for i in range(C)])
    assert keep.sum() == C // 2
    scales = [float(inits[x.input[1 - list(x.input).index(s)]].ravel()[0])
              for s in ("sum", "sumsq") for x in pruned.graph.node if s in x.input and x.op_type in ("Mul", "Div")]
    assert scales == ([C // 2] * 2 if divide else [pytest.approx(1 / (C // 2))] * 2)

    x = np.random.default_rng(3).standard_normal((5, 3, 6, 6)).astype(np.float32)
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    mm = next(orig[i] for i in orig if orig[i].shape == (C, 4))
    want = _forward_reference(w_full.astype(np.float64), b_full.astype(np.float64), keep, mm.astype(np.float64),
                              x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_masked_simulation_of_a_written_out_mean_is_the_kept_mean() -> None:
    from onnx import helper as oh

    from onnxcompress.channels.rules.spatial import ReduceRule
    from onnxcompress.channels.rules.norm_test import _simulated

    r = np.random.default_rng(0)
    x = r.standard_normal((2, 5, C)).astype(np.float32)
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    for keepdims in (0, 1):
        pnode = oh.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=keepdims)
        got = _simulated(ReduceRule(), pnode, 13, x, keep, {"axes": np.array([-1], np.int64)})
        # times the consumer's 1/C: the mean of the kept channels
        np.testing.assert_allclose(got / C, x[..., keep].mean(-1, keepdims=bool(keepdims)), rtol=1e-5, atol=1e-6)
