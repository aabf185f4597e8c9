"""Per-op-rule tests: each graph is pruned in zero and remove mode and compared in onnxruntime.

Remove must equal zero (rtol 1e-4) where exactness is promised, the removed model must be
smaller, and the pruned widths must be the ones planned.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxcompress as oc
from tests.graphs import G


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def prune(model, mode, ratio=0.5, **kw):
    cfg = oc.CompressConfig(ratio=ratio, mode=mode, round_to=kw.pop("round_to", 1), fold=False, simplify=False, **kw)
    res = oc.compress(model, cfg)
    import onnx_ir as ir

    return ir.to_proto(res.model), res.report


def residual():
    g = G(1)
    x = g.input()
    a = g.cbr(x, 3, 16)
    b = g.cbr(a, 16, 16)
    c = g.bn(g.conv(b, 16, 16), 16)
    s = g.op("Relu", [g.op("Add", [a, c])])
    return g.model([g.gemm_head(s, 16)]), 16


def residual_sum_opset8_ir3():
    g = G(2, opset=8)
    x = g.input()
    a = g.op("Relu", [g.bn(g.conv(x, 3, 16), 16, spatial=1)])
    c = g.bn(g.conv(g.op("Relu", [g.bn(g.conv(a, 16, 16), 16, spatial=1)]), 16, 16), 16, spatial=1)
    s = g.op("Relu", [g.op("Sum", [a, c])])
    p = g.op("GlobalAveragePool", [s])
    r = g.op("Reshape", [p, g.const(np.array([0, 16]), "shape", np.int64)])
    w = g.const(g.rng.standard_normal((10, 16)), "fc")
    return g.model([g.op("Gemm", [r, w, g.const(np.ones(10), "fcb")], transB=1)], ir_version=3), 16


def depthwise_se_hardswish():
    g = G(3)
    x = g.input()
    a = g.cbr(x, 3, 16, act="HardSwish")
    d = g.cbr(a, 16, 16, group=16, act="HardSwish")
    # SE: squeeze, reduce, expand, gate
    sq = g.op("ReduceMean", [d], axes=[2, 3], keepdims=1)
    e1 = g.op("Relu", [g.conv(sq, 16, 8, k=1)])
    e2 = g.op("HardSigmoid", [g.conv(e1, 8, 16, k=1)])
    gated = g.op("Mul", [d, e2])
    p = g.cbr(gated, 16, 24, k=1, act=None)
    return g.model([g.gemm_head(p, 24)]), 16


def concat_branches():
    g = G(4)
    x = g.input()
    a = g.cbr(x, 3, 16)
    b1 = g.cbr(a, 16, 8, k=1)
    b2 = g.cbr(a, 16, 16, k=3)
    b3 = g.cbr(g.op("MaxPool", [a], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]), 16, 8, k=1)
    cat = g.op("Concat", [b1, b2, b3], axis=1)
    return g.model([g.gemm_head(g.cbr(cat, 32, 16, k=1), 16)]), 32


def split_c2f_silu():
    g = G(5)
    x = g.input()

    def silu(t):
        return g.op("Mul", [t, g.op("Sigmoid", [t])])

    a = silu(g.bn(g.conv(x, 3, 32, k=1), 32))
    s1, s2 = g.op("Split", [a, g.const(np.array([16, 16]), "split", np.int64)], n_out=2, axis=1)
    m = silu(g.bn(g.conv(s2, 16, 16), 16))
    cat = g.op("Concat", [s1, s2, m], axis=1)
    out = silu(g.bn(g.conv(cat, 48, 32, k=1), 32))
    return g.model([g.gemm_head(out, 32)]), 32


def slice_channels():
    g = G(6)
    x = g.input()
    a = g.cbr(x, 3, 32)
    lo = g.op("Slice", [a, g.const([0], "s", np.int64), g.const([16], "e", np.int64), g.const([1], "ax", np.int64)])
    hi = g.op("Slice", [a, g.const([16], "s", np.int64), g.const([32], "e", np.int64), g.const([1], "ax", np.int64)])
    y = g.op("Add", [g.cbr(lo, 16, 16), g.cbr(hi, 16, 16)])
    return g.model([g.gemm_head(y, 16)]), 32


def flatten_into_gemm():
    g = G(7)
    x = g.input(shape=("N", 3, 8, 8))
    a = g.cbr(x, 3, 16, stride=2)
    f = g.op("Flatten", [a], axis=1)
    w = g.const(g.rng.standard_normal((10, 16 * 16)) * 0.1, "fc")
    return g.model([g.op("Gemm", [f, w, g.const(np.ones(10), "b")], transB=1)]), 16


def reshape_into_matmul():
    g = G(8)
    x = g.input(shape=(1, 3, 8, 8))
    a = g.cbr(x, 3, 16, stride=2)
    r = g.op("Reshape", [a, g.const(np.array([1, 16 * 16]), "shape", np.int64)])
    w = g.const(g.rng.standard_normal((16 * 16, 10)) * 0.1, "fc")
    return g.model([g.op("MatMul", [r, w])]), 16


def grouped_conv():
    g = G(9)
    x = g.input()
    a = g.cbr(x, 3, 16)
    b = g.cbr(a, 16, 32, group=4)
    return g.model([g.gemm_head(g.cbr(b, 32, 16, k=1), 16)]), 16


def prelu_leaky_clip_per_channel_mul():
    g = G(10)
    x = g.input()
    a = g.conv(x, 3, 16)
    a = g.op("PRelu", [a, g.const(g.rng.uniform(0.1, 0.3, (16, 1, 1)), "slope")])
    a = g.op("Mul", [a, g.const(g.rng.uniform(0.5, 2, (1, 16, 1, 1)), "scale")])
    a = g.op("Add", [a, g.const(g.rng.standard_normal((16, 1, 1)), "shift")])
    a = g.op("Clip", [g.op("LeakyRelu", [a], alpha=0.1), g.const(-1.0, "lo"), g.const(4.0, "hi")])
    a = g.op("Div", [a, g.const(2.0, "d")])
    b = g.cbr(g.op("Sigmoid", [g.op("Tanh", [a])]), 16, 16)
    return g.model([g.gemm_head(b, 16)]), 16


def convtranspose_decoder():
    g = G(11)
    x = g.input()
    a = g.cbr(x, 3, 16, stride=2)
    w = g.const(g.rng.standard_normal((16, 8, 2, 2)) * 0.3, "wt")
    up = g.op("ConvTranspose", [a, w, g.const(g.rng.standard_normal(8), "bt")], strides=[2, 2], kernel_shape=[2, 2])
    y = g.conv(g.op("Relu", [g.bn(up, 8)]), 8, 4, k=1)
    return g.model([y]), 16


def instnorm_resize_pad():
    g = G(12)
    x = g.input()
    a = g.conv(x, 3, 16)
    s = g.const(g.rng.uniform(0.5, 1.5, 16), "s")
    b = g.const(g.rng.standard_normal(16), "b")
    a = g.op("Relu", [g.op("InstanceNormalization", [a, s, b])])
    up = g.op("Resize", [a, "", g.const([1, 1, 2, 2], "scales")], mode="nearest")
    p = g.op("Pad", [up, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads", np.int64)], mode="reflect")
    y = g.conv(p, 16, 8, k=3, pad=0)
    return g.model([g.gemm_head(y, 8)]), 16


def mlp_head():
    g = G(13)
    x = g.input()
    a = g.cbr(x, 3, 16, stride=2)
    f = g.op("Flatten", [g.op("GlobalAveragePool", [a])], axis=1)
    h = g.op("Relu", [g.op("Gemm", [f, g.const(g.rng.standard_normal((32, 16)) * 0.3, "w1"), g.const(g.rng.standard_normal(32), "b1")], transB=1)])
    y = g.op("Gemm", [h, g.const(g.rng.standard_normal((32, 10)) * 0.3, "w2"), g.const(g.rng.standard_normal((1, 10)), "b2")])
    return g.model([y]), 16


def channels_last_matmul():
    g = G(14)
    x = g.input()
    a = g.cbr(x, 3, 16)
    t = g.op("Transpose", [a], perm=[0, 2, 3, 1])
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [t, g.const(g.rng.standard_normal((16, 32)) * 0.3, "w1")]), g.const(g.rng.standard_normal(32), "b1")])])
    o = g.op("MatMul", [h, g.const(g.rng.standard_normal((32, 16)) * 0.3, "w2")])
    back = g.op("Transpose", [o], perm=[0, 3, 1, 2])
    return g.model([g.gemm_head(g.op("Add", [a, back]), 16)]), 16


def resize_sizes_and_split_attr_opset11():
    g = G(15, opset=11)
    x = g.input(shape=(1, 3, 16, 16))
    a = g.cbr(x, 3, 16)
    up = g.op("Resize", [a, g.const([], "roi"), g.const([], "scales"), g.const(np.array([1, 16, 32, 32]), "sizes", np.int64)], mode="nearest")
    s1, s2 = g.op("Split", [up], n_out=2, axis=1, split=[8, 8])
    y = g.op("Add", [g.cbr(s1, 8, 8), g.cbr(s2, 8, 8)])
    return g.model([g.gemm_head(y, 8)]), 16


def keras_style_se_with_dense():
    g = G(16)
    x = g.input()
    a = g.cbr(x, 3, 16)
    f = g.op("Flatten", [g.op("GlobalAveragePool", [a])], axis=1)
    h = g.op("Relu", [g.op("Gemm", [f, g.const(g.rng.standard_normal((8, 16)) * 0.3, "w1"), g.const(g.rng.standard_normal(8), "b1")], transB=1)])
    gate = g.op("Sigmoid", [g.op("Gemm", [h, g.const(g.rng.standard_normal((16, 8)) * 0.3, "w2"), g.const(g.rng.standard_normal(16), "b2")], transB=1)])
    r = g.op("Reshape", [gate, g.const(np.array([-1, 16, 1, 1]), "shape", np.int64)])
    y = g.cbr(g.op("Mul", [a, r]), 16, 16, k=1)
    return g.model([g.gemm_head(y, 16)]), 16


CASES = {
    "keras_style_se_with_dense": keras_style_se_with_dense,
    "resize_sizes_split_attr_opset11": resize_sizes_and_split_attr_opset11,
    "mlp_head_gemm": mlp_head,
    "channels_last_matmul": channels_last_matmul,
    "residual_add": residual,
    "residual_sum_opset8_ir3": residual_sum_opset8_ir3,
    "depthwise_se_hardswish": depthwise_se_hardswish,
    "concat_branches": concat_branches,
    "split_c2f_silu": split_c2f_silu,
    "slice_channels": slice_channels,
    "flatten_into_gemm": flatten_into_gemm,
    "reshape_into_matmul": reshape_into_matmul,
    "grouped_conv": grouped_conv,
    "prelu_per_channel_consts": prelu_leaky_clip_per_channel_mul,
    "convtranspose_decoder": convtranspose_decoder,
    "instnorm_resize_pad": instnorm_resize_pad,
}


def _input(model):
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


@pytest.mark.parametrize("zero_bias", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_remove_matches_zero_exactly_with_border_correction(case, zero_bias):
    """With --exact-borders, remove mode equals zero mode for every rule, borders included."""
    model, _ = CASES[case]()
    x = _input(model)
    zero, _ = prune(model, "zero", zero_bias=zero_bias)
    removed, rep = prune(model, "remove", zero_bias=zero_bias, exact_borders=True)
    assert rep.after.macs < rep.before.macs
    assert rep.exactness["exact"], rep.exactness["notes"]
    for a, b in zip(run(zero, x), run(removed, x)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("case", sorted(CASES))
def test_remove_matches_zero(case):
    model, _ = CASES[case]()
    x = _input(model)
    zero, zrep = prune(model, "zero")
    removed, rrep = prune(model, "remove")
    assert rrep.groups["pruned"] >= 1
    assert rrep.after.params < rrep.before.params
    assert rrep.after.macs < rrep.before.macs
    assert zrep.after.params == zrep.before.params
    # Every pruned layer lost about half its channels.
    shrunk = [l for l in rrep.layers if l.after < l.before]
    assert shrunk and all(l.after >= 1 for l in rrep.layers)
    z, r = run(zero, x), run(removed, x)
    for a, b in zip(z, r):
        assert a.shape == b.shape
        if rrep.exactness["exact"]:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


def test_padding_consumer_is_reported_inexact():
    model, _ = residual()
    _, rep = prune(model, "remove")
    # conv consumers pad their input, so folding a nonzero constant is reported
    assert not rep.exactness["exact"]
    assert any("pads its input" in n for n in rep.exactness["notes"])
