"""Guarded onnxsim: symbolic dims survive, and every failure keeps the unsimplified graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import onnxsim
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.passes import simplify as simplify_mod
from onnxcompress.passes.simplify import SimplifyPass

MODELS = Path(__file__).resolve().parents[2] / "models"
F = onnx.TensorProto.FLOAT
rng = np.random.default_rng(3)


def _dynamic_model() -> onnx.ModelProto:
    """Conv -> Identity -> Flatten-by-Reshape with shape computed from Shape(x): N, H, W symbolic."""
    c = lambda name, arr: h.make_node("Constant", [], [name], value=nh.from_array(np.array(arr, np.int64)))  # noqa: E731
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        h.make_node("Identity", ["c"], ["i"]),
        h.make_node("Relu", ["i"], ["r"]),
        h.make_node("Shape", ["r"], ["s"]),
        c("st", [0]),
        c("en", [1]),
        h.make_node("Slice", ["s", "st", "en"], ["n"]),
        c("m1", [-1]),
        h.make_node("Concat", ["n", "m1"], ["shp"], axis=0),
        h.make_node("Reshape", ["r", "shp"], ["flat"]),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", F, ["batch", 3, "height", "width"])],
        [h.make_tensor_value_info("r", F, ["batch", 8, "height", "width"]), h.make_tensor_value_info("flat", F, ["batch", "d"])],
        initializer=[nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _dims(values) -> list[list[str]]:
    return [[str(d) for d in v.shape] for v in values]


def _run(model: ir.Model, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_symbolic_dims_survive_and_outputs_match():
    model = ir.serde.deserialize_model(_dynamic_model())
    dims_in, dims_out = _dims(model.graph.inputs), _dims(model.graph.outputs)
    x = rng.standard_normal((3, 3, 10, 7)).astype(np.float32)
    ref = _run(model, x)
    p = SimplifyPass({"x": (1, 3, 16, 16)})
    assert p(model).modified
    assert p.report["status"] == "simplified", p.report
    assert p.report["nodes_after"] < p.report["nodes_before"]
    assert _dims(model.graph.inputs) == dims_in == [["batch", "3", "height", "width"]]
    assert _dims(model.graph.outputs) == dims_out
    assert p.report["checked_shapes"] == [{"x": [1, 3, 16, 16]}, {"x": [2, 3, 32, 32]}]
    assert not any(k.startswith("onnxsim.") for k in model.metadata_props)
    for a, b in zip(ref, _run(model, x)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_onnxsim_exception_keeps_graph(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("onnxsim crashed\nwith a long trace")

    monkeypatch.setattr(onnxsim, "simplify", boom)
    model = ir.serde.deserialize_model(_dynamic_model())
    graph, n = model.graph, len(model.graph)
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    assert not p(model).modified
    assert model.graph is graph and len(model.graph) == n
    assert p.report["status"] == "failed" and p.report["reason"] == "onnxsim crashed"
    assert p.warnings and "kept the unsimplified graph" in p.warnings[0]


def test_failure_reason_keeps_the_line_after_a_colon(monkeypatch, caplog):
    """The checker's message names its node on the second line; the reason keeps it, and the
    failure is logged below warning level (the summary already prints the report's warning)."""
    def boom(*args, **kwargs):
        raise RuntimeError("Nodes in a graph must be topologically sorted, however input 'a' of node:\n"
                           "name: Squeeze_0 OpType: Squeeze\n\nmore")

    monkeypatch.setattr(onnxsim, "simplify", boom)
    model = ir.serde.deserialize_model(_dynamic_model())
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    with caplog.at_level("INFO", logger="onnxcompress"):
        assert not p(model).modified
    assert p.report["reason"] == ("Nodes in a graph must be topologically sorted, however input 'a' of node: "
                                  "name: Squeeze_0 OpType: Squeeze")
    assert [r.levelname for r in caplog.records if "simplify failed" in r.getMessage()] == ["INFO"]


def test_failed_onnxsim_check_keeps_graph(monkeypatch):
    monkeypatch.setattr(onnxsim, "simplify", lambda m, **kw: (m, False))
    model = ir.serde.deserialize_model(_dynamic_model())
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    assert not p(model).modified
    assert "failed check" in p.report["reason"]


def test_frozen_dims_are_restored(monkeypatch):
    """onnxsim pins the interface to the test shape; the pass puts the symbols back."""
    real = onnxsim.simplify

    def freezing(m, **kw):
        out, ok = real(m, **kw)
        for vi in list(out.graph.input) + list(out.graph.output):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.dim_value = 4
        return out, ok

    monkeypatch.setattr(onnxsim, "simplify", freezing)
    model = ir.serde.deserialize_model(_dynamic_model())
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    p(model)
    assert p.report["status"] == "simplified"
    assert len(p.report["dims_restored"]) == 3
    assert _dims(model.graph.inputs) == [["batch", "3", "height", "width"]]
    assert _dims(model.graph.outputs) == [["batch", "8", "height", "width"], ["batch", "d"]]


def test_frozen_shape_computation_keeps_graph(monkeypatch):
    """A result that only works at the test shape (a baked Reshape target) is rejected."""

    def baked(m, **kw):
        out = onnx.ModelProto()
        out.CopyFrom(m)
        nodes = [n for n in out.graph.node if n.op_type in ("Conv", "Relu", "Identity")]
        nodes.append(h.make_node("Reshape", ["r", "fixed"], ["flat"]))
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        out.graph.initializer.append(nh.from_array(np.array([1, 8 * 8 * 8], np.int64), "fixed"))
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", baked)
    model = ir.serde.deserialize_model(_dynamic_model())
    n = len(model.graph)
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    assert not p(model).modified
    assert len(model.graph) == n
    assert p.report["status"] == "failed"
    assert "[2, 3, 16, 16]" in p.report["reason"] or "(2, 3, 16, 16)" in p.report["reason"]


def test_custom_domain_is_skipped():
    m = _dynamic_model()
    m.graph.node.append(h.make_node("Foo", ["flat"], ["foo"], domain="com.example"))
    m.graph.output.append(h.make_tensor_value_info("foo", F, None))
    m.opset_import.append(h.make_opsetid("com.example", 1))
    model = ir.serde.deserialize_model(m)
    p = SimplifyPass({"x": (1, 3, 8, 8)})
    assert not p(model).modified
    assert p.report["status"] == "skipped" and "com.example" in p.report["reason"]
    assert p.warnings


def _weighted_model(bn: bool) -> ir.Model:
    """Conv with a 9,216-element weight (declared to onnxsim, not carried) -> [BN] -> Relu -> Identity."""
    c = 32
    inits = [nh.from_array(rng.standard_normal((c, 32, 3, 3)).astype(np.float32), "w")]
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    last = "c"
    if bn:
        for name, arr in (("g", rng.uniform(0.5, 1, c)), ("b", rng.standard_normal(c)), ("m", rng.standard_normal(c)),
                          ("v", rng.uniform(0.5, 1.5, c))):
            inits.append(nh.from_array(arr.astype(np.float32), name))
        nodes.append(h.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]))
        last = "bn"
    nodes += [h.make_node("Relu", [last], ["r"]), h.make_node("Identity", ["r"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", F, ["batch", 32, 8, 8])],
                     [h.make_tensor_value_info("y", F, ["batch", c, 8, 8])], initializer=inits)
    return ir.serde.deserialize_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def test_over_two_gigabytes_is_skipped_when_onnxsim_needs_the_weights(monkeypatch):
    monkeypatch.setattr(simplify_mod, "tensor_bytes", lambda model: 3_000_000_000)
    model = _weighted_model(bn=True)
    p = SimplifyPass({"x": (1, 32, 8, 8)})
    assert not p(model).modified
    assert p.report["reason"].startswith("model over 2 GB, and onnxsim would need its weights (BatchNormalization")


def test_weights_are_declared_not_carried(monkeypatch):
    """onnxsim gets the graph without its weight (even past 2 GB); the result holds the very same tensor."""
    monkeypatch.setattr(simplify_mod, "tensor_bytes", lambda model: 3_000_000_000)
    seen = []
    real = onnxsim.simplify

    def spy(m, **kw):
        seen.append(m)
        return real(m, **kw)

    monkeypatch.setattr(onnxsim, "simplify", spy)
    model = _weighted_model(bn=False)
    w = model.graph.initializers["w"].const_value
    x = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    ref = _run(model, x)
    p = SimplifyPass({"x": (1, 32, 8, 8)})
    assert p(model).modified
    assert p.report["status"] == "simplified" and p.report["weights"] == "declared", p.report
    assert p.report["structure_changed"] and p.report["nodes_after"] == 2  # the Identity went
    (proto,) = seen
    assert [t.name for t in proto.graph.initializer] == []
    assert "w" in [i.name for i in proto.graph.input]
    assert model.graph.initializers["w"].const_value is w
    assert [v.name for v in model.graph.inputs] == ["x"]
    np.testing.assert_allclose(_run(model, x)[0], ref[0], rtol=1e-5, atol=1e-6)


def test_carried_when_a_fusion_needs_the_values():
    model = _weighted_model(bn=True)
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    ref = _run(model, x)
    p = SimplifyPass({"x": (1, 32, 8, 8)})
    assert p(model).modified
    assert p.report["weights"] == "carried" and "BatchNormalization" in p.report["weights_carried_because"]
    assert [n.op_type for n in model.graph] == ["Conv", "Relu"]  # BN fused into the conv by onnxsim
    np.testing.assert_allclose(_run(model, x)[0], ref[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["paddle_style_mbv3.onnx", "zoo_opset9_resnet.onnx", "weightnorm_nofold.onnx", "dynamo_ext.onnx"]
)
def test_model_files_keep_their_dims(name):
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnxcompress.analysis.shapes import graph_inputs, resolve_input_shapes

    model = ir.load(path)
    shapes = resolve_input_shapes(model, {"x": (1, 3, 64, 64)} if name.startswith("paddle") else None)
    dims_in = _dims(graph_inputs(model))
    dims_out = _dims(model.graph.outputs)
    p = SimplifyPass(shapes)
    p(model)
    assert p.report["status"] == "simplified", p.report
    assert _dims(graph_inputs(model)) == dims_in
    assert _dims(model.graph.outputs) == dims_out


def _fresh_python(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter (nothing imported yet)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")


def test_onnxsim_loads_without_importing_torch():
    """onnxsim's package imports torch when installed (seconds per run); the pass loads it without."""
    out = _fresh_python(
        "import sys, importlib.util\n"
        "from onnxcompress.passes.simplify import load_onnxsim\n"
        "m = load_onnxsim()\n"
        "print(callable(m.simplify), 'torch' in sys.modules, sys.modules.get('torch', 0) is None)\n"
        "if importlib.util.find_spec('torch') is not None:\n"
        "    import torch\n"
        "    print('torch', torch.zeros(2).shape[0])\n"
        "else:\n"
        "    print('torch', 2)\n"
    )
    assert out[0] == "True False False"
    assert out[1] == "torch 2"


def test_onnxsim_loads_its_simplifier_without_the_package_init():
    """The package's ``__init__`` imports every onnxsim tool; the pass loads only ``onnx_simplifier``,
    and a later ``import onnxsim`` is still the whole package, with the same ``simplify``."""
    out = _fresh_python(
        "import sys\n"
        "from onnxcompress.passes.simplify import load_onnxsim\n"
        "m = load_onnxsim()\n"
        "print(m.__name__, 'onnxsim' in sys.modules, 'onnxsim.accuracy' in sys.modules)\n"
        "import onnxsim\n"
        "print(onnxsim.simplify is m.simplify, hasattr(onnxsim, 'quantize'), load_onnxsim() is onnxsim)\n"
    )
    assert out[0] == "onnxsim.onnx_simplifier False False"
    assert out[1] == "True True True"


def _mul_before_conv(gelu: bool) -> onnx.ModelProto:
    """Conv -> [exported GELU: x * (1 + erf(x / sqrt 2)) * 0.5 | Relu * 0.5] -> Conv."""
    const = lambda name, v: nh.from_array(np.array(v, np.float32), name)  # noqa: E731
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])]
    if gelu:
        nodes += [h.make_node("Div", ["c1", "sqrt2"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
                  h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", ["c1", "a"], ["m"])]
    else:
        nodes += [h.make_node("Relu", ["c1"], ["m"])]
    nodes += [h.make_node("Mul", ["m", "half"], ["g"]), h.make_node("Conv", ["g", "w2", "b2"], ["y"])]
    inits = [nh.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w1"),
             nh.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
             nh.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32), "w2"),
             nh.from_array(rng.standard_normal(8).astype(np.float32), "b2"),
             const("sqrt2", 1.4142135), const("one", 1.0), const("half", 0.5)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", F, ["N", 8, 16, 16])],
                     [h.make_tensor_value_info("y", F, ["N", 8, 16, 16])], initializer=inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def test_an_exported_gelu_keeps_its_final_mul_so_onnxruntime_fuses_it(tmp_path):
    """onnxsim's fuse_preceding_mul_into_conv would fold GELU's * 0.5 into the next Conv and leave
    onnxruntime four kernels instead of its fused Gelu; it is skipped where the graph has an Erf, and
    still folds a constant Mul into the next Conv elsewhere."""
    x = rng.standard_normal((2, 8, 16, 16)).astype(np.float32)
    for gelu in (True, False):
        model = ir.serde.deserialize_model(_mul_before_conv(gelu))
        want = _run(model, x)
        simplify = SimplifyPass()
        simplify(model)
        assert simplify.report["status"] == "simplified"
        assert simplify.report["rewrites_skipped"] == (["fuse_preceding_mul_into_conv"] if gelu else [])
        muls = [n for n in model.graph if n.op_type == "Mul"]
        assert len(muls) == (2 if gelu else 0)  # the Relu's * 0.5 went into the second Conv's weights
        np.testing.assert_allclose(_run(model, x)[0], want[0], rtol=1e-4, atol=1e-4)
        if gelu:  # and onnxruntime's own optimizer turns the pattern into one Gelu
            opts = ort.SessionOptions()
            opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
            ort.InferenceSession(ir.to_proto(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
            assert "Gelu" in {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
