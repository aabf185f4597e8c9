"""Per-channel normalisations: BN's four statistics and InstanceNorm's scale/bias are param slots."""

from __future__ import annotations

import numpy as np

from onnxcompress.channels.rules._testing import Net

BIAS = np.array([-1.2, 0.3, 1.4, -0.6, 0.9, 2.3, -0.2, 0.7], np.float32)


#: the registered ops this file tests
COVERED = {"BatchNormalization", "InstanceNormalization", "LayerNormalization", "SimplifiedLayerNormalization",
           "RMSNormalization", "GroupNormalization"}


def check_batchnorm() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    r = n.rng
    stats = [r.uniform(0.5, 1.5, 8), r.standard_normal(8), r.standard_normal(8) * 0.3, r.uniform(0.5, 1.5, 8)]
    params = [n.const(p) for p in stats]
    n.conv(n.op("BatchNormalization", [a] + params, name="op", epsilon=1e-3), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(p, 0) for p in params]
    for _, _, ids in c.slots("op", "param"):
        np.testing.assert_array_equal(ids, c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    scale, beta, mean, var = stats
    want = scale * (BIAS - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(c.check_const({"c1": [0, 2, 5]}, "op"), want[[0, 2, 5]], rtol=1e-5)


def test_batchnorm() -> None:
    check_batchnorm()


def test_batchnorm_with_runtime_statistics_blocks() -> None:
    n = Net()
    x = n.input()
    a = n.conv(x, 3, 8, name="c1")
    m = n.op("Identity", [n.const(np.zeros(8))])  # not an initializer: computed at run time
    ones = n.const(np.ones(8))
    n.conv(n.op("BatchNormalization", [a, ones, n.const(np.zeros(8)), m, n.const(np.ones(8))], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    assert set(c.blocks_at("op")) == {("BatchNormalization", "BatchNormalization with run-time statistics")}


def check_instancenorm() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    scale, bias = n.const(np.linspace(0.5, 1.5, 8)), n.const(BIAS)
    n.conv(n.op("InstanceNormalization", [a, scale, bias], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(scale, 0), (bias, 0)]
    for _, _, ids in c.slots("op", "param"):
        np.testing.assert_array_equal(ids, c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    # a constant channel normalises to 0: the output is InstanceNorm's bias
    np.testing.assert_allclose(c.check_const({"c1": [1, 6]}, "op"), BIAS[[1, 6]], rtol=1e-5)


def test_instancenorm() -> None:
    check_instancenorm()


def check_groupnorm(opset: int = 21) -> None:
    """Four groups of two channels: a group is one element; removing one is exact (constants out)."""
    n = Net(opset)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    size = 8 if opset >= 21 else 4
    scale, bias = n.const(np.linspace(0.5, 1.5, size)), n.const(np.linspace(-1.0, 1.0, size))
    n.conv(n.op("GroupNormalization", [a, scale, bias], name="op", num_groups=4, epsilon=1e-3), 8, 4, name="c2")
    c = n.analyse(["c2"], check=False)  # onnx's strict shape inference types no GroupNormalization output
    ids = c.ids("c1")
    np.testing.assert_array_equal(c.ids("op"), ids)
    for g in range(4):
        assert c.same_atoms(ids[2 * g : 2 * g + 1], ids[2 * g + 1 : 2 * g + 2])
    assert not c.same_atoms(ids[1:2], ids[2:3])
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(scale, 0), (bias, 0)]
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    # the removed group (channels 2 and 3: conv biases -> constants) normalises to +-1 before scale and bias
    got = c.check_const({"c1": [2, 3]}, "op")
    assert got.shape == (2,) and abs(got[0] - got[1]) > 0.5


def test_groupnorm_opset_21_and_18() -> None:
    check_groupnorm(21)
    check_groupnorm(18)


def test_groupnorm_removes_whole_groups_exactly_and_rewrites_num_groups(tmp_path) -> None:
    import onnx

    from onnxcompress.channels.rules._testing import remove_and_zero

    # opset 18's GroupNormalization (one scale per group) is analysed above; onnx's checker rejects
    # it as deprecated, so no written model is checked end to end here
    for opset in (21,):
        n = Net(opset)
        a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
        size = 8 if opset >= 21 else 4
        gn = n.op("GroupNormalization", [a, n.const(np.linspace(0.5, 1.5, size)), n.const(np.linspace(-1, 1, size))],
                  name="op", num_groups=4)
        n.conv(n.op("Relu", [gn]), 8, 4, name="c2")
        feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)}
        d = tmp_path / str(opset)
        d.mkdir()
        model = n.proto(["c2"], check=False)  # onnx's strict shape inference types no GroupNormalization output
        model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("c2", onnx.TensorProto.FLOAT, [1, 4, 6, 6]))
        outs = remove_and_zero(model, d, feeds)
        np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
        m = onnx.load(d / "remove.onnx")
        node = next(x for x in m.graph.node if x.op_type == "GroupNormalization")
        assert next(a.i for a in node.attribute if a.name == "num_groups") == 2
        inits = {i.name: tuple(i.dims) for i in m.graph.initializer}
        assert inits[node.input[1]] == ((4,) if opset >= 21 else (2,))


def test_groupnorm_with_channels_not_dividing_into_groups_blocks() -> None:
    n = Net(21)
    a = n.conv(n.input(), 3, 6, name="c1")
    n.conv(n.op("GroupNormalization", [a, n.const(np.ones(6)), n.const(np.zeros(6))], name="op", num_groups=4),
           6, 4, name="c2")
    c = n.analyse(["c2"], check=False)
    assert c.blocks_at("op") == [("GroupNormalization", "GroupNormalization with 6 channels in 4 groups")]


def check_layernorm(op: str = "LayerNormalization", opset: int = 17, domain: str = "", bias: bool = True) -> None:
    """A norm over the channels of a channels-last tensor: lossy, so tracked only with calibration."""
    from onnxcompress.channels.rules.norm import LAYERNORM_LOSS

    n = Net(opset)
    if domain:
        n.extra_opsets[domain] = 1
    a = n.conv(n.input(), 3, 8, name="c1")
    t = n.op("Transpose", [a], perm=[0, 2, 3, 1])  # (1, 6, 6, 8): channels last
    scale = n.const(np.linspace(0.5, 1.5, 8))
    params = [scale] + ([n.const(BIAS)] if bias else [])
    y = n.op(op, [t, *params], name="op", axis=-1, domain=domain)
    m = n.op("MatMul", [y, n.const(n.rng.standard_normal((8, 4)))], name="mm")
    c = n.analyse([m], check=not domain)
    assert c.blocks_at("op") == [(op, f"{op}: {LAYERNORM_LOSS} (lossy: needs calibration data, --calib)")]
    assert c.analysis.fixed[c.out_ids("c1")].all()
    c = n.analyse([m], check=not domain, allow_lossy=True)
    assert c.blocks_at("op") == []
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(p, 0) for p in params]
    [rec] = c.analysis.lossy
    assert (rec.node, rec.op) == ("op", op)
    if not domain:  # onnx's shape inference does not size contrib ops, so the MatMul after one blocks here
        assert c.widths() == [("c1", 8, 4)]


def test_layernorm() -> None:
    check_layernorm()


def test_rmsnorm_ops() -> None:
    check_layernorm("RMSNormalization", opset=23, bias=False)
    check_layernorm("SimplifiedLayerNormalization", domain="com.microsoft", bias=False)


def test_layernorm_over_more_than_the_channel_axis_blocks() -> None:
    n = Net(17)
    a = n.conv(n.input(), 3, 8, name="c1")
    y = n.op("LayerNormalization", [a, n.const(np.ones((8, 6, 6)))], name="op", axis=1)
    c = n.analyse([n.conv(y, 8, 4, name="c2")], allow_lossy=True)
    [(op, reason)] = c.blocks_at("op")
    assert op == "LayerNormalization" and "more than the channel axis" in reason
    assert c.analysis.lossy == []


def test_decomposed_layernorm_is_lossy() -> None:
    """ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add over the channels (opset < 17 exports)."""
    n = Net(13)
    a = n.conv(n.input(), 3, 8, name="c1")
    t = n.op("Transpose", [a], perm=[0, 2, 3, 1])
    mean = n.op("ReduceMean", [t], name="mean", axes=[-1], keepdims=1)
    d = n.op("Sub", [t, mean])
    var = n.op("ReduceMean", [n.op("Pow", [d, n.const(2.0)])], name="var", axes=[-1], keepdims=1)
    y = n.op("Div", [d, n.op("Sqrt", [n.op("Add", [var, n.const(1e-5)])])])
    scale, bias = n.const(np.linspace(0.5, 1.5, 8)), n.const(BIAS)
    y = n.op("Add", [n.op("Mul", [y, scale], name="scale"), bias], name="shift")
    m = n.op("MatMul", [y, n.const(n.rng.standard_normal((8, 4)))], name="mm")
    c = n.analyse([m])
    assert {r for _, r in c.blocks_at("mean") + c.blocks_at("var")} == {
        "ReduceMean over the channel axis (a LayerNorm's statistics): the mean covers only the kept channels "
        "(lossy: needs calibration data, --calib)"}
    assert c.analysis.fixed[c.out_ids("c1")].all()
    c = n.analyse([m], allow_lossy=True)
    assert [r.node for r in c.analysis.lossy] == ["mean", "var"]
    assert not c.tracked("mean") and not c.tracked("var")
    np.testing.assert_array_equal(c.ids("shift"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("scale", "param") + c.slots("shift", "param")] == [(scale, 0), (bias, 0)]
    assert c.widths() == [("c1", 8, 4)]


def _simulated(rule, pnode, opset: int, x: np.ndarray, keep: np.ndarray, inits: dict) -> np.ndarray:
    import onnx
    import onnxruntime as ort
    from onnx import helper as oh, numpy_helper as nh

    nodes = rule.simulate(pnode, "m", "f", x.ndim - 1, opset, np.dtype(np.float32))
    g = oh.make_graph(nodes, "sim", [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("x", "m", "f")],
                      [oh.make_tensor_value_info(pnode.output[0], onnx.TensorProto.FLOAT, None)],
                      [nh.from_array(v, k) for k, v in inits.items()])
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 10
    feeds = {"x": x, "m": keep.astype(np.float32).reshape((1,) * (x.ndim - 1) + (-1,)),
             "f": np.array([keep.size / keep.sum()], np.float32)}
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_masked_simulations_normalise_over_the_kept_channels_only() -> None:
    """What the sensitivity model runs for a lossy norm equals the norm of the pruned tensor."""
    from onnx import helper as oh

    from onnxcompress.channels.rules.norm import LayerNormRule, RMSNormRule
    from onnxcompress.channels.rules.spatial import ReduceRule

    r = np.random.default_rng(0)
    x = r.standard_normal((2, 5, 8)).astype(np.float32) * 2 + 0.5
    scale, bias = r.uniform(0.5, 1.5, 8).astype(np.float32), BIAS
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    xk = x[..., keep]
    for opset in (17, 18):
        got = _simulated(LayerNormRule(), oh.make_node("LayerNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5),
                         opset, x, keep, {"s": scale, "b": bias})
        want = (xk - xk.mean(-1, keepdims=True)) / np.sqrt(xk.var(-1, keepdims=True) + 1e-5) * scale[keep] + bias[keep]
        np.testing.assert_allclose(got[..., keep], want, rtol=1e-5, atol=1e-5)
        got = _simulated(ReduceRule(), oh.make_node("ReduceMean", ["x"], ["y"], axes=[-1], keepdims=1),
                         opset, x, keep, {})
        np.testing.assert_allclose(got, xk.mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    got = _simulated(RMSNormRule(), oh.make_node("RMSNormalization", ["x", "s"], ["y"], epsilon=1e-5), 23, x, keep,
                     {"s": scale})
    np.testing.assert_allclose(got[..., keep], xk / np.sqrt((xk**2).mean(-1, keepdims=True) + 1e-5) * scale[keep],
                               rtol=1e-5, atol=1e-5)


def _torch_groupnorm(n: Net, a: str, target_back: str = "shape") -> str:
    """GroupNorm(4 groups) of an (1, 8, 6, 6) tensor as torch exports it before opset 21."""
    r = n.op("Reshape", [a, n.const(np.array([0, 4, -1]), np.int64)], name="split")
    inorm = n.op("InstanceNormalization", [r, n.const(np.ones(4)), n.const(np.zeros(4))], name="in", epsilon=1e-5)
    shape = n.op("Shape", [a]) if target_back == "shape" else n.const(np.array([1, 8, 6, 6]), np.int64)
    back = n.op("Reshape", [inorm, shape], name="back")
    gamma, beta = n.const(np.linspace(0.5, 1.5, 8).reshape(8, 1, 1)), n.const(np.linspace(-1, 1, 8).reshape(8, 1, 1))
    return n.op("Add", [n.op("Mul", [back, gamma], name="gamma"), beta], name="beta")


def test_groupnorm_as_torch_exports_it_before_opset_21_prunes_whole_groups() -> None:
    n = Net(17)
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    n.conv(_torch_groupnorm(n, a), 8, 4, name="c2")
    c = n.analyse(["c2"])
    ids = c.ids("c1")
    np.testing.assert_array_equal(c.ids("back"), ids)
    for g in range(4):
        assert c.same_atoms(ids[2 * g : 2 * g + 1], ids[2 * g + 1 : 2 * g + 2])
    assert not c.same_atoms(ids[1:2], ids[2:3])
    assert len(c.slots("in", "param")) == 2 and len(c.slots("gamma", "param")) == 1
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    # group 1 (channels 2, 3) removed: their constants normalise over the group, then gamma and beta
    got = c.check_const({"c1": [2, 3]}, "beta")
    assert got.shape == (2,) and abs(got[0] - got[1]) > 0.5


def test_torch_groupnorm_removal_is_exact_and_rewrites_the_targets(tmp_path) -> None:
    import onnx

    from onnxcompress.channels.rules._testing import remove_and_zero

    for back in ("shape", "const"):
        n = Net(17)
        a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
        n.conv(n.op("Relu", [_torch_groupnorm(n, a, back)]), 8, 4, name="c2")
        d = tmp_path / back
        d.mkdir()
        feeds = {"x": np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)}
        outs = remove_and_zero(n.proto(["c2"]), d, feeds)
        np.testing.assert_allclose(outs["remove"], outs["zero"], rtol=1e-4, atol=1e-5)
        m = onnx.load(d / "remove.onnx")
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        split = next(x for x in m.graph.node if x.op_type == "Reshape")
        assert inits[split.input[1]].tolist() == [0, 2, -1]
        norm = next(x for x in m.graph.node if x.op_type == "InstanceNormalization")
        assert inits[norm.input[1]].shape == (2,)
        if back == "const":
            back_node = [x for x in m.graph.node if x.op_type == "Reshape"][1]
            assert inits[back_node.input[1]].tolist() == [1, 4, 6, 6]


def test_groupnorm_split_read_by_anything_else_blocks() -> None:
    n = Net(17)
    a = n.conv(n.input(), 3, 8, name="c1")
    r = n.op("Reshape", [a, n.const(np.array([0, 4, -1]), np.int64)], name="split")
    n.conv(n.op("Reshape", [n.op("Relu", [r]), n.op("Shape", [a])]), 8, 4, name="c2")
    c = n.analyse(["c2"])
    assert c.blocks_at("split") == [("Reshape", "Reshape splits or merges channels in a way we do not track")]
    assert c.widths() == []
