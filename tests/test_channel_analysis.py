"""Channel analysis on small graphs: what couples, what blocks, and why."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import onnxcompress as oc
from onnxcompress.analysis.shapes import infer_static_shapes, resolve_input_shapes
from onnxcompress.channels.analysis import analyse_channels
from onnxcompress.channels.rules import get_rule, registered_ops
from tests.graphs import G


def analyse(model: onnx.ModelProto, **kw):
    m = ir.serde.deserialize_model(model)
    shapes = infer_static_shapes(m, resolve_input_shapes(m))
    return m, analyse_channels(m, shapes, **kw)


def prune_report(model, **kw):
    cfg = oc.CompressConfig(ratio=0.5, round_to=1, fold=False, simplify=False, **kw)
    return oc.compress(model, cfg).report


def _blocked_by(op_type, build):
    g = G(0)
    x = g.input()
    a = g.cbr(x, 3, 16)
    y = build(g, a)
    rep = prune_report(g.model([g.gemm_head(g.cbr(y, 16, 8), 8)]))
    reasons = [b for b in rep.blockers if b.op == op_type]
    return rep, reasons


@pytest.mark.parametrize(
    "op_type,build,needle",
    [
        ("LRN", lambda g, a: g.op("LRN", [a], size=3), "neighbouring channels"),
        ("Softmax", lambda g, a: g.op("Softmax", [a], axis=1), "channel axis"),
        ("LayerNormalization", lambda g, a: g.op("LayerNormalization", [a, g.const(np.ones((16, 16, 16)), "ln")], axis=1), "normalises"),
        ("DepthToSpace", lambda g, a: g.op("Conv", [g.op("DepthToSpace", [a], blocksize=2), g.const(np.ones((16, 4, 1, 1)), "w")], strides=[2, 2]), "into space"),
    ],
)
def test_blockers_keep_channels_and_say_why(op_type, build, needle):
    rep, reasons = _blocked_by(op_type, build)
    assert reasons and needle in reasons[0].reason
    first = rep.layers[0]
    assert first.after == first.before  # the conv feeding the blocker kept every filter
    assert rep.groups["blocked"] >= 1


def test_custom_domain_blocks():
    g = G(0)
    x = g.input()
    a = g.cbr(x, 3, 16)
    g.nodes.append(helper.make_node("MyOp", [a], ["custom_out"], domain="com.example", name="custom"))
    # a custom op cannot be shape-inferred; check the analysis directly
    m = ir.serde.deserialize_model(
        helper.make_model(
            helper.make_graph(g.nodes, "t", g.inputs, [helper.make_tensor_value_info("custom_out", 1, None)], g.inits),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        )
    )
    shapes = infer_static_shapes(m, resolve_input_shapes(m))
    res = analyse_channels(m, shapes)
    assert any("custom domain" in b.reason for b in res.blocks)


def test_graph_output_channels_stay_unless_asked():
    g = G(0)
    x = g.input()
    y = g.cbr(x, 3, 16)
    model = g.model([y])
    rep = prune_report(model)
    assert rep.groups["pruned"] == 0 and any("graph output" in b.reason for b in rep.blockers)
    rep2 = prune_report(model, prune_outputs=True)
    assert rep2.layers[0].after == 8


def test_residual_couples_both_sides_into_one_group():
    g = G(0)
    x = g.input()
    a = g.cbr(x, 3, 16)
    b = g.bn(g.conv(g.cbr(a, 16, 16), 16, 16), 16)
    s = g.op("Add", [a, b])
    _, res = analyse(g.model([g.gemm_head(s, 16)]))
    roots = res.uf.all_roots()
    conv_out = [s_ for s_ in res.slots if s_.role == "out" and s_.node.op_type == "Conv"]
    first, last = conv_out[0], conv_out[-1]
    assert np.array_equal(roots[first.ids], roots[last.ids])  # a and b: same atoms
    assert not np.array_equal(roots[conv_out[1].ids], roots[first.ids])  # the inner conv is free


def test_grouped_conv_ties_the_kth_channel_of_every_group():
    g = G(0)
    x = g.input()
    a = g.cbr(x, 3, 16)
    b = g.conv(a, 16, 32, group=4)
    _, res = analyse(g.model([g.gemm_head(b, 32)]))
    roots = res.uf.all_roots()
    out = [s for s in res.slots if s.role == "out" and s.node.name.startswith("conv") and s.ids.size == 32][0]
    r = roots[out.ids].reshape(4, 8)
    assert (r == r[0]).all()  # the same atom in each group
    inp = roots[[s for s in res.slots if s.role == "out"][0].ids].reshape(4, 4)
    assert (inp == inp[0]).all()


def test_depthwise_multiplier_maps_output_to_input():
    g = G(0)
    x = g.input()
    a = g.cbr(x, 3, 8)
    d = g.conv(a, 8, 16, group=8)  # multiplier 2
    _, res = analyse(g.model([g.gemm_head(g.cbr(d, 16, 8), 8)]))
    roots = res.uf.all_roots()
    src = [s for s in res.slots if s.role == "out"][0]
    dw = [s for s in res.slots if s.role == "out"][1]
    assert np.array_equal(roots[dw.ids], np.repeat(roots[src.ids], 2))


def test_registry_has_one_rule_per_op_and_covers_the_issue_list():
    ops = registered_ops()
    required = [
        "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "Relu", "LeakyRelu", "Clip",
        "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Gelu", "Mish", "Erf", "PRelu",
        "Mul", "Add", "Sub", "Div", "Sum", "Max", "Concat", "Split", "Slice", "MaxPool", "AveragePool",
        "GlobalAveragePool", "LpPool", "Resize", "Upsample", "Pad", "ReduceMean", "Flatten", "Reshape", "Gemm",
        "MatMul", "Identity", "Dropout", "Cast", "Transpose",
    ]
    assert not [op for op in required if op not in ops]
    assert get_rule("Relu") is get_rule("Sigmoid")  # one rule object per family


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                                 "Softplus", "Mish", "Erf", "Gelu", "Softsign", "Celu", "ThresholdedRelu"])
def test_every_activation_folds_its_constant_exactly(act):
    opset = 20  # Mish needs 18, Gelu 20
    g = G(3, opset=opset)
    x = g.input()
    a = g.op(act, [g.conv(x, 3, 16)])
    y = g.conv(a, 16, 8, k=1)  # an unpadded consumer: exact
    model = g.model([g.gemm_head(y, 8)])
    import onnxruntime as ort

    outs = {}
    for mode in ("zero", "remove"):
        res = oc.compress(model, oc.CompressConfig(ratio=0.5, round_to=1, mode=mode, fold=False, simplify=False))
        if mode == "remove":
            assert res.report.exactness["exact"], res.report.exactness
        sess = ort.InferenceSession(ir.to_proto(res.model).SerializeToString(), providers=["CPUExecutionProvider"])
        outs[mode] = sess.run(None, {"x": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)})[0]
    np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-4)
